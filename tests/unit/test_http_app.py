"""The HTTP app in-process (no Ray, no server): every inference route, through both the direct front
and the FastAPI routes that document it, gives the same answers and the same refusals."""

import asyncio
import json

import numpy as np
import pytest

from serving.http_app import Answer, build_asgi
from serving.protocol import BadRequest, ModelSignature
from training import class_labels, predicted_class

SIG = ModelSignature("m", ("f1", "f2", "f3"), ("cat", "dog"))
ROW = [1.0, 2.0, 3.0]


class OneModelBackend:
    """A deterministic model `m` (version 1 served) and a model `broken` whose version fails."""

    def signature(self, model: str) -> ModelSignature:
        if model == "broken":
            return ModelSignature("broken", SIG.features, (0, 1))
        if model != "m":
            raise BadRequest(f"unknown model {model!r} (served: m)", status=404)
        return SIG

    def versions(self, model: str) -> list[int]:
        return [1]

    def ready(self, model: str | None = None) -> bool:
        return True

    async def answer(self, model, x, request_id, routing_key, version) -> Answer:
        if model == "broken":
            raise RuntimeError("weights are gone")
        if version not in (None, 1):
            raise BadRequest(f"model 'm' has no served version {version} (served: 1)", status=404)
        s = x.sum(axis=1, keepdims=True) / 10
        proba = np.concatenate([1 / (1 + np.exp(s)), 1 - 1 / (1 + np.exp(s))], axis=1).astype(np.float32)
        prediction = predicted_class(proba)
        return Answer(1, proba, prediction, class_labels(SIG.classes, prediction))


def call(app, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """One request through an ASGI app: (status, headers, decoded JSON body or raw bytes)."""
    headers = {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 8000)}
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    try:
        return start["status"], answer_headers, json.loads(raw)
    except ValueError:
        return start["status"], answer_headers, raw


FRONT = build_asgi(OneModelBackend(), max_body_bytes=4096)
APPS = {"direct front": FRONT, "FastAPI routes": FRONT.fastapi}
OIP = json.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": ROW}]}).encode()
MLFLOW = json.dumps({"dataframe_split": {"columns": ["f3", "f1", "f2"], "data": [[3.0, 1.0, 2.0]]}}).encode()
ROUTES = [("/v2/models/m/infer", OIP), ("/v2/models/m/versions/1/infer", OIP), ("/v2/models/m/invocations", MLFLOW)]


@pytest.mark.parametrize("path, body", ROUTES)
def test_every_inference_route_answers_alike_through_both_fronts(path, body):
    answers = {name: call(app, "POST", path, body) for name, app in APPS.items()}
    for status, headers, payload in answers.values():
        assert status == 200 and headers["x-model-version"] == "1" and headers["x-request-id"]
    direct, documented = (payload for _, _, payload in answers.values())
    if "invocations" in path:
        assert direct == documented and set(direct["predictions"][0]) == {"prediction", "label", "probability_cat",
                                                                           "probability_dog"}
        assert direct["predictions"][0]["prediction"] == 1 and direct["predictions"][0]["label"] == "dog"
    else:
        for payload in (direct, documented):
            payload.pop("id")
        assert direct == documented and direct["outputs"][0] == {"name": "prediction", "datatype": "INT64",
                                                                 "shape": [1], "data": [1]}
        assert direct["outputs"][2] == {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["dog"]}


BAD = [
    ("/v2/models/m/infer", b"{not json", {}, 400, "malformed JSON"),
    ("/v2/models/m/versions/x/infer", OIP, {}, 400, "not a version number"),
    ("/v2/models/nope/infer", OIP, {}, 404, "unknown model 'nope'"),
    ("/v2/models/m/versions/7/infer", OIP, {}, 404, "no served version 7"),
    ("/v2/models/m/infer", b'{"inputs": [' + b'{"name": "features"},' * 400 + b"{}]}", {}, 413, "limit"),
    ("/v2/models/m/invocations", json.dumps({"dataframe_records": [{"f1": 1}]}).encode(), {}, 422,
     "missing feature"),
    ("/v2/models/m/infer", json.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                                                    "data": [1, "NaN", 3]}]}).encode(), {}, 422, "NaN"),
    ("/v2/models/broken/infer", OIP, {}, 503, "could not answer"),
    # found by schemathesis over /openapi.json, or read in the code: each was a 5xx or a header no client reads
    ("/v2/models/m/versions/²/infer", OIP, {}, 400, "not a version number"),       # "²".isdigit(), int() refuses
    ("/v2/models/m/infer", json.dumps({"inputs": [{"name": "", "shape": [], "datatype": {}, "data": [None]}]}).encode(),
     {}, 400, "datatype {} is not supported"),                                     # was a 503 (unhashable dict)
    ("/v2/models/m/infer", json.dumps({"id": None, **json.loads(OIP)}).encode(), {}, 400, "'id' must be a string"),
    ("/v2/models/m/infer", json.dumps({"id": "€", **json.loads(OIP)}).encode(), {}, 400, "is not a request id"),
    ("/v2/models/m/infer", json.dumps({"id": "x" * 300, **json.loads(OIP)}).encode(), {}, 400, "1 to 256 visible"),
    ("/v2/models/m/infer", OIP, {"x-request-id": "€uro"}, 400, "header x-request-id"),
    ("/v2/models/m/infer", json.dumps({"inputs": [{"name": "features", "shape": [True, 3], "datatype": "FP32",
                                                    "data": ROW}]}).encode(), {}, 400, "non-negative integers"),
    ("/v2/models/m/infer", json.dumps({**json.loads(OIP), "outputs": [{"name": "label", "parameters": [1]}]}).encode(),
     {}, 400, "'parameters' must be an object"),
    ("/v2/models/m/infer", OIP, {"inference-header-content-length": "²"}, 400, "Inference-Header-Content-Length"),
]


