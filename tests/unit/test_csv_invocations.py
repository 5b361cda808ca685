"""A `text/csv` body at /invocations, as MLflow's scoring server takes one (in-process, no Ray): each
cell read as its column holds it, the answers those of the same rows sent as JSON, and a CSV that
cannot be read, or a cell its column does not hold, refused with a 4xx naming it."""

from __future__ import annotations

import json

import pytest

from serving.csv_in import csv_split
from serving.http_app import build_asgi

from .test_http_app import APPS, call
from .test_mixed_serving import SIG as MIXED
from .test_mixed_serving import MixedBackend

CSV = {"content-type": "text/csv; charset=utf-8"}


def invocations(app, body: bytes, headers=None, model: str = "m"):
    return call(app, "POST", f"/v2/models/{model}/invocations", body, headers or CSV)


@pytest.mark.parametrize("front", APPS)
def test_a_csv_body_gets_the_answers_of_the_same_rows_sent_as_json(front):
    app = APPS[front]
    as_json = invocations(app, json.dumps({"dataframe_split": {"columns": ["f1", "f2", "f3"], "data": [
        [1.0, 2.0, 3.0], [10.0, -0.5, 2.0]]}}).encode(), {"content-type": "application/json"})
    # columns in another order, a byte-order mark, CRLF, a blank line and scientific notation, as spreadsheets write
    as_csv = invocations(app, b"\xef\xbb\xbff3,f1,f2\r\n3,1,2\r\n\r\n+2,1e1,-.5\r\n")
    assert as_csv[0] == 200 and as_csv[2] == as_json[2]


@pytest.mark.parametrize("body, status, words", [
    (b"f1,f2,f3\n1,2,abc\n", 422, ["text/csv", "'abc'"]),
    (b"f1,f2,f3\n1,2,nan\n", 422, ["text/csv", "'nan'"]),           # read as text, never as NaN
    (b"f1,f2,f3\n1,2,1_000\n", 422, ["text/csv", "'1_000'"]),       # Python's float() would take it
    (b"f1,f2,f3\n1,2\n", 400, ["line 2", "2 cell(s)", "header names 3"]),
    (b"1,2,3\n4,5,6\n", 422, ["first line must name the columns", "f1, f2, f3"]),
    (b"", 400, ["empty"]),
    (b"f1,f2,f3\n", 400, ["empty", "at least one row"]),
    (b'f1,f2,f3\n"1,2,3\n', 400, ["not readable as CSV"]),
    (b"f1,f2,f3\n\xff,1,2\n", 400, ["not UTF-8"]),
    (b"f1,f2,f3,f4\n1,2,3,4\n", 422, ["unknown feature(s) ['f4']"]),
    (b"f1,f2,f1\n1,2,3\n", 400, ["'f1' is named more than once"]),
])
def test_a_csv_that_cannot_be_read_as_the_models_rows_is_refused_naming_why(body, status, words):
    for app in APPS.values():
        got, _, answer = invocations(app, body)
        assert got == status, answer
        assert all(w in answer["error"] for w in words), answer


def test_each_cell_is_read_as_its_column_holds_it_and_empty_is_missing():
    payload = csv_split(b"tenure,total,contract,senior,plan\n3,,007,TRUE,2\n40,99.5,,false,09\n", MIXED)
    assert payload == {"dataframe_split": {"columns": ["tenure", "total", "contract", "senior", "plan"], "data": [
        [3.0, None, "007", True, 2], [40.0, 99.5, None, False, 9]]}}
    # a cell its column does not hold stays text, for the shared parser to refuse by name
    assert csv_split(b"plan,senior\ntwo,yes\n", MIXED)["dataframe_split"]["data"] == [["two", "yes"]]
    # a number in an integer column is a number, whole (pandas' 3.0) or not (refused where codes are read)
    assert csv_split(b"plan\n3.0\n2.5\n", MIXED)["dataframe_split"]["data"] == [[3.0], [2.5]]


def test_a_model_with_categorical_columns_answers_csv_as_it_answers_json():
    backend = MixedBackend()
    front = build_asgi(backend, 4096)
    as_json = invocations(front, json.dumps({"dataframe_records": [
        {"tenure": 3, "total": None, "contract": "month", "senior": True, "plan": 2}]}).encode(),
        {"content-type": "application/json"}, model="churn")
    as_csv = invocations(front, b"plan,senior,contract,total,tenure\n2,True,month,,3\n", model="churn")
    assert as_csv[0] == 200 and as_csv[2] == as_json[2], as_csv
    # an integer code as pandas writes an integer column with a gap: 2.0 is the code 2
    assert invocations(front, b"plan,senior,contract,total,tenure\n2.0,True,month,,3\n", model="churn")[2] == as_json[2]
    for cell in (b"x", b"2.5"):
        refused = invocations(front, b"plan,senior,contract,total,tenure\n" + cell + b",True,month,,3\n", model="churn")
        assert refused[0] == 422 and "plan" in refused[2]["error"] and cell.decode() in refused[2]["error"], refused


def test_integer_codes_written_as_3_and_as_3_0_in_one_large_body_are_the_same_codes():
    """Past 256 rows a column is encoded by pandas, which names a mix of ints and whole floats
    neither integer nor floating: it was a 503 (StopIteration), for a body every other way accepted."""
    backend = MixedBackend()
    front = build_asgi(backend, 1 << 20)
    lines = [b"plan,senior,contract,total,tenure"] + [b"%s,True,month,,3" % (b"2" if i % 2 else b"2.0")
                                                        for i in range(300)]
    status, _, answer = invocations(front, b"\n".join(lines) + b"\n", model="churn")
    assert status == 200 and len(answer["predictions"]) == 300, answer
    assert len({json.dumps(p) for p in answer["predictions"]}) == 1
