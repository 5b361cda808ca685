"""The HTTP surface: OIP v2 REST and MLflow scoring payloads over a `Backend`.

The app decides nothing about traffic: it parses and validates (serving.protocol), asks the
backend to answer, and turns every refusal into a 4xx `{"error": ...}`. One body reader
(`read_body`) and one inference handler (`infer`) serve every inference route, whether the thin
ASGI front (what runs) or the FastAPI app (which documents the API in OpenAPI and /docs) received
it. The backend is the gateway's router in production and an in-process model in the serving
benchmark's single-process baseline and the unit tests.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import itertools
import os
import zlib
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from serving.binary import HEADER_LENGTH, attach_binary_inputs, split_body
from serving.config import KEY_DIGEST, key_digest
from serving.protocol import (NUMERIC_DATATYPES, REQUEST_ID_PATTERN, ROW_ID_PATTERN, BadRequest, ModelSignature,
                              check_request_id, check_routing_key, infer_response, invocations_response, parse_infer,
                              parse_invocations, requested_outputs)

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """What a version answered: probabilities, and the class of each row (its index and its name),
    taken once (by the router) and used by the HTTP answer and the live log alike."""

    version: int
    proba: np.ndarray
    prediction: np.ndarray
    label: np.ndarray


class Backend(Protocol):
    def signature(self, model: str) -> ModelSignature: ...          # BadRequest(404) if unknown
    def versions(self, model: str) -> list[int]: ...
    def ready(self, model: str | None = None) -> bool: ...
    async def answer(self, model: str, x: np.ndarray, request_id: str, routing_key: str | None,
                     version: int | None) -> Answer: ...             # BadRequest(404) for a version
    async def feedback(self, model: str, payload) -> dict: ...      # BadRequest(422) naming bad labels


_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count()


def next_request_id() -> str:
    """A unique request id: a random per-process prefix and a counter (uuid4 per request was 6%
    of the gateway's CPU under load)."""
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


class Reply(Response):
    """An answer whose headers are built once, as bytes (Starlette's `Response.__init__` and its
    `MutableHeaders` built and edited them per request: ~3% of the gateway's CPU per request). It is a
    Starlette `Response`, so FastAPI's routes return it as they are and `headers` still edits it."""

    def __init__(self, body: bytes, status: int = 200, media_type: bytes = b"application/json",
                 headers: list[tuple[bytes, bytes]] | None = None):
        self.status_code, self.body, self.background = status, body, None
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", media_type), *(headers or ())]


_JSON, _OCTETS = b"application/json", b"application/octet-stream"


def _json(payload: dict, status: int = 200, version: int | None = None) -> Reply:
    headers = [(b"x-model-version", b"%d" % version)] if version is not None else None
    return Reply(json.dumps(payload, separators=(",", ":")).encode(), status, _JSON, headers)


def _answer(payload: dict, blobs: list[bytes], version: int, request_id: str, start: float) -> Reply:
    """An inference answer: the JSON, or with binary outputs the JSON then the outputs' bytes (the
    Inference-Header-Content-Length header says where the JSON ends); the version, the request id and
    the gateway's latency as headers."""
    head = json.dumps(payload, separators=(",", ":")).encode()
    headers = [(b"x-model-version", b"%d" % version), (b"x-request-id", request_id.encode("latin-1"))]
    if blobs:
        headers.append((b"Inference-Header-Content-Length", b"%d" % len(head)))  # as Triton spells it
    headers.append((b"x-latency-ms", b"%.2f" % ((time.perf_counter() - start) * 1000)))
    return Reply(head + b"".join(blobs) if blobs else head, 200, _OCTETS if blobs else _JSON, headers)


def error(message: str, status: int, headers: Mapping[str, str] | None = None) -> Response:
    response = _json({"error": message}, status)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def failed(message: str, logged: str) -> Response:
    """503 for what failed on the server's side: the body says what failed and an error id, never the
    exception's text (a path, a host, a replica's message); the log has the traceback under that id."""
    error_id = os.urandom(4).hex()
    log.exception("%s (error id %s)", logged, error_id)
    return error(f"{message} (error id {error_id}; the gateway's log has the details)", 503)


def check_declared_length(headers: Mapping[str, str], max_bytes: int) -> None:
    """413 before reading when the declared body is over the limit."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(f"the body is {declared} bytes; the limit is {max_bytes}", status=413)


#: the content codings a request body may come in (tritonclient's `request_compression_algorithm`), and
#: zlib's window bits that read each: gzip; deflate is zlib's format (RFC 9110), raw deflate also taken
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, coding: str | None, max_bytes: int) -> bytes:
    """The body as it was before its Content-Encoding (gzip or deflate), at most `max_bytes` once
    decompressed (413: a small body can inflate a thousandfold); another coding is a 415 naming it,
    data that is not of its coding a 400."""
    coding = (coding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in _CODINGS:
        raise BadRequest(f"Content-Encoding {coding[:40]!r} is not supported; send the body as is, gzip or deflate",
                         status=415)
    for wbits in (_CODINGS[coding], -zlib.MAX_WBITS) if coding == "deflate" else (_CODINGS[coding],):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, max_bytes + 1)
        except zlib.error as exc:
            error = exc
            continue
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise BadRequest(f"the body exceeds the limit of {max_bytes} bytes once decompressed ({coding})", status=413)
        if not inflater.eof or inflater.unused_data:
            raise BadRequest(f"the body is not one complete {coding} stream (truncated, or data after its end)")
        return out
    raise BadRequest(f"the body is not {coding} data as its Content-Encoding says: {str(error)[:100]}")


def add_chunk(chunks: list[bytes], size: int, chunk: bytes, max_bytes: int) -> int:
    """Collect one body chunk, refusing a body that grows over the limit (413)."""
    size += len(chunk)
    if size > max_bytes:
        raise BadRequest(f"the body exceeds the limit of {max_bytes} bytes", status=413)
    chunks.append(chunk)
    return size


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's members, refusing a key given twice (which one a parser keeps differs between
    parsers: a proxy and the gateway could read two different requests)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen, twice = set(), []
        for key, _ in pairs:
            (twice.append(key) if key in seen else seen.add(key))
        raise BadRequest(f"malformed JSON: key {twice[0][:50]!r} appears more than once in one object")
    return out


#: a `\\u` escape of a UTF-16 surrogate: only a pair of them is a character
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_json(raw: bytes):
    """The decoded body, refusing an empty body, malformed JSON, a key repeated in an object, nesting
    deeper than Python's parser goes, integers longer than it converts, and text holding half a
    surrogate pair (`"\\ud800"`: Python's parser takes it, but it is no Unicode text, and no file, Parquet
    included, can store it) (400)."""
    if not raw:
        raise BadRequest("the body is empty; send a JSON object")
    try:
        decoded = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError; an integer over 4,300 digits
        raise BadRequest(f"malformed JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then is the decoded text checked
        try:
            json.dumps(decoded, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("malformed JSON: a \\u escape is half of a UTF-16 surrogate pair, which is not "
                             "Unicode text") from None
    return decoded


def authorised(headers: Mapping[str, str], api_keys: frozenset[str]) -> bool:
    """Inference needs `Authorization: Bearer KEY` or `x-api-key: KEY` when keys are configured."""
    if not api_keys:
        return True
    key = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    if not key or key.startswith(KEY_DIGEST):  # a digest is what the cluster holds, never what a client sends
        return False
    sent = key_digest(key).encode()
    matched = False
    for known in api_keys:  # every digest compared, each in constant time: no timing says how much matched
        matched |= hmac.compare_digest(sent, key_digest(known).encode())
    return matched


def media_type(headers: Mapping[str, str]) -> str:
    """The request's Content-Type without its parameters, in lower case ("" when none is sent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _parse(body: bytes, headers: Mapping[str, str], sig, mlflow_format: bool):
    """(feature matrix, request id or None, outputs asked for) of one request's body."""
    header_length = headers.get(HEADER_LENGTH)
    if mlflow_format:
        if header_length is not None:
            raise BadRequest("binary tensor data is an Open Inference Protocol extension: send it to "
                             "/infer; /invocations takes MLflow's JSON payloads")
        if media_type(headers) == "text/csv":  # MLflow's scoring server takes CSV too
            from serving.csv_in import parse_csv

            return parse_csv(body, sig), None, None
        return parse_invocations(decode_json(body), sig), None, None
    json_part, tail = split_body(body, header_length)
    decoded = decode_json(json_part)
    attach_binary_inputs(decoded, tail)
    x, request_id = parse_infer(decoded, sig)
    return x, request_id, requested_outputs(decoded, sig.outputs)


async def infer(backend: Backend, api_keys: frozenset[str], name: str, headers: Mapping[str, str],
                body: bytes | BadRequest, version: int | None, mlflow_format: bool) -> Response:
    """The one inference handler, whichever route received the request: `body` is the raw body, or
    the BadRequest that reading it raised. Every refusal is a 4xx `{"error": ...}`; a failing version
    is a 503."""
    start = time.perf_counter()
    if not authorised(headers, api_keys):
        return error("missing or invalid API key (send Authorization: Bearer KEY or x-api-key)", 401)
    try:
        sig = backend.signature(name)
        if isinstance(body, BadRequest):
            raise body
        try:
            x, request_id, outputs = _parse(body, headers, sig, mlflow_format)
        except BadRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - the client's input, whatever a parser tripped on: a 400
            log.warning("model %s: a request's body tripped the parser: %r", name, exc)
            raise BadRequest(f"malformed request: {type(exc).__name__}: {exc}") from None
        request_id = request_id or check_request_id(headers.get("x-request-id"), "header x-request-id") or \
            next_request_id()
        routing_key = check_routing_key(headers.get("x-routing-key"), "header x-routing-key")  # logged: same bound
        answer = await backend.answer(name, x, request_id, routing_key, version)
    except BadRequest as exc:
        return error(str(exc), exc.status, exc.headers)
    except Exception:  # noqa: BLE001 - a failing version is the server's fault, never a 500 page
        return failed(f"model {name!r} could not answer", f"model {name}: answering a request failed")
    if mlflow_format:
        return _answer(invocations_response(sig, answer.proba, answer.prediction, answer.label), [], answer.version,
                       request_id, start)
    payload, blobs = infer_response(name, answer.version, request_id, sig, answer.proba, answer.prediction,
                                    answer.label, outputs)
    return _answer(payload, blobs, answer.version, request_id, start)


class ErrorBody(BaseModel):
    """Every refusal: a 4xx (or a 503 for a version that failed) with one message naming the problem."""

    error: str = Field(examples=["input 'features': shape [1, 3] does not match [rows, 9]"])


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list


class InferResponse(BaseModel):
    """OIP v2 answer: `prediction` (class index per row), `probability` (rows × classes) and `label`;
    for a regression model `prediction` alone (the predicted value, FP32 [rows, 1])."""

    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]


