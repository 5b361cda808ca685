"""Serving a model with categorical columns and gaps, in-process (no Ray, no server): a request with
one tensor per column (JSON or the binary extension) or an MLflow payload reaches the backend as the
columns' raw values, the version's preparation makes them its input, and bad input is a 4xx naming
the column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serving.http_app import Answer, build_asgi
from serving.protocol import BadRequest, ModelSignature
from training import class_labels, predicted_class
from training.columns import CATEGORICAL, NUMERIC, fit_preparation

from .test_http_app import call

TRAIN = pd.DataFrame({"tenure": [1, 5, 12, 30, 2, 7], "total": [10.0, None, 120.5, 300.0, 25.0, 70.0],
                      "contract": ["month", "month", "year", "two", "month", None],
                      "senior": [True, False, False, True, False, False], "plan": [1, 2, 2, 3, 1, 1]})
PREPARATION = fit_preparation(TRAIN, {"tenure": NUMERIC, "total": NUMERIC, "contract": CATEGORICAL,
                                      "senior": CATEGORICAL, "plan": CATEGORICAL})
SIG = ModelSignature.of("churn", list(TRAIN), ["no", "yes"], PREPARATION.to_json())


class MixedBackend:
    """One model `churn` whose answer is computed from the prepared rows (what the router does)."""

    def __init__(self):
        self.seen: list = []

    def signature(self, model: str) -> ModelSignature:
        if model != "churn":
            raise BadRequest(f"unknown model {model!r}", status=404)
        return SIG

    def versions(self, model: str) -> list[int]:
        return [1]

    def ready(self, model: str | None = None) -> bool:
        return True

    async def answer(self, model, rows, request_id, routing_key, version) -> Answer:
        self.seen.append(rows)
        try:
            x = PREPARATION.transform(rows).x
        except ValueError as exc:
            raise BadRequest(str(exc), status=422) from None
        s = x.sum(axis=1, keepdims=True) / 100
        proba = np.concatenate([1 / (1 + np.exp(s)), 1 - 1 / (1 + np.exp(s))], axis=1).astype(np.float32)
        prediction = predicted_class(proba)
        return Answer(1, proba, prediction, class_labels(SIG.classes, prediction))


def columns_request(**overrides) -> dict:
    tensors = {"tenure": {"datatype": "INT64", "data": [3, 40]}, "total": {"datatype": "FP64", "data": [None, 99.5]},
               "contract": {"datatype": "BYTES", "data": ["crypto", None]},
               "senior": {"datatype": "BOOL", "data": [True, False]}, "plan": {"datatype": "INT64", "data": [2, 9]}}
    tensors.update(overrides)
    return {"inputs": [{"name": n, "shape": [len(t["data"])], **t} for n, t in tensors.items() if t is not None]}


@pytest.fixture
def backend():
    return MixedBackend()


def test_one_tensor_per_column_reaches_the_model_as_raw_values_through_both_fronts(backend):
    front = build_asgi(backend, 4096)
    for app in (front, front.fastapi):
        status, headers, answer = call(app, "POST", "/v2/models/churn/infer", json.dumps(columns_request()).encode())
        assert status == 200 and headers["x-model-version"] == "1", answer
        assert answer["outputs"][0]["shape"] == [2]
    assert backend.seen[0] == {"tenure": [3, 40], "total": [None, 99.5], "contract": ["crypto", None],
                               "senior": [True, False], "plan": [2, 9]}


@pytest.mark.parametrize("body, status, message", [
    (columns_request(contract={"datatype": "FP32", "data": [1.0, 2.0]}), 422,
     "input 'contract' is text: send it as BYTES, not 'FP32'"),
    (columns_request(senior={"datatype": "BYTES", "data": ["yes", "no"]}), 422, "'senior' is a boolean"),
    (columns_request(tenure={"datatype": "BYTES", "data": ["3", "4"]}), 422, "'tenure' is a number"),
    (columns_request(plan=None), 422, "missing column(s) ['plan']"),
    (columns_request(tenure={"datatype": "INT64", "data": [3]}), 400, "same number of rows"),
    (columns_request(total={"datatype": "FP64", "data": ["a lot", 1.0]}), 422, "'total' takes numbers"),
    (columns_request(contract={"datatype": "BYTES", "data": [7, "x"]}), 422, "'contract' takes string"),
    ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}, 422,
     "missing column(s)"),
])
def test_bad_column_input_is_a_4xx_naming_the_column(backend, body, status, message):
    got, _, payload = call(build_asgi(backend, 4096), "POST", "/v2/models/churn/infer", json.dumps(body).encode())
    assert got == status and message in payload["error"], payload


def test_binary_bytes_and_bools_as_tritonclient_sends_them(backend):
    texts = [b"month", b"\xc3\xa9t\xc3\xa9"]  # UTF-8, as tritonclient encodes np.object_ arrays
    blob = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
    bools = np.array([False, True]).tobytes()
    head = columns_request()
    for tensor in head["inputs"]:
        if tensor["name"] in ("contract", "senior"):
            del tensor["data"]
            tensor["parameters"] = {"binary_data_size": len(blob if tensor["name"] == "contract" else bools)}
    raw = json.dumps(head).encode()
    status, _, answer = call(build_asgi(backend, 4096), "POST", "/v2/models/churn/infer", raw + blob + bools,
                             {"inference-header-content-length": str(len(raw))})
    assert status == 200, answer
    assert backend.seen[0]["contract"] == ["month", "été"] and backend.seen[0]["senior"] == [False, True]


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["plan", "tenure", "total", "contract", "senior"],
                         "data": [[2, 3, None, "crypto", True], [9, 40, 99.5, None, False]]}},
    {"dataframe_records": [{"tenure": 3, "total": None, "contract": "crypto", "senior": True, "plan": 2},
                           {"tenure": 40, "total": 99.5, "contract": None, "senior": False, "plan": 9}]},
    {"instances": [[3, None, "crypto", True, 2], [40, 99.5, None, False, 9]]},
    {"inputs": {"tenure": [3, 40], "total": [None, 99.5], "contract": ["crypto", None], "senior": [True, False],
                "plan": [2, 9]}},
])
def test_mlflow_payloads_with_mixed_types_work_unchanged(backend, payload):
    status, _, answer = call(build_asgi(backend, 4096), "POST", "/v2/models/churn/invocations",
                             json.dumps(payload).encode())
    assert status == 200 and len(answer["predictions"]) == 2, answer
    assert backend.seen[0] == {"tenure": [3, 40], "total": [None, 99.5], "contract": ["crypto", None],
                               "senior": [True, False], "plan": [2, 9]}


def test_metadata_lists_every_column_with_its_datatype_and_known_categories(backend):
    status, _, meta = call(build_asgi(backend, 4096), "GET", "/v2/models/churn")
    assert status == 200
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert [i["name"] for i in meta["inputs"]] == ["tenure", "total", "contract", "senior", "plan"]
    assert inputs["contract"]["datatype"] == "BYTES" and inputs["senior"]["datatype"] == "BOOL"
    assert inputs["plan"]["datatype"] == "INT64" and inputs["tenure"]["datatype"] == "FP32"
    assert inputs["contract"]["parameters"] == {"kind": "categorical", "missing": "imputed",
                                                "categories": ["month", "two", "year"]}
    assert inputs["total"]["parameters"] == {"kind": "numeric", "missing": "imputed"}


def test_a_numeric_model_that_imputes_takes_null_and_one_that_does_not_refuses_it():
    from .test_http_app import OneModelBackend

    class Imputing(OneModelBackend):
        def signature(self, model):
            sig = super().signature(model)
            return ModelSignature(sig.name, sig.features, sig.classes, ("numeric",) * 3, (None,) * 3, True)

    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1.0, None, 3.0]}]}).encode()
    assert call(build_asgi(Imputing(), 4096), "POST", "/v2/models/m/infer", body)[0] == 200
    status, _, payload = call(build_asgi(OneModelBackend(), 4096), "POST", "/v2/models/m/infer", body)
    assert status == 422 and "NaN or infinite" in payload["error"]