@pytest.mark.parametrize("path, body, headers, status, message", BAD)
def test_refusals_are_the_same_json_error_through_both_fronts(path, body, headers, status, message):
    for app in APPS.values():
        got, _, payload = call(app, "POST", path, body, headers)
        assert got == status and message in payload["error"], payload


def test_openapi_types_the_version_as_the_server_parses_it_and_bodies_as_required():
    schema = FRONT.fastapi.openapi()
    route = schema["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    version = next(p for p in route["parameters"] if p["name"] == "version")
    assert version["schema"]["type"] == "integer" and version["schema"]["minimum"] == 1
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/invocations", "/v2/models/{name}/feedback"):
        assert schema["paths"][path]["post"]["requestBody"]["required"] is True
    body = schema["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/json"]  # the binary extension is described, not declared
    assert body["application/json"]["schema"]["properties"]["id"]["pattern"] == '^[!-"$-~]{1,256}$'  # no #


def test_an_api_key_is_required_on_every_inference_route_when_keys_are_set():
    front = build_asgi(OneModelBackend(), 4096, frozenset({"k1"}))
    for app in (front, front.fastapi):
        for path, body in ROUTES:
            status, _, payload = call(app, "POST", path, body)
            assert status == 401 and "API key" in payload["error"]
            assert call(app, "POST", path, body, {"authorization": "Bearer k1"})[0] == 200
            assert call(app, "POST", path, body, {"x-api-key": "k1"})[0] == 200


def test_a_method_not_allowed_is_a_405_with_the_allow_header():
    for path, _ in ROUTES:
        status, headers, payload = call(FRONT, "GET", path)
        assert status == 405 and headers["allow"] == "POST" and "not allowed" in payload["error"]
    status, headers, _ = call(FRONT, "DELETE", "/v2/models/m")
    assert status == 405 and headers["allow"] == "GET"


def test_openapi_documents_every_route_its_payloads_and_every_refusal():
    status, _, spec = call(FRONT, "GET", "/openapi.json")
    assert status == 200
    paths = spec["paths"]
    error_ref = "#/components/schemas/ErrorBody"
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["error"]["type"] == "string"
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
                 "/v2/models/{name}/invocations"):
        responses = paths[path]["post"]["responses"]
        for code in ("400", "401", "404", "405", "413", "422", "503"):
            assert responses[code]["content"]["application/json"]["schema"]["$ref"] == error_ref, (path, code)
    payloads = paths["/v2/models/{name}/invocations"]["post"]["requestBody"]["content"]["application/json"]
    assert {next(iter(o["required"])) for o in payloads["schema"]["oneOf"]} == {
        "dataframe_split", "dataframe_records", "instances", "inputs"}
    assert "404" in paths["/v2/models/{name}"]["get"]["responses"]
    assert {"/v2/health/live", "/v2/health/ready", "/v2/models/{name}/ready"} <= set(paths)
    assert call(FRONT, "GET", "/docs")[0] == 200


def binary_request(rows: np.ndarray, binary_out: bool | None, outputs: list | None = None) -> tuple[bytes, dict]:
    """What tritonclient.http sends: the JSON header, then the float32 bytes of the input."""
    head = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                        "parameters": {"binary_data_size": rows.nbytes}}]}
    if binary_out is not None:
        head["parameters"] = {"binary_data_output": binary_out}
    if outputs is not None:
        head["outputs"] = outputs
    raw = json.dumps(head).encode()
    return raw + rows.astype("<f4").tobytes(), {"inference-header-content-length": str(len(raw))}


