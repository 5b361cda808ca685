"""The live log: one Parquet row per answered request, written in batches off the request path.

Row contract (ARCHITECTURE.md): `request_id, ts, model, version, routing_key, <features...>,
prediction, probabilities, label, latency_ms`, plus `shadow` (true for a mirrored version's answer);
`label` is the class as the user named it, `probabilities` the class probabilities (a fixed-size
list, in class order: what the monitor's live log loss needs once labels come back); a regression
model's rows hold its predicted value as `prediction` (float64) and neither `label` nor
`probabilities`. Files land under
`ROOT/model=NAME/date=YYYY-MM-DD/part-*.parquet` on a local path or any pyarrow filesystem URI
(each written beside under a dotted name and moved into place whole);
`model` and `date` are Hive partition keys (read back as columns by `pyarrow.dataset` with
`partitioning="hive"` and by Ray Data), so the files themselves do not repeat them.

The request path only appends a tuple to an in-memory buffer; a writer thread turns buffers into
files every `flush_seconds` or `max_rows`; `close()` writes what is left, so a clean shutdown loses
no row of an answered request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.storage import filesystem, join, publish, staging_path

log = logging.getLogger(__name__)


def live_log_dir(root: str, model: str) -> str:
    """The directory holding one model's live log under `root` (`ROOT/model=NAME`, dates below)."""
    return join(root, f"model={model}")


def should_log(request_id: str, sample_percent: float) -> bool:
    """Sampling decided by the request id, so a retried request is sampled the same way."""
    if sample_percent >= 100:
        return True
    return zlib.crc32(request_id.encode()) % 10_000 < sample_percent * 100


#: LZ4 (LZ4_RAW) and dictionaries only where values repeat: 2.4x faster to write than the defaults
#: (snappy, every column dictionary-encoded) and smaller files, measured on 50,000 rows of this schema
PARQUET_OPTIONS = {"compression": "lz4", "use_dictionary": ["version", "routing_key", "prediction", "label", "shadow"]}


@dataclass(frozen=True)
class Chunk:
    """The rows of one answered request (or one mirrored answer), kept as arrays until written."""

    request_id: str
    ts: datetime
    version: int
    routing_key: str | None
    x: np.ndarray | dict     # rows × features, float32 (NaN: a gap); or per column its raw values
    prediction: np.ndarray   # class index per row (int), or the predicted value (float: regression)
    label: np.ndarray | None  # the class as the user named it, per row
    latency_ms: float
    shadow: bool
    proba: np.ndarray | None = None  # rows × classes

    @property
    def rows(self) -> int:
        return int(self.x.shape[0]) if isinstance(self.x, np.ndarray) else len(next(iter(self.x.values())))


def row_ids(request_ids: list[str], counts: np.ndarray) -> pa.Array:
    """Per row: `request_id` for the first row of a request, `request_id#1`, `#2`, … for the others
    (built by Arrow's kernels: a Python string per row was 6% of the gateway's CPU for batch requests)."""
    ids = pa.array(np.repeat(np.array(request_ids, dtype=object), counts), pa.string())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    index = np.arange(int(counts.sum()), dtype=np.int64) - starts
    suffixed = pc.binary_join_element_wise(ids, pa.array(index).cast(pa.string()), "#")
    return pc.if_else(pa.array(index == 0), ids, suffixed)


#: the schema metadata key that names a file's categorical feature columns (JSON list)
CATEGORICAL_KEY = "handoff.categorical"

#: a categorical column's values in the live log (dictionary-encoded: the monitor tells them from numbers so)
_ARROW_VALUES = {"string": pa.string(), "bool": pa.bool_(), "integer": pa.int64()}


def _feature_columns(features: tuple[str, ...], value_types: tuple | None, chunks: list[Chunk]) -> dict:
    """The features as received: numbers as float32 (null for a gap), categories dictionary-encoded."""
    if not chunks or isinstance(chunks[0].x, np.ndarray):
        x = np.concatenate([c.x for c in chunks]).astype(np.float32, copy=False).reshape(-1, len(features))
        return {f: pa.array(x[:, j], from_pandas=True) for j, f in enumerate(features)}
    out = {}
    for f, values in zip(features, value_types or (None,) * len(features)):
        raw = [v for c in chunks for v in c.x[f]]
        if values is None:
            out[f] = pa.array(np.asarray([np.nan if v is None else v for v in raw], dtype=np.float32),
                              from_pandas=True)
        else:
            try:
                out[f] = pa.array(raw, _ARROW_VALUES[values]).dictionary_encode()
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):  # kept as text, never lost
                out[f] = pa.array([None if v is None else str(v) for v in raw], pa.string()).dictionary_encode()
    return out


