"""The HTTP surface: OIP v2 REST and MLflow scoring payloads over a `Backend` (FastAPI).

The app decides nothing about traffic: it parses and validates (serving.protocol), asks the
backend to answer, and turns every refusal into a 4xx `{"error": ...}`. The backend is the
gateway (Ray Serve handles to version deployments) in production and an in-process model in the
serving benchmark's single-process baseline.
"""

from __future__ import annotations

import json
import logging
import time
import itertools
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from serving.protocol import BadRequest, ModelSignature, infer_response, invocations_response, parse_infer, \
    parse_invocations

log = logging.getLogger(__name__)


@dataclass
class Answer:
    version: int
    proba: np.ndarray


class Backend(Protocol):
    def signature(self, model: str) -> ModelSignature: ...          # BadRequest(404) if unknown
    def versions(self, model: str) -> list[int]: ...
    def ready(self, model: str | None = None) -> bool: ...
    async def answer(self, model: str, x: np.ndarray, request_id: str, routing_key: str | None,
                     version: int | None) -> Answer: ...             # BadRequest(404) for a version


_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count()


def next_request_id() -> str:
    """A unique request id: a random per-process prefix and a counter (uuid4 per request was 6%
    of the gateway's CPU under load)."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


def _json(payload: dict, status: int = 200, version: int | None = None) -> Response:
    headers = {"x-model-version": str(version)} if version is not None else None
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=headers)


def error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


async def read_json(request: Request, max_bytes: int):
    """The decoded body, refusing bodies over `max_bytes` (413) and malformed JSON (400)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(f"the body is {declared} bytes; the limit is {max_bytes}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(f"the body exceeds the limit of {max_bytes} bytes", status=413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise BadRequest("the body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


_INFER_BODY = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype", "data"],
                                              "properties": {"name": {"type": "string"},
                                                             "shape": {"type": "array", "items": {"type": "integer"}},
                                                             "datatype": {"type": "string", "example": "FP32"},
                                                             "data": {"type": "array"}}}}}}}}}
_INVOCATIONS_BODY = {"content": {"application/json": {"schema": {
    "type": "object", "description": "exactly one of dataframe_split, dataframe_records, instances, inputs",
    "properties": {k: {} for k in ("dataframe_split", "dataframe_records", "instances", "inputs")}}}}}


def build_app(backend: Backend, max_body_bytes: int, api_keys: frozenset[str] = frozenset()) -> FastAPI:
    """The FastAPI app; `api_keys` non-empty makes inference need `Authorization: Bearer KEY`
    or `x-api-key: KEY` (401 otherwise). Health and metadata stay open for probes."""
    app = FastAPI(title="Handoff inference", version="2",
                  description="Open Inference Protocol v2 REST plus MLflow scoring payloads. "
                              "Every answer names the version that produced it (x-model-version); "
                              "the x-routing-key header makes routing sticky.")

    def authorised(request: Request) -> bool:
        if not api_keys:
            return True
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        return key in api_keys

    @app.get("/v2/health/live", summary="The server process is up")
    async def live():
        return _json({"live": True})

    @app.get("/v2/health/ready", summary="Every served model can answer")
    async def ready():
        ok = backend.ready()
        return _json({"ready": ok}, 200 if ok else 503)

    @app.get("/v2/models/{name}", summary="Model metadata: inputs, outputs, versions")
    async def metadata(name: str):
        try:
            return _json(backend.signature(name).metadata(backend.versions(name)))
        except BadRequest as exc:
            return error(str(exc), exc.status)

    @app.get("/v2/models/{name}/ready", summary="The model's live versions can answer")
    async def model_ready(name: str):
        try:
            backend.signature(name)
        except BadRequest as exc:
            return error(str(exc), exc.status)
        ok = backend.ready(name)
        return _json({"name": name, "ready": ok}, 200 if ok else 503)

    async def _infer(name: str, request: Request, version: int | None, mlflow_format: bool) -> Response:
        start = time.perf_counter()
        if not authorised(request):
            return error("missing or invalid API key (send Authorization: Bearer KEY or x-api-key)", 401)
        try:
            sig = backend.signature(name)
            body = await read_json(request, max_body_bytes)
            if mlflow_format:
                x, request_id = parse_invocations(body, sig), None
            else:
                x, request_id = parse_infer(body, sig)
            request_id = request_id or request.headers.get("x-request-id") or next_request_id()
            answer = await backend.answer(name, x, request_id, request.headers.get("x-routing-key"), version)
        except BadRequest as exc:
            return error(str(exc), exc.status)
        except Exception as exc:  # noqa: BLE001 - a failing version is the server's fault, never a 500 page
            log.exception("model %s: answering request failed", name)
            return error(f"model {name!r} could not answer: {type(exc).__name__}: {exc}", 503)
        payload = invocations_response(answer.proba) if mlflow_format else \
            infer_response(name, answer.version, request_id, answer.proba)
        response = _json(payload, version=answer.version)
        response.headers["x-request-id"] = request_id
        response.headers["x-latency-ms"] = f"{(time.perf_counter() - start) * 1000:.2f}"
        return response

    @app.post("/v2/models/{name}/infer", summary="Predict; the traffic policy picks the version",
              openapi_extra={"requestBody": _INFER_BODY})
    async def infer(name: str, request: Request):
        return await _infer(name, request, None, False)

    @app.post("/v2/models/{name}/versions/{version}/infer", summary="Predict with one version",
              openapi_extra={"requestBody": _INFER_BODY})
    async def infer_version(name: str, version: str, request: Request):
        if not version.isdigit():
            return error(f"version {version!r} is not a version number", 400)
        return await _infer(name, request, int(version), False)

    @app.post("/v2/models/{name}/invocations", summary="Predict from an MLflow scoring payload",
              openapi_extra={"requestBody": _INVOCATIONS_BODY})
    async def invocations(name: str, request: Request):
        return await _infer(name, request, None, True)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return error(f"no route {request.method} {request.url.path}; see /docs for the API", 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        return error(f"method {request.method} is not allowed on {request.url.path}", 405)

    return app