_BINARY_NOTE = ("OIP v2 JSON, or the binary tensor data extension (tritonclient's default): the JSON header, "
                "its length in the Inference-Header-Content-Length header, then each binary input's bytes "
                "(parameters.binary_data_size); parameters.binary_data_output (or outputs[i].parameters."
                "binary_data) asks for outputs as bytes after the answer's JSON header")
# the binary extension's body (a JSON header, then raw bytes, split where a request header says) has no
# OpenAPI form: it is described, not declared, so that a schema-driven client never sends bytes without it
_INFER_BODY = {"description": _BINARY_NOTE, "required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string", "pattern": REQUEST_ID_PATTERN,
               "description": "the request's id (echoed as x-request-id; labels join on it)"},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {"name": {"type": "string"},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                           "datatype": {"type": "string", "enum": sorted(NUMERIC_DATATYPES)},
                           "data": {"type": "array"}}}}}},
    "example": {"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32",
                            "data": [50, 0, 80, 0, 20, 0, 30, 60, 30]}]}}}}
_INVOCATIONS_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "exactly one of the four MLflow scoring payloads",
    "oneOf": [
        {"required": ["dataframe_split"], "properties": {"dataframe_split": {
            "type": "object", "required": ["columns", "data"],
            "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                           "data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}}},
        {"required": ["dataframe_records"], "properties": {"dataframe_records": {
            "type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}}}},
        {"required": ["instances"], "properties": {"instances": {
            "description": "rows (lists in feature order, or objects by feature name) or {feature: [values]}"}}},
        {"required": ["inputs"], "properties": {"inputs": {
            "description": "rows (lists in feature order, or objects by feature name) or {feature: [values]}"}}},
    ]},
    "example": {"dataframe_split": {"columns": ["f1", "f2"], "data": [[1.0, 2.0]]}}},
    "text/csv": {"schema": {"type": "string", "description": "a header line naming the columns, then one line per "
                            "row; each cell read as its column holds it, an empty cell missing"},
                 "example": "f1,f2\n1.0,2.0\n"}}}
