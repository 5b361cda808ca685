"""The gRPC surface: OIP v2's `inference.GRPCInferenceService` over the same `Backend` as HTTP.

Like the HTTP app it decides nothing about traffic: it checks the key, turns the request into the
HTTP path's body (serving/oip_grpc_codec.py), parses and validates it with serving.protocol, asks
the backend, and turns every refusal into the gRPC status of its HTTP one (404 → NOT_FOUND, 422 →
INVALID_ARGUMENT, 503 → UNAVAILABLE, ...) with the message the HTTP body would give. Health and
metadata need no key, as over HTTP. The server runs on the caller's event loop, beside the HTTP
server and the router it shares.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from importlib import metadata as distribution

import grpc

from serving.http_app import Backend, authorised, next_request_id
from serving.oip_grpc_codec import infer_message, metadata_message, parse_version, request_body, status_code
from serving.oip_grpc_proto import MESSAGES, METHODS, SERVICE
from serving.protocol import BadRequest, check_request_id, check_routing_key, infer_response, parse_infer, requested_outputs

__all__ = ["InferenceServicer", "add_inference_service", "start_grpc", "stop_grpc"]

log = logging.getLogger(__name__)

UNAUTHENTICATED = "missing or invalid API key (send metadata authorization: Bearer KEY or x-api-key: KEY)"
_M = MESSAGES


def _server_version() -> str:
    try:
        return distribution.version("handoff")
    except distribution.PackageNotFoundError:
        return "unknown"


class InferenceServicer:
    """The six RPCs over a `Backend`; each returns its response or raises `BadRequest`."""

    def __init__(self, backend: Backend, api_keys: frozenset[str] = frozenset()):
        self.backend, self.api_keys = backend, api_keys
        # no extension applies: binary_tensor_data is HTTP's; gRPC carries raw bytes natively
        self._server_metadata = _M["ServerMetadataResponse"](name="handoff", version=_server_version(), extensions=[])

    async def ServerLive(self, request, context):  # noqa: N802 - the RPC's name
        return _M["ServerLiveResponse"](live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return _M["ServerReadyResponse"](ready=bool(self.backend.ready()))

    async def ModelReady(self, request, context):  # noqa: N802
        """Ready: the model's versions can answer, and the version named (if any) is one of them."""
        self.backend.signature(request.name)
        version = parse_version(request.version, "version")
        ready = bool(self.backend.ready(request.name))
        if version is not None:
            ready = ready and version in self.backend.versions(request.name)
        return _M["ModelReadyResponse"](ready=ready)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return self._server_metadata

    async def ModelMetadata(self, request, context):  # noqa: N802
        """The HTTP metadata route's answer; a version named that is not served is NOT_FOUND."""
        sig = self.backend.signature(request.name)
        versions = self.backend.versions(request.name)
        version = parse_version(request.version, "version")
        if version is not None and version not in versions:
            raise BadRequest(f"model {request.name!r} has no version {version} served (served: {versions})", status=404)
        return metadata_message(sig.metadata(versions))

    async def ModelInfer(self, request, context):  # noqa: N802
        """Key, model, version text, then the body parsed as the HTTP path parses it; the answer's
        outputs as raw bytes, and `x-model-version` / `x-request-id` in the trailing metadata."""
        headers = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        if not authorised(headers, self.api_keys):
            raise BadRequest(UNAUTHENTICATED, status=401)
        name = request.model_name
        sig = self.backend.signature(name)
        version = parse_version(request.model_version, "model_version")
        try:
            body = request_body(request)
            x, request_id = parse_infer(body, sig)
            outputs = [(output, True) for output, _ in requested_outputs(body, sig.outputs)]
        except BadRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - the client's input, whatever a parser tripped on
            log.warning("model %s: a gRPC request tripped the parser: %r", name, exc)
            raise BadRequest(f"malformed request: {type(exc).__name__}: {exc}") from None
        request_id = request_id or check_request_id(headers.get("x-request-id"), "metadata x-request-id") or \
            next_request_id()
        routing_key = check_routing_key(headers.get("x-routing-key"), "metadata x-routing-key")
        answer = await self.backend.answer(name, x, request_id, routing_key, version)
        payload, blobs = infer_response(name, answer.version, request_id, sig, answer.proba, answer.prediction,
                                        answer.label, outputs)
        context.set_trailing_metadata((("x-model-version", payload["model_version"]), ("x-request-id", request_id)))
        return infer_message(payload, blobs)


def _guarded(method: str, rpc: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    """The RPC with its refusals as gRPC statuses: a `BadRequest` as its status's code and message
    (its headers, `Retry-After`, as trailing metadata); anything else UNAVAILABLE with an error id,
    never the exception's text (the log has the traceback under that id)."""
    async def handler(request, context):
        try:
            if isinstance(request, _Malformed):
                raise BadRequest(request.text)
            return await rpc(request, context)
        except BadRequest as exc:
            code, details = status_code(exc.status), str(exc)
            trailers = tuple((key.lower(), value) for key, value in exc.headers.items())
        except Exception:  # noqa: BLE001 - a failing version is the server's fault: UNAVAILABLE, never UNKNOWN
            name = getattr(request, "model_name", "") or getattr(request, "name", "")
            what = f"model {name!r} could not answer" if name else f"{method} failed"
            error_id = os.urandom(4).hex()
            log.exception("gRPC %s: %s (error id %s)", method, what, error_id)
            code, details, trailers = grpc.StatusCode.UNAVAILABLE, \
                f"{what} (error id {error_id}; the gateway's log has the details)", ()
        await context.abort(code, details, trailers)

    return handler


class _Malformed:
    """A request whose bytes are not its message (what protobuf said): refused as INVALID_ARGUMENT by
    the handler, where grpc would answer a deserializer's exception with UNKNOWN."""

    def __init__(self, message: str, why: str):
        self.text = f"malformed {message}: {why}"[:300]


def _reader(message: str) -> Callable[[bytes], object]:
    parse = _M[message].FromString

    def read(data: bytes):
        try:
            return parse(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and kin: the client's bytes
            return _Malformed(message, str(exc) or type(exc).__name__)

    return read


def add_inference_service(server: grpc.aio.Server, servicer: InferenceServicer) -> None:
    """Register the service's RPCs on a server not yet started."""
    handlers = {method: grpc.unary_unary_rpc_method_handler(
        _guarded(method, getattr(servicer, method)), request_deserializer=_reader(request),
        response_serializer=_M[response].SerializeToString) for method, request, response in METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


async def start_grpc(backend: Backend, host: str, port: int, max_message_bytes: int,
                     api_keys: frozenset[str] = frozenset()) -> grpc.aio.Server:
    """The OIP v2 gRPC server, started on the running event loop and bound to `host:port` with
    SO_REUSEPORT (every gateway replica on a node serves the same port, as over HTTP); a message over
    `max_message_bytes` is refused (RESOURCE_EXHAUSTED). Raises OSError if the port cannot be bound.
    Stop it with `stop_grpc` on the same loop."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1),
                                      ("grpc.max_receive_message_length", max_message_bytes)])
    add_inference_service(server, InferenceServicer(backend, api_keys))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"the gRPC server could not bind {address}: the port is taken by a process without "
                      "SO_REUSEPORT, or the address is not this host's (GRPC_VERBOSITY=debug says which)")
    await server.start()
    return server


async def stop_grpc(server: grpc.aio.Server, grace_s: float = 5.0) -> None:
    """Stop taking RPCs at once; those under way have `grace_s` seconds to finish, then are cancelled."""
    await server.stop(grace_s)
