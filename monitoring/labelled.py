"""Labelled live rows: the live log's answered rows joined with the labels sent back for them.

What the retraining learns from (the most recent labelled rows) and what the canary is judged on
(labelled rows of each version since the canary started). Reads the live log's files (shadow rows
left out; unreadable files skipped) and the label files beside them (one label per row id: the
latest sent), the same layout the monitor reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.storage import filesystem
from monitoring.labels import CLOCK_SKEW_S, Feedback, epoch_s
from monitoring.read_retry import TransientRead, read_with_retries
from monitoring.live_reader import (DAY_DIR, categorical_features, day_before, feature_columns, model_dir,
                                    parquet_files)


@dataclass(frozen=True)
class LabelledRows:
    """Rows in answer order: the feature columns as clients sent them (numbers as float64 with NaN for a
    gap, categories as their values with None for a gap), the true class index, the class the version
    predicted, its version; for a regression model the true and the predicted values (float64)."""

    features: list[str]
    frame: pd.DataFrame
    y: np.ndarray
    prediction: np.ndarray
    version: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index) -> LabelledRows:
        return LabelledRows(self.features, self.frame.iloc[index].reset_index(drop=True), self.y[index],
                            self.prediction[index], self.version[index], self.ts[index])


def _plain(table: pa.Table, features: list[str]) -> pa.Table:
    """`table` with its dictionary-encoded (categorical) feature columns decoded to their values, so
    files whose dictionaries differ concatenate."""
    for name in features:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            table = table.set_column(table.schema.get_field_index(name), name, column.cast(column.type.value_type))
    return table


def _frame(table: pa.Table, features: list[str], categorical: set[str]) -> pd.DataFrame:
    """The feature columns as pandas values: numbers float64 (NaN for a gap), categories objects (None)."""
    out = {}
    for name in features:
        column = table.column(name)
        if name not in categorical:
            out[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:
            out[name] = pd.Series(column.to_pylist(), dtype=object)
    return pd.DataFrame(out, columns=features)


def _answered(fs, path: str, features: list[str] | None, with_features: bool, since: float | None,
              versions: set[int] | None, row_group: int | None = None
              ) -> tuple[pa.Table | None, list[str] | None, set[str]]:
    """One live-log file's answered rows (mirrors left out; answered at or after `since`, by one of
    `versions`, when given; of one `row_group` when given), with the feature columns when asked; None
    for a file that does not parse or has other features than `features` (the first file's, when
    None). Its features and categorical ones. An I/O error (a throttle, a network blip) is raised:
    the caller tries the file again later."""
    try:
        schema = pq.read_schema(path, filesystem=fs)
        names = feature_columns(schema.names)
        if features is not None and names != features:
            return None, features, set()
        categorical = set(categorical_features(schema, names))
        columns = ["request_id", "ts", "version", "prediction", "shadow", *(names if with_features else [])]
        if row_group is None:
            table = pq.read_table(path, filesystem=fs, columns=columns)
        else:
            with fs.open_input_file(path) as f:
                table = pq.ParquetFile(f).read_row_group(row_group, columns=columns)
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - a file that does not parse is skipped, as the monitor does
        return None, features, set()
    keep = pc.invert(table.column("shadow"))
    if since is not None:
        keep = pc.and_(keep, pc.greater_equal(table.column("ts"), pa.scalar(int(since * 1000),
                                                                             pa.timestamp("ms", tz="UTC"))))
    if versions is not None:
        keep = pc.and_(keep, pc.is_in(table.column("version"), pa.array(sorted(versions), pa.int32())))
    return _plain(table.filter(keep), names if with_features else []), names, categorical


class LabelledReader:
    """The labelled rows of one model, read again and again as traffic goes on (the canary's figures
    every tick): each live-log file's answered rows are read once and kept while the file is listed,
    each label file once; labels written before `since` less the clock skew are never read (a label
    file written at T labels only rows answered before T). What it holds grows with the rows answered
    since `since`, not with the model's life."""

    def __init__(self, root: str, model: str, *, since: float | None = None, versions: set[int] | None = None,
                 with_features: bool = True, regression: bool = False, feedback: Feedback | None = None):
        self.root, self.model, self.since, self.versions = root, model, since, versions
        self.with_features, self.regression = with_features, regression
        self.feedback = feedback or Feedback(root, model, since=None if since is None else since - CLOCK_SKEW_S)
        self._tables: dict[str, pa.Table | None] = {}  # key → its answered rows (None: unreadable, other features)
        self._features: list[str] | None = None
        self._categorical: set[str] = set()

    def rows(self) -> LabelledRows:
        """Every labelled row answered from `since` on, oldest first."""
        fs, live_dir = filesystem(model_dir(self.root, self.model))
        files = parquet_files(fs, live_dir, _first_day(self.since))
        listed = {key for _, key in files}
        self._tables = {k: t for k, t in self._tables.items() if k in listed}  # merged away: its rows are in the merge
        for mtime, key in reversed(files):  # newest first: the newest file's features are the model's
            # written before `since` (less the skew: an object store keeps whole seconds, by its own clock)
            if key in self._tables or (self.since is not None and mtime < self.since - CLOCK_SKEW_S):
                continue
            try:
                table, self._features, categorical = _answered(fs, f"{live_dir}/{key}", self._features,
                                                               self.with_features, self.since, self.versions)
            except OSError:  # not kept: read again at the next call
                continue
            self._categorical |= categorical
            self._tables[key] = table
        self.feedback.catch_up()  # an unreadable label file is skipped (the monitor records it)
        return _joined([t for t in self._tables.values() if t is not None], self._features, self._categorical, self.feedback,
                       self.with_features, self.regression, None)


