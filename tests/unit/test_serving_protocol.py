"""Request parsing: every accepted shape, and every bad input refused with a 4xx naming the problem."""

import numpy as np
import pytest

from serving.protocol import BadRequest, ModelSignature, infer_response, invocations_response, parse_infer, \
    parse_invocations

SIG = ModelSignature("m", ("a", "b", "c"), (0, 1))
ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def matrix(data, shape=(2, 3), datatype="FP32", name="features"):
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}


def test_one_2d_tensor_flat_or_nested():
    for data in (sum(ROWS, []), ROWS):
        x, rid = parse_infer({**matrix(data), "id": "r1"}, SIG)
        assert x.dtype == np.float32 and x.tolist() == ROWS and rid == "r1"


def test_one_tensor_per_named_feature_in_any_order():
    body = {"inputs": [{"name": f, "shape": [2], "datatype": "FP64", "data": [r[i] for r in ROWS]}
                       for i, f in reversed(list(enumerate("abc")))]}
    assert parse_infer(body, SIG)[0].tolist() == ROWS


@pytest.mark.parametrize("body, status, message", [
    (matrix(sum(ROWS, []), shape=(3, 2)), 400, "does not match \\[rows, 3\\]"),
    (matrix([1, 2, 3], shape=(2, 3)), 400, "needs 6 values, data has 3"),
    (matrix(sum(ROWS, []), datatype="BYTES"), 400, "datatype 'BYTES' is not supported"),
    (matrix(["x"] * 6), 400, "numbers only"),
    (matrix([1, 2, float("nan"), 4, 5, 6]), 422, "1 value\\(s\\) are NaN or infinite"),
    (matrix([1, 2, 3, 4, 5, float("inf")]), 422, "NaN or infinite"),
    (matrix([], shape=(0, 3)), 400, "the batch is empty"),
    ({"inputs": []}, 400, "non-empty list"),
    ([1, 2], 400, "JSON object"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}, 422, "missing feature\\(s\\) \\['b', 'c'\\]"),
    ({"inputs": [{"name": f, "shape": [1], "datatype": "FP32", "data": [1]} for f in "abcd"]}, 422,
     "unknown feature\\(s\\) \\['d'\\]"),
    (matrix(sum(ROWS, []), shape=(2, "x")), 400, "'shape' must be a list"),
])
def test_bad_oip_requests(body, status, message):
    with pytest.raises(BadRequest, match=message) as exc:
        parse_infer(body, SIG)
    assert exc.value.status == status


def test_the_four_mlflow_payloads():
    records = [dict(zip("abc", r)) for r in ROWS]
    bodies = [{"dataframe_split": {"columns": ["c", "a", "b"], "data": [[r[2], r[0], r[1]] for r in ROWS]}},
              {"dataframe_records": records}, {"instances": records}, {"instances": ROWS}, {"inputs": ROWS},
              {"inputs": {f: [r[i] for r in ROWS] for i, f in enumerate("abc")}}]
    for body in bodies:
        assert parse_invocations(body, SIG).tolist() == ROWS, body


