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
    (matrix(["x"] * 6), 422, "data must be numbers; got text, 'x'"),
    # what NumPy would read as numbers is refused: a client sending text or booleans got its encoding wrong
    (matrix([1, 2, "3", 4, 5, 6]), 422, "got text, '3' \\(send numbers, not strings\\)"),
    (matrix(["nan", 2, 3, 4, 5, 6]), 422, "got text, 'nan'"),
    (matrix([1, 2, 3, 4, 5, True]), 422, "got a boolean, 'True'"),
    ({"inputs": [{"name": f, "shape": [1], "datatype": "FP32", "data": v} for f, v in zip("abc", ["3", 2, 3])]}, 422,
     "input 'a': data must be numbers; got text, '3'"),  # one value, not in a list
    ({"inputs": [{"name": f, "shape": [1], "datatype": "FP32", "data": v} for f, v in zip("abc", [1, True, 3])]}, 422,
     "input 'b': data must be numbers; got a boolean"),
    (matrix([[1, 2, 3], [4, 5]]), 400, "nested lists of equal lengths"),
    (matrix([1, 2, float("nan"), 4, 5, 6]), 422, "1 value\\(s\\) are NaN, infinite.*row 0, column 2, is NaN or infinite"),
    (matrix([1, 2, 3, 4, 5, float("inf")]), 422, "NaN or infinite"),
    # beyond FP32: the model's float32 input would be infinite
    (matrix([1, 2, 1e39, 4, 5, 6]), 422, "column 2, is beyond FP32's range"),
    (matrix([1, 2, -1e300, 4, 5, 6], datatype="FP64"), 422, "beyond FP32's range"),
    (matrix([1, 2, 10**400, 4, 5, 6], datatype="INT64"), 422, "too large to be a number"),
    # an integer datatype's values are whole numbers in its range
    (matrix([1, 2, 1.7, 4, 5, 6], datatype="INT64"), 422, "1.7 is not a value of INT64"),
    (matrix([1, 2, -5, 4, 5, 6], datatype="UINT8"), 422, "-5 is not a value of UINT8 \\(whole numbers from 0 to 255\\)"),
    (matrix([1, 2, 300, 4, 5, 6], datatype="UINT8"), 422, "300 is not a value of UINT8"),
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
    # a column named twice: which value the model takes would be a guess
    ({"dataframe_split": {"columns": ["a", "b", "c", "a"], "data": [[1, 2, 3, 4]]}}, "column 'a' is named more than once"),
    ({"dataframe_records": [{"a": "1", "b": 2, "c": 3}]}, "got text, '1'"),
    ({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3e38 * 10]]}}, "beyond FP32's range"),
    ({"inputs": {"a": [True], "b": [2], "c": [3]}}, "got a boolean"),
    ({"instances": {"a": "nan", "b": 2, "c": 3}}, "got text, 'nan'"),
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


def test_the_classification_extension_is_refused_not_answered_with_something_else():
    """tritonclient's `InferRequestedOutput("probability", class_count=2)` asks for the top classes as text."""
    from serving.protocol import requested_outputs

    body = {"inputs": [], "outputs": [{"name": "probability", "parameters": {"classification": 2, "binary_data": True}}]}
    with pytest.raises(BadRequest, match="classification extension \\(class_count\\) is not supported") as exc:
        requested_outputs(body)
    assert exc.value.status == 400


@pytest.mark.parametrize("value, row", [("order#1", False), ("a#b", False), ("r1#0", True), ("r1#01", True),
                                         ("r1#1#2", True)])
def test_an_id_that_could_name_another_requests_row_is_refused(value, row):
    """A request "order" with two rows logs "order" and "order#1": a request id with # could be the same id."""
    from serving.protocol import check_request_id

    with pytest.raises(BadRequest, match="punctuation but #"):
        check_request_id(value, "'id'", row=row)
    assert check_request_id("order-7", "'id'") == "order-7" and check_request_id("order-7#12", "'id'", row=True)


def test_a_routing_key_may_hold_a_hash_it_names_no_row():
    from serving.protocol import check_routing_key

    assert check_routing_key("tenant#42", "header x-routing-key") == "tenant#42"
    with pytest.raises(BadRequest, match="is not a routing key"):
        check_routing_key("has space", "header x-routing-key")