_FEEDBACK_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["labels"], "properties": {"labels": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["request_id", "label"],
        "properties": {"request_id": {"type": "string", "pattern": ROW_ID_PATTERN,
                                      "description": "a live-log row id: the request's id "
                                      "(x-request-id) for its first row, ID#1, ID#2, ... for the others"},
                       "label": {"description": "the true class, as the model names its classes"}}}}}},
    "example": {"labels": [{"request_id": "3f2a-17", "label": 1}]}}}}
_INVOCATIONS_ANSWER = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"predictions": {"type": "array", "items": {
        "type": "object", "description": "prediction (class index) and probability_K for each class K"}}}}}}}


def _refusals(*statuses: int) -> dict:
    """OpenAPI entries for the error answers a route can give, all with the `ErrorBody` schema."""
    meaning = {400: "malformed request: bad JSON, shape, datatype, version text, empty batch",
               401: "missing or invalid API key (only when gateway.api_keys is set)",
               404: "unknown model, or a version of it that is not served",
               405: "method not allowed on this path (the Allow header lists the allowed ones)",
               413: "body over gateway.max_body_bytes (once decompressed, for a gzip or deflate body)",
               415: "a Content-Encoding other than gzip, deflate or identity",
               422: "missing or unknown features, NaN or infinite values; feedback: bad ids or labels, named",
               503: "the model (or the gateway) cannot answer now; a failing version is a 503, never a 500"}
    return {status: {"model": ErrorBody, "description": meaning[status]} for status in statuses}


