"""Label tables as users have them, through `handoff feedback` and the gateway's check: read as written,
refused with exit code 2 (or a 422) naming the problem, never a traceback or a quiet guess (pure: the
gateway is a fake `urlopen`, no server, no Ray)."""

from __future__ import annotations

import decimal
import io
import json
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from handoff.cli import app
from handoff.feedback_command import read_labels
from monitoring.labels import label_stats
from serving.feedback import parse_feedback
from serving.protocol import BadRequest


class _Answer(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def gateway(monkeypatch):
    """The requests `handoff feedback` sends: (url, body bytes) each, answered as the gateway does."""
    sent = []

    def urlopen(request, timeout=None):
        import http.client

        http.client.HTTPConnection._validate_path(None, request.selector)  # what a real request checks first
        sent.append((request.full_url, request.data))
        labels = json.loads(request.data)["labels"]
        return _Answer(json.dumps({"accepted": len({e["request_id"] for e in labels})}).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return sent


def feedback(*args: str):
    return CliRunner().invoke(app, ["feedback", *args], terminal_width=200)


def refused(result, *words: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    said = " ".join(result.output.split())
    for word in words:
        assert word in said, said


def test_a_csv_is_read_as_written_ids_keep_leading_zeros_and_labels_their_text(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n00123,007\n00124,7\n00125,-2.5\n00126,2024-01-01\n00127,yes\n")
    ids, labels = read_labels(path, "request_id", "label")
    assert ids == ["00123", "00124", "00125", "00126", "00127"]
    assert labels == ["007", 7, -2.5, "2024-01-01", "yes"]


def test_a_csv_label_that_is_a_date_is_sent_as_text_not_a_traceback(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\na,2024-01-01\nb,2024-01-02\n")
    result = feedback("m", str(path))
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(gateway[0][1])["labels"] == [{"request_id": "a", "label": "2024-01-01"},
                                                   {"request_id": "b", "label": "2024-01-02"}]


def test_a_csv_that_is_not_utf8_is_refused_by_name(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"request_id,label\na,caf\xe9\n")
    refused(feedback("m", str(path)), "invalid UTF8")
    assert gateway == []


@pytest.mark.parametrize("text, row", [("request_id,label\na,1\n,0\n", 2), ("request_id,label\n,1\n", 1)])
def test_a_csv_row_without_an_id_is_refused_naming_it(tmp_path, gateway, text, row):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    refused(feedback("m", str(path)), "no id in 1 row(s)", f"data row {row}")
    assert gateway == []


@pytest.mark.parametrize("ids, words", [
    (pa.array([1, None], pa.int64()), ["no id in 1 row(s)", "data row 2"]),
    (pa.array([1.0, 2.0]), ["holds double", "read as floats"]),
    (pa.array([b"a", b"b"]), ["holds binary"]),
])
def test_a_parquet_id_column_that_is_not_text_or_whole_numbers_is_refused(tmp_path, gateway, ids, words):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ids, "label": [1, 0]}), path)
    refused(feedback("m", str(path)), *words)
    assert gateway == []


def test_a_parquet_id_column_of_whole_numbers_or_categories_is_sent_as_text(tmp_path):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": pa.array([17, 18]), "label": pa.array(["a", "b"]).dictionary_encode()}),
                   path)
    assert read_labels(path, "request_id", "label") == (["17", "18"], ["a", "b"])


@pytest.mark.parametrize("labels", [pa.array([decimal.Decimal("1.5")] * 2), pa.array([0, 1], pa.date32()),
                                    pa.array([b"x", b"y"])])
def test_a_parquet_label_column_json_cannot_carry_is_refused_not_a_traceback(tmp_path, gateway, labels):
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["a", "b"], "label": labels}), path)
    refused(feedback("m", str(path)), f"holds {labels.type}", "numbers, booleans or text")
    assert gateway == []


def test_a_column_named_twice_is_refused_not_a_traceback(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label,label\na,1,0\n")
    refused(feedback("m", str(path)), "['label'] appear more than once")
    assert gateway == []


def test_a_json_file_is_refused_as_json_not_read_as_csv(tmp_path, gateway):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"request_id": "a", "label": 1}\n')
    refused(feedback("m", str(path)), "JSON is not read here", "Parquet or CSV")
    assert gateway == []


def test_an_id_labelled_differently_in_two_batches_is_refused_before_any_is_sent(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(5_000)) + "r0,1\n")
    refused(feedback("m", str(path)), "1 id(s) are labelled differently in the file: 'r0'")
    assert gateway == []


def test_an_id_repeated_with_the_same_label_is_sent_once_and_counted_as_repeated(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(5_000)) + "r0,0\n")
    result = feedback("m", str(path))
    assert result.exit_code == 0 and "5000 label(s) accepted (1 repeated in the file)" in result.output
    assert sum(len(json.loads(body)["labels"]) for _, body in gateway) == 5_000


def test_batches_of_long_ids_stay_under_the_gateways_default_body_limit(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\n" + "".join(f"{'x' * 240}-{i:08d},class_{i % 7}\n" for i in range(6_000)))
    result = feedback("m", str(path))
    assert result.exit_code == 0, result.output
    assert all(len(body) < 1_000_000 for _, body in gateway)
    assert sum(len(json.loads(body)["labels"]) for _, body in gateway) == 6_000


def test_a_model_name_with_a_space_or_a_question_mark_is_quoted_in_the_route(tmp_path, gateway):
    path = tmp_path / "labels.csv"
    path.write_text("request_id,label\na,1\n")
    for name, route in (("my model", "my%20model"), ("a?b", "a%3Fb")):
        result = feedback(name, str(path))
        assert result.exit_code == 0, (result.output, result.exception)
        assert gateway[-1][0] == f"http://127.0.0.1:8000/v2/models/{route}/feedback"


@pytest.mark.parametrize("sent, index", [("TRUE", 1), ("FALSE", 0), ("tRuE", 1)])
def test_boolean_classes_are_named_in_any_case(sent, index):
    assert parse_feedback([{"request_id": "r", "label": sent}], (False, True)).class_index == [index]


@pytest.mark.parametrize("value", [1e300, -3.5e38, 10 ** 39])
def test_a_regression_label_beyond_fp32_is_refused_so_live_rmse_stays_finite(value):
    with pytest.raises(BadRequest, match="is not a number within") as err:
        parse_feedback([{"request_id": "r", "label": value}], (), regression=True)
    assert err.value.status == 422
    top = parse_feedback([{"request_id": "r", "label": 3.4e38}], (), regression=True).values
    stats = label_stats(np.array([-3.4e38]), None, np.array(top), regression=True)
    assert np.isfinite(stats["squared_error_sum"])