def labelled_rows(root: str, model: str, *, since: float | None = None, versions: set[int] | None = None,
                  last: int | None = None, feedback: Feedback | None = None, with_features: bool = True,
                  regression: bool = False) -> LabelledRows:
    """The answered rows of `model` that have a label, oldest first: answered at or after `since`
    (epoch seconds) and by one of `versions` when given, the `last` most recent when given. Labels
    come from `feedback` brought up to date when given (a reader kept between calls reads each label
    file once), else from the label files written from `since` on. `with_features=False` leaves the
    feature columns unread (the canary counts answers only). A `regression` model's labels are the
    true values. The `last` rows are read from the row groups of the latest answers back (each row
    group's latest answer from its file's footer), in batches that double, until none left holds a
    row among them, with the label files written from the oldest row read on; the days' files are listed
    and their footers read a day at a time, the newest first, only as far back as those rows reach: the
    work grows with `last` and the days it spans, not with the log."""
    if last is None:
        return LabelledReader(root, model, since=since, versions=versions, with_features=with_features,
                              regression=regression, feedback=feedback).rows()
    fs, live_dir = filesystem(model_dir(root, model))
    days = _newest_day_first(fs, live_dir, _first_day(since))
    parts: list[tuple[float, str, int | None]] = []  # latest answers first, a day's row groups at a time

    def older_day() -> bool:
        """Add the row groups of the next older day that holds any from `since` on; False when none is left."""
        for files in days:
            spans = sorted(((t, k, g) for m, k in files for t, g in _row_groups(fs, f"{live_dir}/{k}", m)), reverse=True)
            spans = [p for p in spans if since is None or p[0] >= since]
            if spans:
                parts.extend(spans)
                return True
        return False

    if feedback is None:  # no label file read yet: reached back to the oldest row read, batch by batch
        feedback = Feedback(root, model, since=float("inf") if since is None else since - CLOCK_SKEW_S)
    tables, features, categorical, done, batch = [], None, set(), 0, 8
    older_day()
    while True:
        for _, key, group in parts[done:done + batch]:
            try:
                table, features, more = read_with_retries(
                    lambda: _transient(_answered, fs, f"{live_dir}/{key}", features, with_features, since, versions,
                                       group))
            except TransientRead:  # an I/O error every try: left out, as a file that cannot be read
                continue
            categorical |= more
            if table is not None and table.num_rows:
                tables.append(table)
        done, batch = min(done + batch, len(parts)), batch * 2
        if tables:
            earliest = min(pc.min(t.column("ts")).value for t in tables) / 1000
            feedback.reach_back(earliest - CLOCK_SKEW_S)
        feedback.catch_up()
        rows = _joined(tables, features, categorical, feedback, with_features, regression, last)
        if done >= len(parts):  # the days listed are read whole: every row of an earlier day is older
            if len(rows) >= last or not older_day():
                return rows
        elif len(rows) >= last and parts[done][0] < epoch_s(rows.ts[0]):
            return rows


