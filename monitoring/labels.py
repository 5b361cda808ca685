"""Live accuracy: labels sent back to the gateway (`POST /v2/models/{name}/feedback`) joined to rows.

The gateway writes each accepted batch as a Parquet file under `ROOT/_feedback/model=NAME/`
(serving/feedback.py; the layout is the contract, this module reads it without importing
serving). Labels may come long after the answer, so the join is kept open: each scored window's
row ids, predictions and probabilities are kept (`WindowRows`, one small file per window, the
last `horizon` windows of a version), and whenever labels arrive the windows in the horizon are
joined again. `label_stats` (pure) is what a window's joined rows say: how many are labelled,
how many of those the version got right, and their summed log loss; for a regression model (labels
are the true values, `value` in the label files) the sums of squared and absolute errors, whence
live RMSE and MAE.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.storage import filesystem, join
from monitoring.compaction import schema_id
from monitoring.label_compaction import segments_of, stamp_of
from monitoring.live_reader import day_before, parquet_files
from monitoring.read_retry import TransientRead, read_with_retries

FEEDBACK_DIR = "_feedback"
UNLABELLED = -1
CLOCK_SKEW_S = 60.0  # how far the gateways' and the readers' clocks may differ: label files are read this far back
HELD_WINDOWS = 200  # scored windows' rows kept in memory at least (four versions' horizons, 50 by default)
MIN_P = 1e-15  # log loss of a probability of 0 for the true class: -log(1e-15), as scikit-learn clips


def epoch_s(ts: np.datetime64) -> float:
    """An answer time (datetime64) as epoch seconds: what label files' stamps are compared with."""
    return float(np.datetime64(ts, "ms").astype(np.int64)) / 1000


def label_stats(prediction: np.ndarray, proba: np.ndarray | None, label: np.ndarray,
                regression: bool = False) -> dict:
    """Of a window's rows with `label` ≥ 0 (the true class index; UNLABELLED otherwise): how many,
    how many predicted right, and the summed log loss (None without probabilities). For a
    `regression` model (`label` the true values, NaN where none came): how many are labelled and
    their sums of squared and absolute errors."""
    if regression:
        known = ~np.isnan(label)
        error = np.asarray(prediction, dtype=np.float64)[known] - label[known]
        return {"rows": int(label.shape[0]), "labelled": int(known.sum()),
                "squared_error_sum": float((error ** 2).sum()), "absolute_error_sum": float(np.abs(error).sum())}
    known = label >= 0
    n = int(known.sum())
    correct = int((prediction[known] == label[known]).sum())
    loss = None
    if proba is not None:
        k = label[known]
        inside = k < proba.shape[1]
        p = np.where(inside, proba[known][np.arange(n), np.minimum(k, proba.shape[1] - 1)], 0.0)
        loss = float(-np.log(np.clip(p.astype(np.float64), MIN_P, 1.0)).sum())
    return {"rows": int(label.shape[0]), "labelled": n, "correct": correct, "log_loss_sum": loss}


def summary(windows: dict[str, dict]) -> dict:
    """Accuracy and mean log loss over the given windows' labelled rows (None where nothing is
    labelled); for a regression model's windows RMSE and MAE instead."""
    labelled = sum(w["labelled"] for w in windows.values())
    if any("squared_error_sum" in w for w in windows.values()):
        squared = sum(w.get("squared_error_sum", 0.0) for w in windows.values())
        absolute = sum(w.get("absolute_error_sum", 0.0) for w in windows.values())
        return {"labelled": labelled, "rmse": float(np.sqrt(squared / labelled)) if labelled else None,
                "mae": absolute / labelled if labelled else None, "windows": len(windows)}
    correct = sum(w["correct"] for w in windows.values())
    losses = [w["log_loss_sum"] for w in windows.values() if w["labelled"]]
    loss = None if not losses or any(v is None for v in losses) else sum(losses) / labelled
    return {"labelled": labelled, "accuracy": correct / labelled if labelled else None, "log_loss": loss,
            "windows": len(windows)}