@pytest.mark.parametrize("body, message", [
    ({}, "exactly one of"),
    ({"instances": ROWS, "inputs": ROWS}, "exactly one of"),
    ({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}, "missing feature"),
    ({"dataframe_records": [{"a": 1, "b": 2, "c": 3, "z": 4}]}, "unknown feature"),
    ({"dataframe_records": []}, "empty"),
    ({"instances": [[1, 2]]}, "each row must have 3 values"),
    ({"instances": [[1, 2, None]]}, "NaN or infinite"),
])
def test_bad_mlflow_payloads(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_invocations(body, SIG)


def test_responses_name_the_version_and_carry_class_and_probabilities():
    proba = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    prediction = np.array([0, 1])
    r, blobs = infer_response("m", 3, "r1", SIG, proba, prediction, np.array([0, 1]))
    assert blobs == []
    assert r["model_version"] == "3" and r["outputs"][0]["data"] == [0, 1]
    assert r["outputs"][1]["shape"] == [2, 2] and r["outputs"][2] == {"name": "label", "datatype": "INT64",
                                                                      "shape": [2], "data": [0, 1]}
    assert invocations_response(SIG, proba, prediction, np.array([0, 1]))["predictions"][1] == {
        "prediction": 1, "label": 1, "probability_0": pytest.approx(0.2), "probability_1": pytest.approx(0.8)}


def test_class_names_are_answered_as_the_user_named_them_in_json_and_binary():
    from serving.binary import encode_binary
    from training import class_labels

    sig = ModelSignature("m", ("a", "b", "c"), ("cat", "dog", "émeu"))
    proba = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], dtype=np.float32)
    prediction = np.array([2, 0])
    label = class_labels(sig.classes, prediction)
    r, blobs = infer_response("m", 1, "r", sig, proba, prediction, label, [("label", False), ("prediction", True)])
    assert r["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["émeu", "cat"]}
    assert r["outputs"][1]["parameters"]["binary_data_size"] == 16 and len(blobs) == 1
    assert encode_binary(label, "BYTES") == b"\x05\x00\x00\x00" + "émeu".encode()[:5] + b"\x03\x00\x00\x00cat"
    assert invocations_response(sig, proba, prediction, label)["predictions"][0]["probability_émeu"] == \
        pytest.approx(0.7)
    meta = sig.metadata([1])
    assert meta["parameters"]["classes"] == ["cat", "dog", "émeu"] and meta["outputs"][2]["datatype"] == "BYTES"
    assert ModelSignature("m", ("a",), (False, True)).label_datatype == "BOOL"


def test_metadata_lists_inputs_outputs_and_versions():
    meta = SIG.metadata([2, 3])
    assert meta["versions"] == ["2", "3"] and meta["inputs"][0]["shape"] == [-1, 3]
    assert [o["name"] for o in meta["outputs"]] == ["prediction", "probability", "label"]


REGRESSION_SIG = ModelSignature("price", ("a", "b", "c"), (), task="regression")


def test_a_regression_model_answers_one_prediction_output_in_its_units():
    from serving.protocol import requested_outputs

    outputs = np.array([[1234.5677], [-0.25]], dtype=np.float32)
    prediction, label = REGRESSION_SIG.read(outputs)
    assert label is None and prediction.dtype == np.float64
    r, blobs = infer_response("price", 2, "r1", REGRESSION_SIG, outputs, prediction, label)
    assert r["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [2, 1], "data": [1234.5677, -0.25]}]
    assert blobs == []
    r, blobs = infer_response("price", 2, "r1", REGRESSION_SIG, outputs, prediction, label,
                              requested_outputs({"parameters": {"binary_data_output": True}}, REGRESSION_SIG.outputs))
    assert np.frombuffer(blobs[0], dtype="<f4").tolist() == outputs.reshape(-1).tolist()
    assert invocations_response(REGRESSION_SIG, outputs, prediction, label) == {"predictions": [1234.5677, -0.25]}


def test_a_regression_model_has_no_class_outputs_to_ask_for():
    from serving.protocol import requested_outputs

    with pytest.raises(BadRequest, match=r"'probability' is not one of this model's outputs \['prediction'\]"):
        requested_outputs({"outputs": [{"name": "probability"}]}, REGRESSION_SIG.outputs)


def test_metadata_says_the_task():
    meta = REGRESSION_SIG.metadata([2])
    assert meta["parameters"]["task"] == "regression" and "classes" not in meta["parameters"]
    assert meta["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}]
    assert SIG.metadata([1])["parameters"]["task"] == "classification"
    assert [o["name"] for o in SIG.metadata([1])["outputs"]] == ["prediction", "probability", "label"]


def test_the_signature_a_replica_reports_carries_its_task():
    info = {"features": ["a", "b", "c"], "classes": [], "task": "regression"}
    assert ModelSignature.of_info("price", info).regression
    assert not ModelSignature.of_info("m", {"features": ["a"], "classes": [0, 1]}).regression  # before tasks