def _first_day(since: float | None) -> str | None:
    """The first day directory that can hold a row answered from `since` on (less the clock skew)."""
    return None if since is None else day_before(since - CLOCK_SKEW_S)


def _newest_day_first(fs, live_dir: str, from_day: str | None) -> Iterator[list[tuple[float, str]]]:
    """The live log's files a day directory at a time, the newest day first, from `from_day` on: a
    row lies in its answer's day (serving/live_log.py), so every row of a day is older than every row
    of the days after it, and a read of the latest rows lists and reads the footers of the days it
    reaches back to, not the log's life. Files outside day directories (not the gateway's layout):
    everything, as one group."""
    top = fs.get_file_info(pafs.FileSelector(live_dir, recursive=False, allow_not_found=True))
    shown = [i for i in top if not i.base_name.startswith(".")]
    days = [i for i in shown if i.type == pafs.FileType.Directory and i.base_name.startswith(DAY_DIR)]
    if len(days) != len(shown):
        yield parquet_files(fs, live_dir, from_day)
        return
    for info in sorted(days, key=lambda i: i.base_name, reverse=True):
        if from_day is not None and info.base_name[len(DAY_DIR):] < from_day:
            return
        yield [(m, f"{info.base_name}/{k}") for m, k in parquet_files(fs, info.path)]


def _transient(read, *args):
    """`read(*args)`, an I/O error raised as a `TransientRead` (what `read_with_retries` tries again)."""
    try:
        return read(*args)
    except OSError as exc:
        raise TransientRead(f"{type(exc).__name__}: {exc}") from None


def _row_groups(fs, path: str, mtime: float) -> list[tuple[float, int | None]]:
    """(when its latest row was answered, epoch s; its index) of each row group of a live-log file,
    from the footer's statistics; [(modification time, None): the file whole] where they are missing
    (a file is written after every row it holds) or the footer does not read."""
    try:
        meta = pq.read_metadata(path, filesystem=fs)
        column = meta.schema.to_arrow_schema().get_field_index("ts")
        groups = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(column).statistics if column >= 0 else None
            if stats is None or not stats.has_min_max:
                return [(mtime, None)]
            groups.append((stats.max.timestamp(), g))
        return groups
    except Exception:  # noqa: BLE001 - unreadable: read (and skipped) like any other
        return [(mtime, None)]


def _joined(tables: list[pa.Table], features: list[str] | None, categorical: set[str], feedback: Feedback,
            with_features: bool, regression: bool, last: int | None) -> LabelledRows:
    """The rows of `tables` that `feedback` labels, in answer order; the `last` most recent when given."""
    shown = (features or []) if with_features else []
    tables = [t for t in tables if t.num_rows]
    if not tables or not feedback.labels:
        return LabelledRows(features or [], pd.DataFrame(columns=shown), np.empty(0, np.int64),
                            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, "datetime64[ms]"))
    table = pa.concat_tables(tables, promote_options="permissive").sort_by("ts")
    y = feedback.lookup(table.column("request_id").to_pylist(), regression)
    rows = np.nonzero(~np.isnan(y) if regression else y >= 0)[0]
    if last is not None:
        rows = rows[-last:]
    picked = table.take(pa.array(rows))
    return LabelledRows(features, _frame(picked, shown, categorical), y[rows],
                        picked.column("prediction").to_numpy(zero_copy_only=False),
                        picked.column("version").to_numpy(zero_copy_only=False).astype(np.int64),
                        picked.column("ts").to_numpy(zero_copy_only=False).astype("datetime64[ms]"))