_INFERENCE_REFUSALS = _refusals(400, 401, 404, 405, 413, 415, 422, 503)
VERSION_ROUTE = "/v2/models/{name}/versions/{version}/infer"
VERSION_SCHEMA = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}  # what `_VERSION` takes (a 0 is no version)


def build_app(backend: Backend, max_body_bytes: int, api_keys: frozenset[str] = frozenset()) -> FastAPI:
    """The FastAPI app: health, metadata, OpenAPI and /docs, and the inference routes (answered by
    the same reader and handler as the direct front, so both answer alike). `api_keys` non-empty
    makes inference need `Authorization: Bearer KEY` or `x-api-key: KEY` (401 otherwise). Health
    and metadata stay open for probes."""
    app = FastAPI(title="Handoff inference", version="2",
                  description="Open Inference Protocol v2 REST plus MLflow scoring payloads. "
                              "Every answer names the version that produced it (x-model-version) and the "
                              "request (x-request-id); the x-routing-key header makes routing sticky.")

    @app.get("/v2/health/live", summary="The server process is up")
    async def live():
        return _json({"live": True})

    @app.get("/v2/health/ready", summary="Every served model can answer",
             responses={503: {"description": "not ready: no model, or the routing table has not arrived"}})
    async def ready():
        ok = backend.ready()
        return _json({"ready": ok}, 200 if ok else 503)

    @app.get("/v2/models/{name}", summary="Model metadata: inputs, outputs, versions", responses=_refusals(404))
    async def metadata(name: str):
        try:
            return _json(backend.signature(name).metadata(backend.versions(name)))
        except BadRequest as exc:
            return error(str(exc), exc.status, exc.headers)

    @app.get("/v2/models/{name}/ready", summary="The model's live versions can answer",
             responses=_refusals(404, 503))
    async def model_ready(name: str):
        try:
            backend.signature(name)
        except BadRequest as exc:
            return error(str(exc), exc.status, exc.headers)
        ok = backend.ready(name)
        return _json({"name": name, "ready": ok}, 200 if ok else 503)

    async def route(request: Request, name: str, version: str | None, mlflow_format: bool) -> Response:
        response = await answer_inference(backend, max_body_bytes, api_keys, name, version, mlflow_format,
                                          request.headers, request.receive)
        return response if response is not None else Response(status_code=400)  # the client went away

    @app.post("/v2/models/{name}/infer", summary="Predict; the traffic policy picks the version",
              response_model=InferResponse, responses=_INFERENCE_REFUSALS,
              openapi_extra={"requestBody": _INFER_BODY})
    async def infer_route(name: str, request: Request):
        return await route(request, name, None, False)

    @app.post(VERSION_ROUTE, summary="Predict with one version",
              response_model=InferResponse, responses=_INFERENCE_REFUSALS,
              openapi_extra={"requestBody": _INFER_BODY})
    async def infer_version_route(name: str, version: str, request: Request):
        return await route(request, name, version, False)

    @app.post("/v2/models/{name}/invocations", summary="Predict from an MLflow scoring payload",
              responses={200: _INVOCATIONS_ANSWER, **_INFERENCE_REFUSALS},
              openapi_extra={"requestBody": _INVOCATIONS_BODY})
    async def invocations_route(name: str, request: Request):
        return await route(request, name, None, True)

    @app.post("/v2/models/{name}/feedback", summary="Send the true labels of answered rows",
              description="Labels are written beside the live log before the answer; the model's monitor "
                          "joins them to the rows and publishes live accuracy and log loss per version. "
                          "Sending an id again is idempotent (one label per id, the latest).",
              responses=_refusals(400, 401, 404, 405, 413, 415, 422, 503), openapi_extra={"requestBody": _FEEDBACK_BODY})
    async def feedback_route(name: str, request: Request):
        if not authorised(request.headers, api_keys):
            return error("missing or invalid API key (send Authorization: Bearer KEY or x-api-key)", 401)
        body = await read_body(request.receive, request.headers, max_body_bytes)
        if body is None:
            return Response(status_code=400)  # the client went away
        try:
            if isinstance(body, BadRequest):
                raise body
            backend.signature(name)
            return _json(await backend.feedback(name, decode_json(body)))
        except BadRequest as exc:
            return error(str(exc), exc.status, exc.headers)
        except Exception:  # noqa: BLE001 - the label store failed (a full disk, S3 down): nothing was kept
            return failed(f"labels for {name!r} could not be stored; nothing of this batch was kept, send it again",
                          f"model {name}: storing labels failed")

    def openapi() -> dict:
        """FastAPI's schema, with the version path parameter typed as the server parses it: the route
        takes it as text so that `answer_inference` refuses what is not a number with our own 400 (as
        the direct front does), not FastAPI's 422."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for param in schema["paths"][VERSION_ROUTE]["post"]["parameters"]:
                if param["name"] == "version":
                    param.update(description="a served version number", schema=dict(VERSION_SCHEMA))
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return error(f"no route {request.method} {request.url.path}; see /docs for the API", 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        response = error(f"method {request.method} is not allowed on {request.url.path}", 405)
        allow = (getattr(exc, "headers", None) or {}).get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response

    return app


DRAIN_BYTES = 64 * 1024 * 1024  # an oversized body beyond this is not read: the connection is closed
_INFER_PATH = re.compile(r"^/v2/models/([^/]+)/(infer|invocations|versions/([^/]+)/infer)$")
_VERSION = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def match_inference(method: str, path: str) -> tuple[str, str | None, bool] | None:
    """(model, version text or None, MLflow payload?) for an inference route, else None."""
    if method != "POST":
        return None
    m = _INFER_PATH.match(path)
    if m is None:
        return None
    return m.group(1), m.group(3), m.group(2) == "invocations"


async def answer_inference(backend: Backend, max_body_bytes: int, api_keys: frozenset[str], name: str,
                           version_text: str | None, mlflow_format: bool, headers: Mapping[str, str],
                           receive) -> Response | None:
    """One inference request from its route's parts: the version checked, the body read (`read_body`),
    then `infer`. None when the client went away before sending its body."""
    if version_text is not None and not _VERSION.fullmatch(version_text):
        return error(f"version {version_text[:40]!r} is not a version number", 400)
    body = await read_body(receive, headers, max_body_bytes)
    if body is None:
        return None
    return await infer(backend, api_keys, name, headers, body, None if version_text is None else int(version_text),
                       mlflow_format)


def _headers_only(send):
    """`send` for a HEAD request answered as its GET: the status and headers (Content-Length as the
    GET's), never the body (HTTP: a HEAD answer has none; FastAPI's GET routes do not take HEAD)."""

    async def without_body(message):
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return without_body


def build_asgi(backend: Backend, max_body_bytes: int, api_keys: frozenset[str] = frozenset()):
    """The served ASGI app: the inference routes answered here directly, everything else (health,
    metadata, OpenAPI, /docs, 404/405) by the FastAPI app, whose routes document the same API and
    answer through the same reader and handler.

    Why by hand: FastAPI's middleware stack, routing and request objects were ~40% of the gateway's
    CPU per inference request (py-spy, docs/benchmarks.md); this front parses the path and hands the request to
    the same `answer_inference` the FastAPI routes use."""
    app = build_app(backend, max_body_bytes, api_keys)

    async def front(scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "HEAD":  # a probe's HEAD: the GET's answer, no body
            scope, send = {**scope, "method": "GET"}, _headers_only(send)
        route = match_inference(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            await app(scope, receive, send)
            return
        name, version_text, mlflow_format = route
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}  # ASGI: names in lower case
        response = await answer_inference(backend, max_body_bytes, api_keys, name, version_text, mlflow_format,
                                          headers, receive)
        if response is not None:
            await response(scope, receive, send)

    front.fastapi = app
    return front


async def read_body(receive, headers: Mapping[str, str], max_bytes: int) -> bytes | BadRequest | None:
    """The one body reader: the body (decompressed if its Content-Encoding is gzip or deflate), the
    BadRequest that refuses it (413, 415, 400), or None if the client disconnected. An oversized body is read and dropped (up to DRAIN_BYTES) before the 413 goes out:
    answering while the client is still sending makes the client see a connection reset, not the 413."""
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
    body = b"".join(chunks)
    coding = headers.get("content-encoding")
    if coding is None:
        return body
    try:
        return decode_content(body, coding, max_bytes)
    except BadRequest as exc:
        return exc