class Feedback:
    """The labels sent for one model, read from the feedback files as they appear: the latest sent
    for an id wins (by the moment its file was written). Files written before `since` (epoch seconds)
    are not read: a label file written at T labels only rows answered before T, so a reader that
    needs the rows answered from `since` on needs no earlier file. `forget_before` moves `since`
    on and lets go of the labels it no longer needs: what a long-lived reader holds stays bounded."""

    def __init__(self, root: str, model: str, since: float | None = None):
        self.fs, base = filesystem(root)
        self.dir = join(join(base, FEEDBACK_DIR), f"model={model}")
        self.since = since
        self.labels: dict[str, int | float] = {}  # id → class index, or the true value (regression)
        self.files_read: set[str] = set()
        self.shapes: dict[str, tuple[int, str]] = {}  # key → (rows, schema id) of each file read whole here
        self._written: dict[str, float] = {}  # id → when the file its label came from was written
        self._chunks: list[tuple[float, list[str]]] = []  # (when written, ids) of each file's labels applied
        self._partial: set[str] = set()  # merges read with sources before `since` left out
        self._last_stamp = 0.0
        self._vanished = False  # a file listed was gone when read (merged): the merge is listed again

    def _stamp(self, key: str) -> float:
        """When `key` was written (its name); a file the gateway did not name counts as the newest read."""
        stamp = stamp_of(key)
        self._last_stamp = max(self._last_stamp, stamp if stamp is not None else self._last_stamp)
        return self._last_stamp if stamp is None else stamp

    def _wanted(self, key: str) -> bool:
        stamp = stamp_of(key)
        return self.since is None or stamp is None or stamp >= self.since

    def new_files(self, read: Iterable[str]) -> list[str]:
        """Keys of feedback files not in `read` and not written before `since`, oldest first: in name
        order (a gateway names a file after the moment it wrote it, a merge after its last source)."""
        done, listed = set(read), parquet_files(self.fs, self.dir, day_before(self.since))
        return sorted(key for _, key in listed if key not in done and self._wanted(key))

    def read(self, key: str) -> int:
        """Add one file's labels; how many it added (-1 for a file that does not parse: skipped; of a
        merge, the rows of the files it holds that this reader has not read yet and that were not
        written before `since`; 0 for a file merged away since it was listed). `TransientRead` for an
        I/O error, the file not yet counted as read (the caller tries again)."""
        try:
            table = pq.read_table(join(self.dir, key), filesystem=self.fs)
            labels = table.column("value" if "value" in table.column_names else "class_index")
            ids = table.column("request_id")
            segments = segments_of(table.schema, key, table.num_rows)
            if sum(s["rows"] for s in segments) != table.num_rows:  # metadata that does not fit: the file as one
                segments = [{"key": key, "rows": table.num_rows}]
        except FileNotFoundError:  # merged away since it was listed: its rows are in the merge, read then
            self._vanished = True
            return 0
        except OSError as exc:
            raise TransientRead(f"{key}: {type(exc).__name__}: {exc}") from None
        except Exception:  # noqa: BLE001 - a label file that does not parse is skipped (the caller records it)
            self.files_read.add(key)
            return -1
        ids, labels, start, applied = ids.to_pylist(), labels.to_pylist(), 0, 0
        for segment in segments:  # a merge's rows of files this reader has read already are not applied again
            end = start + segment["rows"]
            if segment["key"] in self.files_read:
                pass
            elif not self._wanted(segment["key"]):
                self._partial.add(key)
            else:
                self._apply(ids[start:end], labels[start:end], self._stamp(segment["key"]))
                applied += end - start
                self.files_read.add(segment["key"])
            start = end
        self.files_read.add(key)
        self.shapes[key] = (table.num_rows, schema_id(table.schema))
        return applied

    def _apply(self, ids: list[str], values: list, stamp: float) -> None:
        """Labels written at `stamp`: each replaces an id's label written at or before it, never a later one."""
        labels, written = self.labels, self._written
        for i, value in zip(ids, values):
            if written.get(i, stamp) <= stamp:
                labels[i], written[i] = value, stamp
        self._chunks.append((stamp, ids))

    def forget_before(self, since: float) -> int:
        """Move `since` on to `since` (never back) and drop the labels of files written before it (a label
        sent again later stays); how many were dropped."""
        if self.since is not None and since <= self.since:
            return 0
        self.since, kept, dropped = since, [], 0
        for stamp, ids in self._chunks:
            if stamp >= since:
                kept.append((stamp, ids))
                continue
            for i in ids:
                if self._written.get(i, since) < since:
                    del self.labels[i], self._written[i]
                    dropped += 1
        self._chunks = kept
        self.files_read = {k for k in self.files_read if self._wanted(k)}
        self.shapes = {k: v for k, v in self.shapes.items() if k in self.files_read}
        return dropped

    def reach_back(self, since: float) -> None:
        """Move `since` back to `since` (never on): files written between are read by the next `catch_up`."""
        if self.since is None or since >= self.since:
            return
        self.since = since
        self.files_read -= self._partial  # a merge read in part: read again, its earlier sources applied
        self._partial.clear()

    def catch_up(self) -> int:
        """Read the files this reader has not read yet (one that does not parse is skipped; an I/O error
        is tried again, then ends the call there); how many were read. A reader kept between calls reads each file once."""
        done = 0
        for _ in range(3):  # a file merged away between listing and reading: its merge, listed again
            self._vanished = False
            new = self.new_files(self.files_read)
            for key in new:
                try:
                    read_with_retries(lambda: self.read(key))
                except TransientRead:  # the rest waits; the next call tries again
                    return done + new.index(key)
            done += len(new)
            if not self._vanished:
                break
        return done

    def lookup(self, ids: np.ndarray, regression: bool = False) -> np.ndarray:
        """The class index labelled for each id, UNLABELLED where none was sent; for a `regression`
        model the true value (float64), NaN where none was sent."""
        get = self.labels.get
        if regression:
            return np.fromiter((get(i, np.nan) for i in ids), dtype=np.float64, count=len(ids))
        return np.fromiter((get(i, UNLABELLED) for i in ids), dtype=np.int64, count=len(ids))