def rows_table(features: tuple[str, ...], chunks: list[Chunk], value_types: tuple | None = None) -> pa.Table:
    """One table of the chunks' rows, built column by column (no Python object per row but the id)."""
    counts = np.fromiter((c.rows for c in chunks), dtype=np.int64, count=len(chunks))
    ts = np.repeat(np.array([c.ts.replace(tzinfo=None) for c in chunks], dtype="datetime64[ms]"), counts)
    columns = {
        "request_id": row_ids([c.request_id for c in chunks], counts),
        "ts": pa.array(ts, pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")),
        "version": pa.array(np.repeat([c.version for c in chunks], counts), pa.int32()),
        "routing_key": pa.array(np.repeat(np.array([c.routing_key for c in chunks], dtype=object), counts),
                                pa.string()),
    }
    columns.update(_feature_columns(features, value_types, chunks))
    prediction = np.concatenate([c.prediction for c in chunks])
    columns["prediction"] = (pa.array(prediction.astype(np.float64, copy=False), pa.float64())
                             if prediction.dtype.kind == "f" else pa.array(prediction.astype(np.int64), pa.int64()))
    widths = {None if c.proba is None else c.proba.shape[1] for c in chunks}
    if len(widths) == 1 and None not in widths:
        flat = np.concatenate([c.proba for c in chunks]).astype(np.float32, copy=False).reshape(-1)
        columns["probabilities"] = pa.FixedSizeListArray.from_arrays(pa.array(flat), widths.pop())
    if all(c.label is not None for c in chunks):
        columns["label"] = pa.array(np.concatenate([c.label for c in chunks]))  # the class as the user named it
    columns["latency_ms"] = pa.array(np.repeat([c.latency_ms for c in chunks], counts).astype(np.float32))
    columns["shadow"] = pa.array(np.repeat([c.shadow for c in chunks], counts), pa.bool_())
    table = pa.table(columns)
    if value_types:  # which feature columns are categorical: Parquet gives an integer code back as plain integers
        table = table.replace_schema_metadata({CATEGORICAL_KEY: json.dumps(
            [f for f, values in zip(features, value_types) if values is not None])})
    return table


#: requests turned into rows at a time by the writer before it lets the request thread run
SLICE_CHUNKS = 1_000


def _table_in_slices(features: tuple[str, ...], chunks: list[Chunk], value_types: tuple | None = None) -> pa.Table:
    """`rows_table` over slices of requests, yielding the GIL between slices: building one table of
    20,000 one-row requests held it for tens of milliseconds, which showed as p99 latency."""
    tables = []
    for start in range(0, len(chunks), SLICE_CHUNKS):
        tables.append(rows_table(features, chunks[start:start + SLICE_CHUNKS], value_types))
        time.sleep(0)  # let the HTTP thread run
    return pa.concat_tables(_as_one_schema(tables)) if len(tables) > 1 else tables[0]


def _as_one_schema(tables: list[pa.Table]) -> list[pa.Table]:
    """The slices with one schema: a categorical column one slice kept as text (a value beyond its
    type, such as an integer code over int64) is text in every slice, so the slices join in one file."""
    if all(t.schema == tables[0].schema for t in tables[1:]):
        return tables
    text = {f.name for t in tables for f in t.schema
            if pa.types.is_dictionary(f.type) and pa.types.is_string(f.type.value_type)}
    out = []
    for table in tables:
        for name in text:
            column = table[name]
            if pa.types.is_dictionary(column.type) and not pa.types.is_string(column.type.value_type):
                as_text = pc.cast(column.combine_chunks().dictionary_decode(), pa.string()).dictionary_encode()
                table = table.set_column(table.schema.get_field_index(name), name, as_text)
        out.append(table)
    return out


def _by_day(chunks: list[Chunk]) -> list[tuple[str, list[Chunk]]]:
    """The chunks grouped by their UTC day. Chunks come in time order, so a flush that starts and
    ends on one day is one group (a day per chunk by `strftime` took ~25 ms of GIL for 18,000)."""
    first, last = chunks[0].ts.strftime("%Y-%m-%d"), chunks[-1].ts.strftime("%Y-%m-%d")
    if first == last:
        return [(first, chunks)]
    by_day: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_day.setdefault(c.ts.strftime("%Y-%m-%d"), []).append(c)
    return list(by_day.items())


class LiveLog:
    """Buffers answered requests per model and writes them as Parquet files from one background thread."""

    def __init__(self, root: str, flush_seconds: float = 2.0, max_rows: int = 50_000, max_requests: int = 5_000,
                 max_buffered_rows: int = 500_000):
        self.root, self.flush_seconds, self.max_rows, self.max_requests = root, flush_seconds, max_rows, max_requests
        self.max_buffered_rows = max_buffered_rows
        self.rows_dropped = 0  # rows given up while storage failed and the buffer was full
        self._failures, self._retry_at = 0, 0.0  # writes failed in a row; no write before this (monotonic)
        self.fs, self.base = filesystem(root)
        self._buffers: dict[str, list[Chunk]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._features: dict[str, tuple[str, ...]] = {}
        self._value_types: dict[str, tuple | None] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.rows_written = 0
        self._thread = threading.Thread(target=self._run, name="handoff-live-log", daemon=True)
        self._thread.start()

    def append(self, model: str, features: tuple[str, ...], request_id: str, version: int,
               routing_key: str | None, x: np.ndarray | dict, predictions: np.ndarray, latency_ms: float,
               shadow: bool = False, labels: np.ndarray | None = None, proba: np.ndarray | None = None,
               value_types: tuple | None = None) -> None:
        """One row per input row of an answered request (row ids `request_id`, `request_id#1`, ...);
        `shadow` rows are a mirrored version's answers, which no caller saw; `labels` name the classes,
        `proba` gives their probabilities; `x` is the rows as received (a matrix of numeric columns, or
        per column its raw values, whose categorical columns' `value_types` say string, bool or integer).
        The request path keeps only the request's arrays: rows are built by the writer."""
        chunk = Chunk(request_id, datetime.now(timezone.utc), version, routing_key, x, predictions, labels,
                      latency_ms, shadow, proba)
        with self._lock:
            self._features[model], self._value_types[model] = features, value_types
            requests = self._buffers.setdefault(model, [])
            requests.append(chunk)
            buffered = self._buffered_rows[model] = self._buffered_rows.get(model, 0) + chunk.rows
            if buffered > self.max_buffered_rows:
                self._drop_oldest(model)
        if buffered >= self.max_rows or len(requests) >= self.max_requests:
            self._wake.set()

    def _drop_oldest(self, model: str) -> None:
        """Under the lock: the model's oldest chunks dropped (counted) until its buffer is back under
        `max_buffered_rows`; only while writes fail does a buffer grow this far."""
        requests = self._buffers[model]
        while self._buffered_rows[model] > self.max_buffered_rows and len(requests) > 1:
            dropped = requests.pop(0)
            self._buffered_rows[model] -= dropped.rows
            self.rows_dropped += dropped.rows

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if time.monotonic() >= self._retry_at:  # after failed writes: back off, doubling up to a minute
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - the writer thread must outlive any one flush
                    log.exception("live log: a flush failed; the writer goes on")

    def flush(self) -> None:
        """Write every buffered row now (one file per model and date)."""
        with self._lock:
            buffers, self._buffers, self._buffered_rows = self._buffers, {}, {}
        for model, chunks in buffers.items():
            for day, day_chunks in _by_day(chunks):
                self._write(model, day, day_chunks)

    def _rows(self, model: str, chunks: list[Chunk]) -> tuple[pa.Table | None, list[Chunk]]:
        """The chunks' rows as one table, and the chunks it holds. A chunk that cannot become rows (a
        value no Parquet column holds, which the gateway's checks should have refused) is dropped,
        counted and logged: kept, it would fail every later write and hold back the model's other rows."""
        features, value_types = self._features[model], self._value_types.get(model)
        try:
            return _table_in_slices(features, chunks, value_types), chunks
        except Exception:  # noqa: BLE001 - find the chunk at fault; every other one is written
            kept = []
            for chunk in chunks:
                try:
                    rows_table(features, [chunk], value_types)
                    kept.append(chunk)
                except Exception:  # noqa: BLE001
                    self.rows_dropped += chunk.rows
                    log.exception("live log: request %s of model %s cannot be written as rows; its %d row(s) are "
                                  "dropped", chunk.request_id, model, chunk.rows)
            try:
                return (_table_in_slices(features, kept, value_types) if kept else None), kept
            except Exception:  # noqa: BLE001 - every request alone makes rows, together they do not: never stop
                self.rows_dropped += sum(c.rows for c in kept)
                log.exception("live log: %d request(s) of model %s make rows one by one but not together; "
                              "dropped", len(kept), model)
                return None, []

    def _write(self, model: str, day: str, chunks: list[Chunk]) -> None:
        directory = join(live_log_dir(self.base, model), f"date={day}")
        name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
        path = join(directory, name)
        tmp = staging_path(self.fs, path)
        table, chunks = self._rows(model, chunks)
        if table is None:
            return
        rows = table.num_rows
        try:
            self.fs.create_dir(directory, recursive=True)
            # written beside, then moved into place (on an object store: put whole): a reader never sees
            # half a file, so the monitor reads a file as soon as it appears
            pq.write_table(table, tmp, filesystem=self.fs, **PARQUET_OPTIONS)
            publish(self.fs, tmp, path)
            self.rows_written += rows
            self._failures, self._retry_at = 0, 0.0
        except Exception:  # noqa: BLE001 - keep the rows (before newer ones: files stay in time order), retry later
            self._failures += 1
            self._retry_at = time.monotonic() + min(self.flush_seconds * 2 ** self._failures, 60.0)
            log.exception("live log: writing %d row(s) to %s failed (%d in a row, %d row(s) dropped so far at the "
                          "buffer's bound of %d); will retry", rows, path, self._failures, self.rows_dropped,
                          self.max_buffered_rows)
            with self._lock:
                self._buffers[model] = chunks + self._buffers.get(model, [])
                self._buffered_rows[model] = self._buffered_rows.get(model, 0) + rows
                if self._buffered_rows[model] > self.max_buffered_rows:
                    self._drop_oldest(model)

    def close(self) -> None:
        """Stop the writer and write what is left (called on a clean shutdown)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
