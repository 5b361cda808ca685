"""The live log: one Parquet row per answered request, written in batches off the request path.

Row contract (ARCHITECTURE.md): `request_id, ts, model, version, routing_key, <features...>,
prediction, label, latency_ms`, plus `shadow` (true for a mirrored version's answer); `label` is
the class as the user named it. Files land under
`ROOT/model=NAME/date=YYYY-MM-DD/part-*.parquet` on a local path or any pyarrow filesystem URI;
`model` and `date` are Hive partition keys (read back as columns by `pyarrow.dataset` with
`partitioning="hive"` and by Ray Data), so the files themselves do not repeat them.

The request path only appends a tuple to an in-memory buffer; a writer thread turns buffers into
files every `flush_seconds` or `max_rows`; `close()` writes what is left, so a clean shutdown loses
no row of an answered request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage import filesystem, join

log = logging.getLogger(__name__)


def live_log_dir(root: str, model: str) -> str:
    """The directory holding one model's live log under `root` (`ROOT/model=NAME`, dates below)."""
    return join(root, f"model={model}")


def should_log(request_id: str, sample_percent: float) -> bool:
    """Sampling decided by the request id, so a retried request is sampled the same way."""
    if sample_percent >= 100:
        return True
    return zlib.crc32(request_id.encode()) % 10_000 < sample_percent * 100


def rows_table(model: str, features: tuple[str, ...], rows: list[tuple]) -> pa.Table:
    """Buffered rows `(request_id, ts, version, routing_key, x_row, prediction, latency_ms, shadow, label)`."""
    x = np.asarray([r[4] for r in rows], dtype=np.float32).reshape(len(rows), len(features))
    columns = {
        "request_id": pa.array([r[0] for r in rows], pa.string()),
        "ts": pa.array([r[1] for r in rows], pa.timestamp("ms", tz="UTC")),
        "version": pa.array([r[2] for r in rows], pa.int32()),
        "routing_key": pa.array([r[3] for r in rows], pa.string()),
    }
    for j, f in enumerate(features):
        columns[f] = pa.array(x[:, j])
    columns["prediction"] = pa.array([r[5] for r in rows], pa.int64())
    if any(r[8] is not None for r in rows):
        columns["label"] = pa.array([r[8] for r in rows])  # the class as the user named it
    columns["latency_ms"] = pa.array([r[6] for r in rows], pa.float32())
    columns["shadow"] = pa.array([r[7] for r in rows], pa.bool_())
    return pa.table(columns)


class LiveLog:
    """Buffers rows per model and writes them as Parquet files from one background thread."""

    def __init__(self, root: str, flush_seconds: float = 2.0, max_rows: int = 5000):
        self.root, self.flush_seconds, self.max_rows = root, flush_seconds, max_rows
        self.fs, self.base = filesystem(root)
        self._buffers: dict[str, list[tuple]] = {}
        self._features: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.rows_written = 0
        self._thread = threading.Thread(target=self._run, name="handoff-live-log", daemon=True)
        self._thread.start()

    def append(self, model: str, features: tuple[str, ...], request_id: str, version: int,
               routing_key: str | None, x: np.ndarray, predictions: np.ndarray, latency_ms: float,
               shadow: bool = False, labels: np.ndarray | None = None) -> None:
        """One row per input row of an answered request (row ids `request_id`, `request_id#1`, ...);
        `shadow` rows are a mirrored version's answers, which no caller saw; `labels` name the classes."""
        now = datetime.now(timezone.utc)
        names = labels.tolist() if labels is not None else [None] * x.shape[0]
        rows = [(request_id if i == 0 else f"{request_id}#{i}", now, version, routing_key, x[i],
                 int(predictions[i]), latency_ms, shadow, names[i]) for i in range(x.shape[0])]
        with self._lock:
            self._features[model] = features
            buf = self._buffers.setdefault(model, [])
            buf.extend(rows)
            if len(buf) >= self.max_rows:
                self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every buffered row now (one file per model and date)."""
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        for model, rows in buffers.items():
            by_date: dict[str, list[tuple]] = {}
            for r in rows:
                by_date.setdefault(r[1].strftime("%Y-%m-%d"), []).append(r)
            for day, day_rows in by_date.items():
                self._write(model, day, day_rows)

    def _write(self, model: str, day: str, rows: list[tuple]) -> None:
        directory = join(live_log_dir(self.base, model), f"date={day}")
        path = join(directory, f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet")
        try:
            self.fs.create_dir(directory, recursive=True)
            pq.write_table(rows_table(model, self._features[model], rows), path, filesystem=self.fs)
            self.rows_written += len(rows)
        except Exception:  # noqa: BLE001 - keep the rows and retry on the next flush
            log.exception("live log: writing %d row(s) to %s failed; will retry", len(rows), path)
            with self._lock:
                self._buffers.setdefault(model, []).extend(rows)

    def close(self) -> None:
        """Stop the writer and write what is left (called on a clean shutdown)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
