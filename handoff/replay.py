"""Held-out rows replayed as live traffic with labels: what `make demo` drives the closed loop with.

One client on 127.0.0.1 (a kept-alive HTTP connection): every request carries one row and its own
id; the true labels follow in batches through the feedback route, as a labelling pipeline would
send them. At `change_at` requests the data changes the way real data does (`Recalibration`: a
sensor that now reads offset and scaled; the labels stay true to what is measured). Every answer is
counted: its version, whether it was right, and whether it failed, before and after the change.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Recalibration:
    """Feature j now reads value·scale + offset (by feature name)."""

    changes: dict[str, tuple[float, float]]

    def apply(self, features: list[str], x: np.ndarray) -> np.ndarray:
        out = x.copy()
        for name, (scale, offset) in self.changes.items():
            j = features.index(name)
            out[:, j] = out[:, j] * scale + offset
        return out

    def describe(self) -> str:
        return ", ".join(f"{n} reads ×{s:g} {'+' if o >= 0 else '−'} {abs(o):g}" for n, (s, o) in self.changes.items())


@dataclass
class Tally:
    """Answers counted: failed, right (a class), or for a regression model their squared errors."""

    requests: int = 0
    failed: int = 0
    right: int = 0
    squared_error_sum: float = 0.0
    by_version: dict = field(default_factory=dict)  # version → [answers, right, squared error sum]

    def add(self, version: int | None, correct: bool | None, error: float | None = None) -> None:
        self.requests += 1
        if version is None:
            self.failed += 1
            return
        entry = self.by_version.setdefault(version, [0, 0, 0.0])
        entry[0] += 1
        if correct:
            entry[1] += 1
            self.right += 1
        if error is not None:
            entry[2] += error * error
            self.squared_error_sum += error * error

    @property
    def accuracy(self) -> float | None:
        answered = self.requests - self.failed
        return self.right / answered if answered else None

    @property
    def rmse(self) -> float | None:
        answered = self.requests - self.failed
        return (self.squared_error_sum / answered) ** 0.5 if answered else None

    def version_rmse(self, version: int) -> float | None:
        answers, _, squared = self.by_version.get(version, (0, 0, 0.0))
        return (squared / answers) ** 0.5 if answers else None


class LiveReplay:
    """Sends `x` (cycled) to the model's gateway one row a request, labels after every `label_batch`."""

    def __init__(self, port: int, model: str, features: list[str], x: np.ndarray, labels: list,
                 change: Recalibration | None = None, change_at: int | None = None, label_batch: int = 50,
                 prefix: str = "replay", headers: dict | None = None):
        """`headers` go with every request (an API key: `{"x-api-key": KEY}`)."""
        self.port, self.model, self.features = port, model, features
        self.headers = dict(headers or {})
        self.x, self.labels, self.change, self.change_at = x.astype(np.float32), labels, change, change_at
        self.changed_x = change.apply(features, self.x) if change else self.x
        self.label_batch, self.prefix = label_batch, prefix
        self.sent = 0
        self.windows: list[Tally] = []      # a tally per `window` requests (what the demo's progress shows)
        self.before, self.after = Tally(), Tally()
        self.changed_at_time: float | None = None
        self._pending: list[dict] = []
        self._conn: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        self.errors: list[str] = []

    def _post(self, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
        for attempt in range(2):  # a dropped keep-alive connection is reopened once; never a retried answer
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self._conn.request("POST", path, json.dumps(body), {"content-type": "application/json",
                                                                    **self.headers, **(headers or {})})
                response = self._conn.getresponse()
                payload = response.read()
                return response.status, dict(response.getheaders()), json.loads(payload) if payload else {}
            except (ConnectionError, http.client.HTTPException, OSError):
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def step(self) -> tuple[int | None, bool | None, float | None]:
        """One request (and a label batch when due): the version that answered (None: it failed),
        whether it was right, or for a regression model its error (answer − truth); counted in the
        tally of its phase (before or after the change)."""
        i = self.sent
        changed = self.change_at is not None and i >= self.change_at
        if self.change_at is not None and i == self.change_at:
            self.changed_at_time = time.time()
        tally = self.after if self.change_at is not None and i >= self.change_at else self.before
        request_id = f"{self.prefix}-{i}"
        truth = self.labels[i % len(self.labels)]
        try:
            status, headers, answer = self._post(f"/v2/models/{self.model}/infer", self._payload(i, changed),
                                                 {"x-request-id": request_id})
        except Exception as exc:  # noqa: BLE001 - a failed request is what the demo counts
            status, headers, answer = 599, {}, {"error": str(exc)}
        version = correct = error = None
        if status == 200:
            outputs = {o["name"]: o["data"] for o in answer["outputs"]}
            version = int(headers.get("x-model-version", 0))
            if "label" in outputs:
                correct = outputs["label"][0] == truth
            else:  # a regression model: its predicted value
                error = float(outputs["prediction"][0]) - float(truth)
            self._pending.append({"request_id": request_id, "label": truth})
        else:
            self.errors.append(f"request {i}: {status} {answer.get('error', '')}"[:300])
        tally.add(version, correct, error)
        self.sent += 1
        if len(self._pending) >= self.label_batch:
            self.flush_labels()
        return version, correct, error

    def _payload(self, i: int, changed: bool) -> dict:
        """The OIP request of the `i`-th row: one FP32 `features` tensor."""
        row = (self.changed_x if changed else self.x)[i % len(self.x)]
        return {"inputs": [{"name": "features", "shape": [1, len(self.features)], "datatype": "FP32",
                            "data": row.tolist()}]}

    def flush_labels(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        status, _, answer = self._post(f"/v2/models/{self.model}/feedback", {"labels": batch})
        if status != 200:
            self.errors.append(f"labels: {status} {answer.get('error', '')}"[:300])

    def run(self, requests: int | None = None, seconds: float | None = None,
            until=lambda: False, window: int = 500, on_window=lambda t: None) -> None:
        """Send until `requests` are sent, `seconds` pass, `until()` is true or `stop()` is called;
        `on_window` hears a tally of every `window` requests."""
        deadline = time.monotonic() + seconds if seconds else None
        current = Tally()
        while not self._stop.is_set():
            if requests is not None and self.sent >= requests or deadline and time.monotonic() > deadline or until():
                break
            current.add(*self.step())
            if current.requests >= window:
                self.windows.append(current)
                on_window(current)
                current = Tally()
        self.flush_labels()

    def stop(self) -> None:
        self._stop.set()


def oip_datatype(series) -> str:
    """The OIP datatype a client sends a raw column as: BYTES for text, BOOL, INT64, else FP64."""
    import pandas as pd

    values = series.dropna()
    if not pd.api.types.is_object_dtype(series.dtype):
        values = values.astype(object)
    kinds = set(values.map(lambda v: "BOOL" if isinstance(v, (bool, np.bool_)) else
                           "INT64" if isinstance(v, (int, np.integer)) else
                           "FP64" if isinstance(v, (float, np.floating)) else "BYTES"))
    if len(kinds) == 1:
        return kinds.pop()
    return "FP64" if kinds == {"INT64", "FP64"} else "BYTES"


class TableReplay(LiveReplay):
    """`LiveReplay` of raw rows (a frame of the feature columns as a client has them: text, booleans,
    integer codes, gaps as None), one OIP tensor per column named after it; `change` turns the frame
    into what clients send after the change (a renamed category, a column arriving empty)."""

    def __init__(self, port: int, model: str, frame, labels: list, change=None, change_at: int | None = None,
                 label_batch: int = 50, prefix: str = "replay", headers: dict | None = None):
        features = list(frame.columns)
        super().__init__(port, model, features, np.zeros((len(frame), 0)), labels, None, change_at, label_batch,
                         prefix, headers)
        self.datatypes = {c: oip_datatype(frame[c]) for c in features}
        self.rows = self._records(frame)
        self.changed_rows = self._records(change(frame.copy())) if change else self.rows

    def _records(self, frame) -> list[list]:
        def plain(c, v):
            if v is None or (isinstance(v, float) and v != v):
                return None
            kind = self.datatypes[c]
            return bool(v) if kind == "BOOL" else int(v) if kind == "INT64" else float(v) if kind == "FP64" else str(v)

        columns = list(frame.columns)
        return [[plain(c, v) for c, v in zip(columns, row)] for row in frame.astype(object).itertuples(index=False)]

    def _payload(self, i: int, changed: bool) -> dict:
        row = (self.changed_rows if changed else self.rows)[i % len(self.rows)]
        return {"inputs": [{"name": c, "shape": [1], "datatype": self.datatypes[c], "data": [v]}
                           for c, v in zip(self.features, row)]}