def split_answer(headers: dict, raw: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """An answer's JSON and its outputs as arrays (binary ones decoded from the bytes after the JSON)."""
    n = int(headers["inference-header-content-length"])
    head, tail, offset, arrays = json.loads(raw[:n]), raw[n:], 0, {}
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        blob = tail[offset:offset + size]
        if out["datatype"] == "BYTES":  # each element: 4-byte little-endian length, then its bytes
            items, i = [], 0
            while i < len(blob):
                n = int.from_bytes(blob[i:i + 4], "little")
                items.append(blob[i + 4:i + 4 + n].decode())
                i += 4 + n
            arrays[out["name"]] = np.asarray(items)
        else:
            dtype = {"INT64": "<i8", "FP32": "<f4"}[out["datatype"]]
            arrays[out["name"]] = np.frombuffer(blob, dtype).reshape(out["shape"])
        offset += size
    assert offset == len(tail)
    return head, arrays


def test_binary_tensors_in_and_out_give_the_json_paths_answers():
    rows = np.array([ROW, [9.0, -4.0, 0.5], [0.0, 0.0, 0.0]], dtype=np.float32)
    as_json = json.dumps({"inputs": [{"name": "features", "shape": [3, 3], "datatype": "FP32",
                                      "data": rows.reshape(-1).tolist()}]}).encode()
    _, _, expected = call(FRONT, "POST", "/v2/models/m/infer", as_json)
    expected = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in expected["outputs"]}
    for app in APPS.values():
        body, headers = binary_request(rows, binary_out=True)
        status, answer_headers, raw = call(app, "POST", "/v2/models/m/infer", body, headers)
        assert status == 200 and answer_headers["content-type"] == "application/octet-stream"
        head, arrays = split_answer(answer_headers, raw)
        assert head["model_version"] == "1"
        assert [o["name"] for o in head["outputs"]] == ["prediction", "probability", "label"]
        assert arrays["prediction"].tolist() == expected["prediction"].tolist()
        assert arrays["label"].tolist() == expected["label"].tolist()
        np.testing.assert_allclose(arrays["probability"], expected["probability"], atol=1e-6)
        # binary in, JSON out (binary_data_output false), and one output asked for as binary
        body, headers = binary_request(rows, binary_out=False)
        status, answer_headers, payload = call(app, "POST", "/v2/models/m/infer", body, headers)
        assert status == 200 and "inference-header-content-length" not in answer_headers
        assert payload["outputs"][0]["data"] == expected["prediction"].tolist()
        body, headers = binary_request(rows, None, [{"name": "probability", "parameters": {"binary_data": True}}])
        status, answer_headers, raw = call(app, "POST", "/v2/models/m/infer", body, headers)
        head, arrays = split_answer(answer_headers, raw)
        assert list(arrays) == ["probability"] and arrays["probability"].shape == (3, 2)


def respell(body: bytes, headers: dict, old: bytes, new: bytes) -> tuple[bytes, dict]:
    """Change the JSON part of a binary request, keeping its length header right."""
    n = int(headers["inference-header-content-length"])
    head = body[:n].replace(old, new)
    return head + body[n:], {"inference-header-content-length": str(len(head))}


BAD_BINARY = [
    (lambda b, h: (b[:-4], h), 400, "byte(s) of binary data for it"),                       # truncated tensor
    (lambda b, h: (b + b"\0\0\0\0", h), 400, "belong to no input"),                          # bytes left over
    (lambda b, h: (b, {"inference-header-content-length": "99999"}), 400, "Inference-Header-Content-Length"),
    (lambda b, h: respell(b, h, b'"binary_data_size": 12', b'"binary_data_size": 8'), 400, "does not match"),
    (lambda b, h: respell(b, h, b'"FP32"', b'"COMPLEX64"'), 400, "not supported"),
    (lambda b, h: respell(b, h, b'"FP32"', b'"BYTES"'), 400, "declares"),  # float bytes read as BYTES lengths
    (lambda b, h: respell(b, h, b'"parameters": {"binary_data_output": true}', b'"outputs": [{"name": "nope"}]'),
     400, "not one of this model's outputs"),
]


@pytest.mark.parametrize("spoil, status, message", BAD_BINARY)
def test_bad_binary_requests_are_refused_naming_the_problem(spoil, status, message):
    body, headers = binary_request(np.array([ROW], dtype=np.float32), binary_out=True)
    body, headers = spoil(body, headers)
    for app in APPS.values():
        got, _, payload = call(app, "POST", "/v2/models/m/infer", body, headers)
        assert got == status and message in payload["error"], payload
    body, headers = binary_request(np.array([ROW], dtype=np.float32), binary_out=True)
    got, _, payload = call(FRONT, "POST", "/v2/models/m/invocations", body, headers)
    assert got == 400 and "/infer" in payload["error"]


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/v2/models/m", "/v2/models/nope",
                                  "/openapi.json"])
def test_a_head_request_gets_the_gets_status_and_headers_without_a_body(path):
    """Uptime checkers and some load balancers probe with HEAD: FastAPI's GET routes alone answer 405."""
    got = call(FRONT, "GET", path)
    head = call(FRONT, "HEAD", path)
    assert head[0] == got[0] and head[2] == b"", head
    assert head[1]["content-length"] == got[1]["content-length"] and head[1]["content-type"] == got[1]["content-type"]
