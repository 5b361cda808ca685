"""The OIP v2 gRPC front on a real grpc.aio server (127.0.0.1, its loop in a thread), an in-process
backend and the real `tritonclient.grpc` client with its defaults (raw tensors): the same answers as
the HTTP path, the same refusals as gRPC statuses, and the messages numbered as Triton's."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading

import grpc
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.batcher import DeadlinePassed, Overloaded
from serving.http_app import Answer, build_asgi
from serving.oip_grpc import start_grpc, stop_grpc
from serving.oip_grpc_proto import MESSAGES, METHODS, SERVICE
from serving.protocol import BadRequest, ModelSignature
from training import class_labels, predicted_class
from training.columns import CATEGORICAL, NUMERIC, fit_preparation

from .test_http_app import call

SIG = ModelSignature("m", ("f1", "f2", "f3"), ("no", "yes"))
TRAIN = pd.DataFrame({"city": ["paris", "lyon", "paris", "nice"], "income": [10.0, 20.0, 30.0, 40.0]})
PREPARATION = fit_preparation(TRAIN, {"city": CATEGORICAL, "income": NUMERIC})
CHURN = ModelSignature.of("churn", list(TRAIN), ["no", "yes"], PREPARATION.to_json())
ROWS = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, -9.0]], dtype=np.float32)


def classify(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = x.sum(axis=1, keepdims=True) * scale
    proba = np.concatenate([1 / (1 + np.exp(s)), 1 - 1 / (1 + np.exp(s))], axis=1).astype(np.float32)
    prediction = predicted_class(proba)
    return proba, prediction, class_labels(("no", "yes"), prediction)


class Backend:
    """`m` (versions 1 and 2, which answer differently), `churn` (a categorical and a numeric column),
    `broken` (raises), `busy` (load shed), `slow` (deadline passed); every call recorded."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.is_ready = True

    def signature(self, model: str) -> ModelSignature:
        if model == "churn":
            return CHURN
        if model in ("m", "broken", "busy", "slow"):
            return SIG
        raise BadRequest(f"unknown model {model!r} (served: m, churn)", status=404)

    def versions(self, model: str) -> list[int]:
        return [1, 2] if model == "m" else [1]

    def ready(self, model: str | None = None) -> bool:
        return self.is_ready

    async def answer(self, model, rows, request_id, routing_key, version) -> Answer:
        self.calls.append((model, rows, request_id, routing_key, version))
        if model == "broken":
            raise RuntimeError("secret /srv/weights/host-7 vanished")
        if model == "busy":
            raise Overloaded("version 1 of 'busy'", 1000)
        if model == "slow":
            raise DeadlinePassed("version 1 of 'slow'", 5)
        if version not in (None, *self.versions(model)):
            raise BadRequest(f"model {model!r} has no served version {version}", status=404)
        chosen = version or 1
        x = PREPARATION.transform(rows).x if model == "churn" else rows
        return Answer(chosen, *classify(np.asarray(x, dtype=np.float32), 0.1 * chosen))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def on(loop, coroutine):
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(30)


@pytest.fixture(scope="module")
def backend():
    return Backend()


@pytest.fixture(scope="module")
def ports(loop, backend):
    """An open server (1 MiB messages) and one that needs the key `k` (4 KiB messages)."""
    open_port, keyed_port = free_port(), free_port()
    servers = [on(loop, start_grpc(backend, "127.0.0.1", open_port, 1 << 20)),
               on(loop, start_grpc(backend, "127.0.0.1", keyed_port, 4096, frozenset({"k"})))]
    yield open_port, keyed_port
    for server in servers:
        on(loop, stop_grpc(server, 0))


@pytest.fixture(scope="module")
def client(ports):
    with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[0]}") as c:
        yield c


@pytest.fixture(scope="module")
def keyed(ports):
    with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}") as c:
        yield c


def features(rows: np.ndarray, datatype: str = "FP32", name: str = "features") -> list:
    tensor = grpcclient.InferInput(name, list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)
    return [tensor]


