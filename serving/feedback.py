"""Label feedback: the true class of answered rows, sent back later and kept beside the live log.

`POST /v2/models/{name}/feedback` takes `{"labels": [{"request_id": ID, "label": CLASS}, ...]}`: an
id is a live-log row id (the request's `id`/`x-request-id` for its first row, `ID#1`, `ID#2`, … for
the others) and a label one of the model's classes as the user named them, or for a regression
model the true value (a finite JSON number). `parse_feedback` (pure)
checks a batch and names every bad entry; `FeedbackLog` writes an accepted batch as one Parquet file
under `ROOT/_feedback/model=NAME/date=DAY/` (the leading `_` keeps it out of readers of the live
log's partitions), written beside and moved into place, so a reader never sees half a file. The
same id sent again is idempotent: the monitor keeps one label per id (the latest file's).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage import filesystem, join, publish, staging_path
from serving.protocol import FP32_MAX, BadRequest, check_request_id

FEEDBACK_DIR = "_feedback"
SHOWN = 5  # bad entries named in one error message


def feedback_dir(root: str, model: str) -> str:
    """Where one model's label files live under the live-log root."""
    return join(join(root, FEEDBACK_DIR), f"model={model}")


@dataclass(frozen=True)
class Labels:
    """An accepted batch: row ids, each label as sent (text) and its class index; for a regression
    model the true values instead of class indices."""

    request_ids: list[str]
    labels: list[str]
    class_index: list[int]
    values: list[float] | None = None  # regression: the true value of each row

    def __len__(self) -> int:
        return len(self.request_ids)


def _class_keys(classes: tuple) -> dict[str, int]:
    """Each class under the text it may arrive as: its own text (`"1"` for 1, `"yes"`), and for
    booleans `true`/`false` in any case (JSON's `true` and a CSV's `True` alike)."""
    keys = {}
    for i, c in enumerate(classes):
        keys[str(c)] = i
        if isinstance(c, bool):
            keys[str(c).lower()] = i
    return keys


def _label_key(label, classes: tuple) -> str | None:
    """The text a sent label is looked up by; None when its JSON type cannot be a class of the model."""
    if isinstance(label, bool):
        return str(label) if isinstance(classes[0], bool) else None
    if isinstance(label, str) and classes and isinstance(classes[0], bool):
        return label.lower()  # `TRUE`, `False`: booleans are named in any case
    if isinstance(label, (int, str)):
        return str(label)
    if isinstance(label, float) and label.is_integer() and not isinstance(classes[0], str):
        return str(int(label))
    return None


def _refuse(problems: list[str], what: str) -> None:
    if problems:
        more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise BadRequest(f"{len(problems)} {what}: {'; '.join(problems[:SHOWN])}{more}", status=422)


def _true_value(label) -> float | None:
    """A regression label's value: a JSON number (not a boolean, not text) within FP32's range, as
    training takes the values to predict (the model predicts a float32, and the squared errors of live
    RMSE stay finite); None otherwise."""
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        return None
    try:
        value = float(label)
    except OverflowError:  # a JSON integer past a float's range (10**400)
        return None
    return value if abs(value) <= FP32_MAX else None  # NaN and ±inf fail it too


def parse_feedback(payload, classes: tuple, regression: bool = False) -> Labels:
    """The batch in `payload` checked against the model's `classes` (for a `regression` model: each
    label a finite number). 400 for a body of the wrong shape, 422 naming the bad ids and labels (no
    part of a bad batch is kept); an id repeated in the batch with the same label counts once, with
    two different labels it is refused."""
    items = payload.get("labels") if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise BadRequest('send {"labels": [{"request_id": "...", "label": ...}, ...]} with at least one label')
    if regression:
        return _parse_values(items)
    keys = _class_keys(classes)
    seen: dict[str, int] = {}
    ids, texts, index, problems = [], [], [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"request_id", "label"} or "label" not in item:
            problems.append(f"entry {i} is not an object with request_id and label")
            continue
        rid, label = item.get("request_id"), item["label"]
        try:
            check_request_id(rid if rid is not None else "", f"entry {i}: request_id", row=True)
        except BadRequest as exc:
            problems.append(str(exc))
            continue
        key = _label_key(label, classes)
        if key is None or key not in keys:
            problems.append(f"entry {i} ({rid}): label {label!r} is not one of the model's classes "
                            f"{list(classes)}")
            continue
        if rid in seen:
            if seen[rid] != keys[key]:
                problems.append(f"entry {i}: request_id {rid!r} is labelled twice, differently")
            continue
        seen[rid] = keys[key]
        ids.append(rid)
        texts.append(str(classes[keys[key]]))
        index.append(keys[key])
    _refuse(problems, "bad feedback entr" + ("y" if len(problems) == 1 else "ies"))
    return Labels(ids, texts, index)


def _parse_values(items: list) -> Labels:
    """A regression model's labels: each entry's row id and its true value (a finite number)."""
    seen: dict[str, float] = {}
    problems = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"request_id", "label"} or "label" not in item:
            problems.append(f"entry {i} is not an object with request_id and label")
            continue
        rid, label = item.get("request_id"), item["label"]
        try:
            check_request_id(rid if rid is not None else "", f"entry {i}: request_id", row=True)
        except BadRequest as exc:
            problems.append(str(exc))
            continue
        value = _true_value(label)
        if value is None:
            problems.append(f"entry {i} ({rid}): label {label!r} is not a number within ±{FP32_MAX:.4g} (this "
                            "model predicts a number; send the true value as a finite JSON number)")
            continue
        if rid in seen and seen[rid] != value:
            problems.append(f"entry {i}: request_id {rid!r} is labelled twice, differently")
            continue
        seen[rid] = value
    _refuse(problems, "bad feedback entr" + ("y" if len(problems) == 1 else "ies"))
    return Labels(list(seen), [repr(v) for v in seen.values()], [-1] * len(seen), list(seen.values()))


def labels_table(labels: Labels, now: datetime) -> pa.Table:
    """One accepted batch as written: ids, labels as text, class indices (-1 for regression) and,
    for a regression model, the true values (`value`, float64)."""
    columns = {"request_id": pa.array(labels.request_ids, pa.string()),
               "label": pa.array(labels.labels, pa.string()),
               "class_index": pa.array(labels.class_index, pa.int64())}
    if labels.values is not None:
        columns["value"] = pa.array(labels.values, pa.float64())
    columns["ts"] = pa.array([now.replace(tzinfo=None)] * len(labels), pa.timestamp("ms", tz="UTC"))
    return pa.table(columns)


class FeedbackLog:
    """Writes accepted label batches, one Parquet file each, moved into place whole."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.base = filesystem(root)
        self.labels_written = 0

    def write(self, model: str, labels: Labels) -> str:
        """Write `labels` now (the request is answered after they are on disk); the file's path."""
        now = datetime.now(timezone.utc)
        directory = join(feedback_dir(self.base, model), f"date={now:%Y-%m-%d}")
        name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
        self.fs.create_dir(directory, recursive=True)
        final = join(directory, name)
        tmp = staging_path(self.fs, final)
        pq.write_table(labels_table(labels, now), tmp, filesystem=self.fs)
        publish(self.fs, tmp, final)
        self.labels_written += len(labels)
        return final
