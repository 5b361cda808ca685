"""The HTTP surface: OIP v2 REST and MLflow scoring payloads over a `Backend` (FastAPI).

The app decides nothing about traffic: it parses and validates (serving.protocol), asks the
backend to answer, and turns every refusal into a 4xx `{"error": ...}`. The backend is the
gateway (Ray Serve handles to version deployments) in production and an in-process model in the
serving benchmark's single-process baseline.
"""

from __future__ import annotations

import json
import logging
import re
import time
import itertools
import os
from dataclasses import dataclass
from collections.abc import Mapping
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


def check_declared_length(headers: Mapping[str, str], max_bytes: int) -> None:
    """413 before reading when the declared body is over the limit."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(f"the body is {declared} bytes; the limit is {max_bytes}", status=413)


def add_chunk(chunks: list[bytes], size: int, chunk: bytes, max_bytes: int) -> int:
    """Collect one body chunk, refusing a body that grows over the limit (413)."""
    size += len(chunk)
    if size > max_bytes:
        raise BadRequest(f"the body exceeds the limit of {max_bytes} bytes", status=413)
    chunks.append(chunk)
    return size


def decode_json(raw: bytes):
    """The decoded body, refusing an empty body or malformed JSON (400)."""
    if not raw:
        raise BadRequest("the body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


async def read_json(request: Request, max_bytes: int):
    """The decoded body of a FastAPI request, with the same limits as the direct route."""
    check_declared_length(request.headers, max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size = add_chunk(chunks, size, chunk, max_bytes)
    return decode_json(b"".join(chunks))


def authorised(headers: Mapping[str, str], api_keys: frozenset[str]) -> bool:
    """Inference needs `Authorization: Bearer KEY` or `x-api-key: KEY` when keys are configured."""
    if not api_keys:
        return True
    key = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key in api_keys


async def infer(backend: Backend, api_keys: frozenset[str], name: str, headers: Mapping[str, str], body,
                version: int | None, mlflow_format: bool) -> Response:
    """One inference request, whichever front received it: `body` is the decoded JSON, or the
    BadRequest that reading it raised. Every refusal is a 4xx `{"error": ...}`; a failing version
    is a 503."""
    start = time.perf_counter()
    if not authorised(headers, api_keys):
        return error("missing or invalid API key (send Authorization: Bearer KEY or x-api-key)", 401)
    try:
        sig = backend.signature(name)
        if isinstance(body, BadRequest):
            raise body
        if mlflow_format:
            x, request_id = parse_invocations(body, sig), None
        else:
            x, request_id = parse_infer(body, sig)
        request_id = request_id or headers.get("x-request-id") or next_request_id()
        answer = await backend.answer(name, x, request_id, headers.get("x-routing-key"), version)
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
        try:
            body = await read_json(request, max_body_bytes)
        except BadRequest as exc:
            body = exc
        return await infer(backend, api_keys, name, request.headers, body, version, mlflow_format)

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


DRAIN_BYTES = 64 * 1024 * 1024  # an oversized body beyond this is not read: the connection is closed
_INFER_PATH = re.compile(r"^/v2/models/([^/]+)/(infer|invocations|versions/([^/]+)/infer)$")


def match_inference(method: str, path: str) -> tuple[str, str | None, bool] | None:
    """(model, version text or None, MLflow payload?) for an inference route, else None."""
    if method != "POST":
        return None
    m = _INFER_PATH.match(path)
    if m is None:
        return None
    return m.group(1), m.group(3), m.group(2) == "invocations"


def build_asgi(backend: Backend, max_body_bytes: int, api_keys: frozenset[str] = frozenset()):
    """The served ASGI app: the inference routes answered here directly, everything else (health,
    metadata, OpenAPI, /docs, 404/405) by the FastAPI app, whose routes document the same API.

    Why by hand: FastAPI's middleware stack, routing and request objects were ~40% of the gateway's
    CPU per inference request (py-spy, README); this front parses the path and reads the body
    itself and shares the request handling (`infer`) with the FastAPI routes."""
    app = build_app(backend, max_body_bytes, api_keys)

    async def front(scope, receive, send):
        route = match_inference(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            await app(scope, receive, send)
            return
        name, version_text, mlflow_format = route
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if version_text is not None and not version_text.isdigit():
            response = error(f"version {version_text!r} is not a version number", 400)
        else:
            body = await _read_body(receive, headers, max_body_bytes)
            if body is None:
                return  # the client went away
            response = await infer(backend, api_keys, name, headers, body, None if version_text is None
                                   else int(version_text), mlflow_format)
        await response(scope, receive, send)

    front.fastapi = app
    return front


async def _read_body(receive, headers: Mapping[str, str], max_bytes: int):
    """The decoded JSON body, the BadRequest that refuses it, or None if the client disconnected.
    An oversized body is read and dropped (up to DRAIN_BYTES) before the 413 goes out: answering
    while the client is still sending makes the client see a connection reset, not the 413."""
    refused: BadRequest | None = None
    try:
        check_declared_length(headers, max_bytes)
    except BadRequest as exc:
        refused = exc
    chunks: list[bytes] = []
    size = drained = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if refused is None:
            try:
                size = add_chunk(chunks, size, chunk, max_bytes)
            except BadRequest as exc:
                refused, chunks = exc, []
        else:
            drained += len(chunk)
        if not message.get("more_body", False) or drained > DRAIN_BYTES:
            break
    if refused is not None:
        return refused
    try:
        return decode_json(b"".join(chunks))
    except BadRequest as exc:
        return exc