def refusal(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_health_and_server_metadata(client, backend):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("m") and client.is_model_ready("m", "2") and not client.is_model_ready("m", "7")
    assert client.get_server_metadata().name == "handoff"
    backend.is_ready = False
    try:
        assert not client.is_server_ready() and not client.is_model_ready("m")
    finally:
        backend.is_ready = True
    assert refusal(lambda: client.is_model_ready("nope")).status() == "StatusCode.NOT_FOUND"


def test_infer_gives_the_http_answers_numbers(client, backend):
    result = client.infer("m", features(ROWS), request_id="req-1")
    body = {"inputs": [{"name": "features", "shape": [2, 3], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
    status, _, http = call(build_asgi(Backend(), 4096), "POST", "/v2/models/m/infer", json.dumps(body).encode())
    assert status == 200
    expected = {o["name"]: o for o in http["outputs"]}
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "req-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == \
        [(o["name"], o["datatype"], o["shape"]) for o in http["outputs"]]
    np.testing.assert_allclose(result.as_numpy("probability").ravel(), expected["probability"]["data"], atol=1e-6)
    assert result.as_numpy("prediction").tolist() == expected["prediction"]["data"] == [1, 0]
    assert [v.decode() for v in result.as_numpy("label")] == expected["label"]["data"] == ["yes", "no"]
    model, rows, request_id, routing_key, version = backend.calls[-1]
    assert (model, request_id, routing_key, version) == ("m", "req-1", None, None)
    np.testing.assert_array_equal(rows, ROWS)


def test_version_routing_key_and_output_subset_reach_the_backend(client, backend):
    result = client.infer("m", features(ROWS), model_version="2", headers={"x-routing-key": "user-42"},
                          outputs=[grpcclient.InferRequestedOutput("probability")])
    assert result.get_response().model_version == "2"
    assert [o.name for o in result.get_response().outputs] == ["probability"]
    np.testing.assert_allclose(result.as_numpy("probability"), classify(ROWS, 0.2)[0], atol=1e-7)
    assert backend.calls[-1][3:] == ("user-42", 2)
    assert backend.calls[-1][2]  # an id was made up: neither the request nor its metadata gave one


def test_bytes_input_for_a_categorical_model(client, backend):
    city = grpcclient.InferInput("city", [3], "BYTES")
    city.set_data_from_numpy(np.array(["paris", "été", "lyon"], dtype=object))
    income = grpcclient.InferInput("income", [3], "FP64")
    income.set_data_from_numpy(np.array([12.0, 25.0, 31.5]))
    result = client.infer("churn", [city, income], headers={"x-request-id": "from-metadata"})
    columns = {"city": ["paris", "été", "lyon"], "income": [12.0, 25.0, 31.5]}
    assert backend.calls[-1][1] == columns
    assert result.get_response().id == "from-metadata"
    expected = classify(PREPARATION.transform(columns).x, 0.1)
    np.testing.assert_allclose(result.as_numpy("probability"), expected[0], atol=1e-7)


def test_model_metadata_is_the_http_metadata(client, ports):
    meta = client.get_model_metadata("m")
    assert (meta.name, list(meta.versions), meta.platform) == ("m", ["1", "2"], "handoff-torch")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("features", "FP32", [-1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == \
        [("prediction", "INT64", [-1]), ("probability", "FP32", [-1, 2]), ("label", "BYTES", [-1])]
    with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:  # our messages: the parameters too
        ours = rpc(channel, "ModelMetadata")(MESSAGES["ModelMetadataRequest"](name="churn"))
    assert ours.parameters["task"].string_param == "classification"
    assert json.loads(ours.parameters["classes"].string_param) == ["no", "yes"]
    city = {t.name: t for t in ours.inputs}["city"]
    assert city.datatype == "BYTES" and json.loads(city.parameters["categories"].string_param) == ["lyon", "nice",
                                                                                                   "paris"]
    assert refusal(lambda: client.get_model_metadata("m", "9")).status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("model, inputs, kwargs, status, message", [
    ("nope", features(ROWS), {}, "NOT_FOUND", "unknown model 'nope'"),
    ("m", features(np.ones((1, 4), np.float32)), {}, "INVALID_ARGUMENT", "input 'features': shape [1, 4]"),
    ("m", features(np.array([[1, np.nan, 3]], np.float32)), {}, "INVALID_ARGUMENT", "NaN or infinite"),
    ("m", features(ROWS), {"model_version": "v2"}, "INVALID_ARGUMENT", "model_version 'v2' is not a version number"),
    ("m", features(ROWS), {"model_version": "3"}, "NOT_FOUND", "no served version 3"),
    ("m", features(ROWS), {"request_id": "has space"}, "INVALID_ARGUMENT", "is not a request id"),
    ("m", features(ROWS), {"outputs": [grpcclient.InferRequestedOutput("score")]}, "INVALID_ARGUMENT",
     "output 'score' is not one of this model's outputs"),
    ("m", features(ROWS), {"outputs": [grpcclient.InferRequestedOutput("probability", class_count=2)]},
     "INVALID_ARGUMENT", "the classification extension (class_count) is not supported"),
    ("m", features(np.array([[1, 1e39, 3]], np.float64), "FP64"), {}, "INVALID_ARGUMENT", "beyond FP32's range"),
    ("m", features(ROWS), {"request_id": "order#1"}, "INVALID_ARGUMENT", "punctuation but #"),
    ("busy", features(ROWS), {}, "UNAVAILABLE", "over capacity"),
    ("slow", features(ROWS), {}, "DEADLINE_EXCEEDED", "did not answer within 5 s"),
])
def test_refusals_are_grpc_statuses_with_the_http_message(client, model, inputs, kwargs, status, message):
    error = refusal(lambda: client.infer(model, inputs, **kwargs))
    assert error.status() == f"StatusCode.{status}" and message in error.message(), error


def test_a_failing_backend_is_unavailable_without_its_text(client, caplog):
    with caplog.at_level(logging.ERROR, logger="serving.oip_grpc"):
        error = refusal(lambda: client.infer("broken", features(ROWS)))
    assert error.status() == "StatusCode.UNAVAILABLE", error
    assert "error id" in error.message() and "secret" not in error.message() and "srv" not in error.message()
    assert "secret /srv/weights" in caplog.text  # the traceback is logged, under the same id
    assert error.message().split("error id ")[1][:8] in caplog.text


def test_api_key_and_message_size_are_enforced(keyed):
    small = features(ROWS[:1])
    for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "nope"}):
        error = refusal(lambda: keyed.infer("m", small, headers=headers))
        assert error.status() == "StatusCode.UNAUTHENTICATED" and "Bearer KEY" in error.message()
    for headers in ({"authorization": "Bearer k"}, {"x-api-key": "k"}):
        assert keyed.infer("m", small, headers=headers).as_numpy("prediction").tolist() == [1]
    assert keyed.is_server_ready() and keyed.get_model_metadata("m").name == "m"  # health stays open
    big = features(np.ones((1000, 3), np.float32))  # 12 kB over a 4 KiB limit
    error = refusal(lambda: keyed.infer("m", big, headers={"x-api-key": "k"}))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED", error


def rpc(channel, method: str):
    request, response = {m: (q, a) for m, q, a in METHODS}[method]
    return channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=MESSAGES[request].SerializeToString,
                               response_deserializer=MESSAGES[response].FromString)


Request = MESSAGES["ModelInferRequest"]
Contents = MESSAGES["InferTensorContents"]


def typed(name: str, datatype: str, shape: list[int], **contents):
    return Request.InferInputTensor(name=name, datatype=datatype, shape=shape, contents=Contents(**contents))


def test_typed_contents_and_trailing_metadata_through_our_own_stub(ports):
    with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
        answer, call_ = rpc(channel, "ModelInfer").with_call(Request(
            model_name="m", id="typed-1", inputs=[typed("features", "FP32", [2, 3], fp32_contents=ROWS.ravel())]))
        churn = rpc(channel, "ModelInfer")(Request(model_name="churn", inputs=[
            typed("city", "BYTES", [1], bytes_contents=[b"nice"]), typed("income", "INT32", [1], int_contents=[7])]))
    assert dict(call_.trailing_metadata()) == {"x-model-version": "1", "x-request-id": "typed-1"}
    assert [o.name for o in answer.outputs] == ["prediction", "probability", "label"]
    np.testing.assert_allclose(np.frombuffer(answer.raw_output_contents[1], "<f4").reshape(2, 2),
                               classify(ROWS, 0.1)[0], atol=1e-7)
    assert np.frombuffer(answer.raw_output_contents[0], "<i8").tolist() == [1, 0]
    assert answer.raw_output_contents[2] == b"\x03\x00\x00\x00yes\x02\x00\x00\x00no"
    expected = classify(PREPARATION.transform({"city": ["nice"], "income": [7]}).x, 0.1)[0]
    np.testing.assert_allclose(np.frombuffer(churn.raw_output_contents[1], "<f4"), expected.ravel(), atol=1e-7)


@pytest.mark.parametrize("request_, message", [
    (Request(model_name="m", inputs=[typed("features", "FP32", [1, 3], fp32_contents=[1, 2, 3])],
             raw_input_contents=[ROWS[:1].tobytes()]), "input 'features': has both contents and raw_input_contents"),
    (Request(model_name="m", inputs=[typed("features", "FP32", [1, 3], fp64_contents=[1, 2, 3])]),
     "input 'features': FP32 values go in contents.fp32_contents, not contents.fp64_contents"),
    (Request(model_name="m", inputs=[typed("features", "FP32", [2, 3], fp32_contents=[1, 2, 3])]),
     "input 'features': shape [2, 3] needs 6 value(s), contents.fp32_contents has 3"),
    (Request(model_name="m", inputs=[Request.InferInputTensor(name="features", datatype="FP32", shape=[2, 3])],
             raw_input_contents=[ROWS[:1].tobytes()]), "input 'features': raw_input_contents holds 12 byte(s)"),
    (Request(model_name="m", inputs=[Request.InferInputTensor(name="features", datatype="FP32", shape=[1, 3])],
             raw_input_contents=[ROWS[:1].tobytes(), b""]), "raw_input_contents has 2 entries for 1 input(s)"),
    (Request(model_name="m", inputs=[typed("features", "INT8", [1, 3], int_contents=[1, 300, 3])]),
     "input 'features': a value of contents.int_contents is outside the range of INT8"),
    (Request(model_name="m", inputs=[typed("features", "FP16", [1, 3])]), "input 'features': datatype 'FP16' has no"),
    (Request(model_name="churn", inputs=[typed("city", "BYTES", [1], bytes_contents=[b"\xff"]),
                                         typed("income", "FP32", [1], fp32_contents=[1])]), "input 'city': an element"),
    (Request(model_name="churn", inputs=[Request.InferInputTensor(name="city", datatype="BYTES", shape=[2]),
                                         Request.InferInputTensor(name="income", datatype="FP32", shape=[2])],
             raw_input_contents=[b"\x01\x00\x00\x00a", np.ones(2, "<f4").tobytes()]),
     "input 'city': binary BYTES data ends after 1 of 2"),
])
def test_malformed_tensors_are_invalid_argument_naming_the_input(ports, request_, message):
    with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel, pytest.raises(grpc.RpcError) as caught:
        rpc(channel, "ModelInfer")(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details(), \
        caught.value.details()


def test_messages_are_numbered_as_tritons():
    """Every field of ours has Triton's number, type and name; ours adds only parameters Triton lacks."""
    from tritonclient.grpc import service_pb2

    def fields(descriptor) -> dict:
        out = {f.number: (f.name, f.type, f.is_repeated) for f in descriptor.fields}
        for nested in descriptor.nested_types:
            if nested.GetOptions().map_entry:  # the entry of a map<string, InferParameter>: same on both sides
                continue
            out.update({(nested.name, k): v for k, v in fields(nested).items()})
        return out

    for name, cls in MESSAGES.items():
        theirs = fields(service_pb2.DESCRIPTOR.message_types_by_name[name])
        ours = fields(cls.DESCRIPTOR)
        added = {k: v for k, v in ours.items() if k not in theirs}
        assert {k: v for k, v in ours.items() if k in theirs} == theirs, name
        assert set(added) <= {6, ("TensorMetadata", 4)} and all(v[0] == "parameters" for v in added.values()), name
        assert not added or name == "ModelMetadataResponse", name


def test_a_port_that_cannot_be_bound_is_refused_clearly(loop, backend):
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody else can bind it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="could not bind 127.0.0.1:"):
            on(loop, start_grpc(backend, "127.0.0.1", taken.getsockname()[1], 1 << 20))


@pytest.mark.parametrize("method", ["ModelInfer", "ModelMetadata", "ModelReady"])
@pytest.mark.parametrize("junk", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x3a\xff\xff\xff\xff\x0f"])
def test_bytes_that_are_not_the_message_are_invalid_argument_not_unknown(ports, method, junk):
    """grpc answers a deserializer's exception with UNKNOWN ("Unexpected DecodeError"): the client's
    bytes are refused as INVALID_ARGUMENT naming the message, as a malformed body is a 400."""
    with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/inference.GRPCInferenceService/{method}")(junk, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert caught.value.details().startswith(f"malformed {method}Request:")
