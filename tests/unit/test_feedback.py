"""Label feedback: the pure check of a batch, the file it becomes, and the HTTP route's answers."""

import json

import pyarrow.parquet as pq
import pytest

from serving.feedback import FeedbackLog, feedback_dir, parse_feedback
from serving.http_app import build_asgi
from serving.protocol import BadRequest, ModelSignature
from tests.unit.test_http_app import OneModelBackend, call


def test_a_batch_keeps_ids_and_maps_labels_to_class_indices():
    labels = parse_feedback({"labels": [{"request_id": "a", "label": "dog"}, {"request_id": "a#1", "label": "cat"}]},
                            ("cat", "dog"))
    assert labels.request_ids == ["a", "a#1"] and labels.class_index == [1, 0] and labels.labels == ["dog", "cat"]


@pytest.mark.parametrize("classes, sent, index", [
    ((0, 1), 1, 1), ((0, 1), "1", 1), ((0, 1), 1.0, 1), ((False, True), True, 1), ((False, True), "true", 1),
    ((False, True), "False", 0), (("no", "yes"), "yes", 1)])
def test_labels_match_the_classes_as_json_and_as_csv_text(classes, sent, index):
    assert parse_feedback([{"request_id": "r", "label": sent}], classes).class_index == [index]


@pytest.mark.parametrize("classes, sent", [((0, 1), True), ((0, 1), 2), ((False, True), 1), (("no", "yes"), "No"),
                                           (("no", "yes"), None), ((0, 1), 0.5), ((0, 1), [1])])
def test_a_label_that_is_not_a_class_is_named(classes, sent):
    with pytest.raises(BadRequest, match="not one of the model's classes") as err:
        parse_feedback([{"request_id": "r1", "label": sent}], classes)
    assert err.value.status == 422 and "r1" in str(err.value)


def test_every_bad_entry_is_counted_and_the_first_named_and_nothing_is_kept():
    items = [{"request_id": "", "label": "yes"}, {"request_id": 7, "label": "yes"}, {"label": "yes"},
             {"request_id": "x" * 300, "label": "yes"}, {"request_id": "ok", "label": "yes", "extra": 1},
             {"request_id": "d", "label": "yes"}, {"request_id": "d", "label": "no"}, {"request_id": "fine", "label": "no"}]
    with pytest.raises(BadRequest) as err:
        parse_feedback({"labels": items}, ("no", "yes"))
    message = str(err.value)
    assert message.startswith("6 bad feedback entries") and "and 1 more" in message and "entry 1: request_id 7" in message


def test_the_same_id_twice_with_the_same_label_counts_once():
    labels = parse_feedback([{"request_id": "a", "label": "yes"}, {"request_id": "a", "label": "yes"}], ("no", "yes"))
    assert labels.request_ids == ["a"]


@pytest.mark.parametrize("payload", [{}, {"labels": []}, {"labels": {"a": 1}}, "labels", 3])
def test_a_body_of_the_wrong_shape_is_a_400(payload):
    with pytest.raises(BadRequest, match="at least one label") as err:
        parse_feedback(payload, ("no", "yes"))
    assert err.value.status == 400


def test_a_written_batch_is_one_parquet_file_with_no_leftovers(tmp_path):
    log = FeedbackLog(str(tmp_path))
    path = log.write("m", parse_feedback([{"request_id": "a", "label": "dog"}], ("cat", "dog")))
    table = pq.read_table(path)
    assert table.column_names == ["request_id", "label", "class_index", "ts"] and table.num_rows == 1
    files = [p for p in (tmp_path / "_feedback" / "model=m").rglob("*") if p.is_file()]
    assert files == [tmp_path / path.split(str(tmp_path) + "/")[-1]] and not any(f.name.startswith(".") for f in files)
    assert feedback_dir(str(tmp_path), "m").endswith("_feedback/model=m")


class FeedbackBackend(OneModelBackend):
    def __init__(self, root):
        self.log = FeedbackLog(root)

    async def feedback(self, model, payload):
        labels = parse_feedback(payload, self.signature(model).classes)
        self.log.write(model, labels)
        return {"model": model, "accepted": len(labels)}


def test_the_feedback_route_writes_accepted_labels_and_refuses_bad_ones(tmp_path):
    app = build_asgi(FeedbackBackend(str(tmp_path)), max_body_bytes=4096)
    good = json.dumps({"labels": [{"request_id": "r1", "label": "dog"}]}).encode()
    assert call(app, "POST", "/v2/models/m/feedback", good)[::2] == (200, {"model": "m", "accepted": 1})
    status, _, body = call(app, "POST", "/v2/models/m/feedback", json.dumps([{"request_id": "r1", "label": "cow"}]).encode())
    assert status == 422 and "'cow'" in body["error"] and "r1" in body["error"]
    assert call(app, "POST", "/v2/models/nope/feedback", good)[0] == 404
    assert call(app, "POST", "/v2/models/m/feedback", b"{nope")[0] == 400
    assert call(app, "POST", "/v2/models/m/feedback", b"x" * 5000)[0] == 413
    assert call(app, "GET", "/v2/models/m/feedback")[0] == 405
    assert len(list((tmp_path / "_feedback").rglob("*.parquet"))) == 1
    keyed = build_asgi(FeedbackBackend(str(tmp_path)), 4096, frozenset({"k"}))
    assert call(keyed, "POST", "/v2/models/m/feedback", good)[0] == 401
    assert call(keyed, "POST", "/v2/models/m/feedback", good, {"x-api-key": "k"})[0] == 200


def test_a_regression_models_labels_are_numbers_and_anything_else_is_named():
    labels = parse_feedback({"labels": [{"request_id": "a", "label": 1250.5}, {"request_id": "a#1", "label": 3},
                                        {"request_id": "a", "label": 1250.5}]}, (), regression=True)
    assert labels.request_ids == ["a", "a#1"] and labels.values == [1250.5, 3.0]
    for bad in ("1250.5", True, None, [1]):
        with pytest.raises(BadRequest, match="is not a number") as exc:
            parse_feedback([{"request_id": "r", "label": bad}], (), regression=True)
        assert exc.value.status == 422
    with pytest.raises(BadRequest, match="labelled twice, differently"):
        parse_feedback([{"request_id": "r", "label": 1}, {"request_id": "r", "label": 2}], (), regression=True)


def test_a_regression_label_file_holds_the_values(tmp_path):
    import pyarrow.parquet as pq

    path = FeedbackLog(str(tmp_path)).write("price", parse_feedback([{"request_id": "r", "label": 2.5}], (),
                                                                    regression=True))
    table = pq.read_table(path)
    assert table.column("value").to_pylist() == [2.5] and table.column("class_index").to_pylist() == [-1]