class WindowRows:
    """Row ids, predictions and probabilities of a version's recent windows (what a late label joins).

    Kept on storage (a restarted monitor joins them again) and in memory for the windows saved or
    read since: whenever labels arrive every window of the horizon is joined again, and on an object
    store a read per window per pass costs a request each (50 windows: seconds a pass)."""

    def __init__(self, state_root: str, model: str):
        self.fs, base = filesystem(state_root)
        self.dir = join(join(base, f"model={model}"), "window_rows")
        self._held: dict[tuple[int, int], tuple] = {}  # (version, window) → what `load` returns
        self._limit = HELD_WINDOWS

    def _path(self, version: int, window: int) -> str:
        return join(self.dir, f"v{version}-w{window}.parquet")

    def save(self, version: int, window: int, ids: np.ndarray, prediction: np.ndarray, proba: np.ndarray | None,
             horizon: int) -> None:
        """Keep this window's rows; forget the window that falls out of the horizon."""
        kind = pa.float64() if np.asarray(prediction).dtype.kind == "f" else pa.int64()  # a value, or a class
        columns = {"request_id": pa.array(ids, pa.string()), "prediction": pa.array(prediction, kind)}
        if proba is not None:
            columns["probabilities"] = pa.FixedSizeListArray.from_arrays(
                pa.array(proba.astype(np.float32).reshape(-1)), proba.shape[1])
        self.fs.create_dir(self.dir, recursive=True)
        pq.write_table(pa.table(columns), self._path(version, window), filesystem=self.fs, compression="none")
        self._limit = max(self._limit, 4 * horizon)  # four versions' horizons, at least
        self._hold((version, window), (np.asarray(ids, dtype=object).astype(str).astype(object),
                                       np.asarray(prediction, dtype=np.float64 if kind == pa.float64() else np.int64),
                                       None if proba is None else np.asarray(proba, dtype=np.float32)))
        for key in [k for k in self._held if k[0] == version and k[1] <= window - horizon]:
            del self._held[key]
        if window >= horizon and self._exists(version, window - horizon):
            self.fs.delete_file(self._path(version, window - horizon))

    def _exists(self, version: int, window: int) -> bool:
        return self.fs.get_file_info(self._path(version, window)).type == pafs.FileType.File

    def load(self, version: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        if (version, window) in self._held:
            self._held[(version, window)] = self._held.pop((version, window))  # the most recently used last
            return self._held[(version, window)]
        try:
            table = pq.read_table(self._path(version, window), filesystem=self.fs)
        except (FileNotFoundError, OSError):
            return None
        proba = None
        if "probabilities" in table.column_names:
            column = table.column("probabilities").combine_chunks()
            proba = column.flatten().to_numpy().reshape(len(column), -1)
        rows = (table.column("request_id").to_numpy(zero_copy_only=False), table.column("prediction").to_numpy(), proba)
        self._hold((version, window), rows)
        return rows

    def _hold(self, key: tuple[int, int], rows: tuple) -> None:
        """Keep `rows` in memory, letting go of the least recently used past `HELD_WINDOWS`."""
        self._held[key] = rows
        while len(self._held) > self._limit:
            del self._held[next(iter(self._held))]
