"""Read a model's live log in order, from a position, as the gateway writes it (pyarrow, no Ray).

Files are `ROOT/model=NAME/date=DAY/part-<ms>-<id>.parquet`, one per gateway replica and flush. The
monitor numbers files in the order it first reads them (several gateways write concurrently, so
names do not tell the order in which files become complete), and a `Position` (that number, a row)
names one row of the log. The gateway moves each file into place whole, so a listed file is
complete (`settle_s` can hold back files younger than that, for writers that cannot rename); one
that cannot be read is reported as corrupt and skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.storage import filesystem, join
from monitoring.read_retry import TransientRead

SETTLE_S = 0.0  # the gateway renames finished files into place: a listed file is complete


@dataclass(frozen=True, order=True)
class Position:
    """One row of the live log: the file's number in read order and the row's index in the file."""

    file: int
    row: int = 0

    def to_json(self) -> list:
        return [self.file, self.row]

    @classmethod
    def from_json(cls, value) -> Position:
        return cls(int(value[0]), int(value[1]))


START = Position(-1, 0)  # before every file


@dataclass(frozen=True)
class Rows:
    """Rows of one file (shadow rows removed), with each row's position and answering version."""

    file: int              # the file's number in read order
    index: np.ndarray      # row numbers within the file
    version: np.ndarray
    ts: np.ndarray         # datetime64[ms]
    x: np.ndarray          # rows × features, float64
    prediction: np.ndarray
    ids: np.ndarray        # row ids (object): what label feedback names
    proba: np.ndarray | None  # rows × classes, float32 (None in files written before the column existed)
    categories: dict = field(default_factory=dict)  # categorical column → its values (object array, None: a gap)


class CorruptFile(ValueError):
    """A live-log file that cannot be read (truncated, not Parquet, columns missing)."""


def model_dir(root: str, model: str) -> str:
    return join(root, f"model={model}")


#: the gateway's directory of one day's files (`date=YYYY-MM-DD`)
DAY_DIR = "date="


def day_of(key: str) -> str | None:
    """The day (YYYY-MM-DD) of the directory a file key lies in, None for a key outside one."""
    first = key.split("/", 1)[0]
    return first[len(DAY_DIR):] if "/" in key and first.startswith(DAY_DIR) else None


def day_before(epoch: float) -> str | None:
    """The day (YYYY-MM-DD, UTC) of the second before `epoch`: no file written from `epoch` on lies in
    a day directory before it (a writer names the directory from its clock before the file). None for
    no bound (a missing or -inf `epoch`); after every day for +inf."""
    if epoch is None or np.isnan(epoch) or epoch == -np.inf:
        return None
    if epoch == np.inf:  # nothing is wanted: no day directory is listed
        return "9999-12-31"
    return str(np.datetime64(int(epoch) - 1, "s").astype("datetime64[D]"))


def parquet_files(fs: pafs.FileSystem, path: str, from_day: str | None = None) -> list[tuple[float, str]]:
    """(modification time, key under `path`) of the finished Parquet files below `path`, oldest first
    (dot-named files are still being written beside their final name). Day directories before
    `from_day` (YYYY-MM-DD) are not listed: what a reader that needs no earlier day lists stays a
    few days' files, not the log's life."""
    selector = pafs.FileSelector(path, recursive=from_day is None, allow_not_found=True)
    infos = fs.get_file_info(selector)
    if from_day is not None:
        for info in list(infos):
            if info.type == pafs.FileType.Directory and not (
                    info.base_name.startswith(DAY_DIR) and info.base_name[len(DAY_DIR):] < from_day):
                infos += fs.get_file_info(pafs.FileSelector(info.path, recursive=True, allow_not_found=True))
    return sorted((i.mtime.timestamp() if i.mtime is not None else 0.0, i.path[len(path):].lstrip("/"))
                  for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                  and not i.base_name.startswith("."))


def list_files(root: str, model: str, *, now: float | None = None, settle_s: float = SETTLE_S,
               from_day: str | None = None) -> list[str]:
    """Keys of the model's files old enough to be complete, oldest first (by modification time);
    from the day directory `from_day` on, when given."""
    fs, base = filesystem(model_dir(root, model))
    now = time.time() if now is None else now
    return [key for mtime, key in parquet_files(fs, base, from_day) if now - mtime >= settle_s]


#: the columns the monitor reads besides the features (and `probabilities` where present)
NEEDED = ("request_id", "version", "ts", "prediction", "shadow")

#: the live log's columns around the features (serving/live_log.py): features lie between these
BEFORE_FEATURES, AFTER_FEATURES = "routing_key", "prediction"


def feature_columns(column_names: list[str]) -> list[str]:
    """The feature columns of a live-log file, in order (between `routing_key` and `prediction`)."""
    if BEFORE_FEATURES not in column_names or AFTER_FEATURES not in column_names:
        return []
    return column_names[column_names.index(BEFORE_FEATURES) + 1:column_names.index(AFTER_FEATURES)]


def is_numeric(arrow_type) -> bool:
    """A numeric feature column (floats and integers); the gateway writes a model's categorical
    columns dictionary-encoded (text, booleans or integer codes), so anything else is categorical."""
    return pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)


#: the schema metadata key the gateway names a file's categorical feature columns under (a JSON list)
CATEGORICAL_KEY = b"handoff.categorical"


def categorical_features(schema: pa.Schema, names: list[str]) -> list[str]:
    """The categorical columns among the feature columns `names`: those the file's metadata names
    (Parquet reads an integer code back as plain integers), else every column that is not a number."""
    listed = (schema.metadata or {}).get(CATEGORICAL_KEY)
    if listed is not None:
        named = set(json.loads(listed))
        return [n for n in names if n in named]
    return [n for n in names if not is_numeric(schema.field(n).type)]


def category_values(column: pa.ChunkedArray, keep: np.ndarray) -> np.ndarray:
    """A categorical column's values at the rows `keep` as an object array (None for a gap), decoded
    through its dictionary once per chunk rather than value by value."""
    parts = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            codes = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            dictionary = np.array(chunk.dictionary.to_pylist() + [None], dtype=object)
            parts.append(dictionary[codes])
        else:
            parts.append(np.array(chunk.to_pylist(), dtype=object))
    values = np.concatenate(parts) if parts else np.empty(0, dtype=object)
    return values[keep]


def read_rows(root: str, model: str, key: str, number: int) -> tuple[Rows, list[str]]:
    """The file's non-shadow rows and its feature columns (numeric ones in `x`, categorical ones in
    `categories`); `CorruptFile` when it does not parse or lacks a column, `TransientRead` for an I/O error."""
    fs, base = filesystem(model_dir(root, model))
    try:
        with fs.open_input_file(f"{base}/{key}") as f:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            every = feature_columns(names)
            categorical = categorical_features(parquet.schema_arrow, every)
            features = [n for n in every if n not in categorical]
            missing = [c for c in NEEDED if c not in names]
            if missing or not every:
                raise CorruptFile(f"{key}: column(s) {missing or 'of features'} missing")
            wanted = [*NEEDED, *every, *(["probabilities"] if "probabilities" in names else [])]
            table = parquet.read(columns=wanted, use_threads=False)
    except CorruptFile:
        raise
    except OSError as exc:  # an I/O error (a throttled or dropped read, a file gone): worth trying again
        raise TransientRead(f"{key}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a file that does not parse
        raise CorruptFile(f"{key}: {type(exc).__name__}: {exc}") from None
    live = ~table.column("shadow").to_numpy(zero_copy_only=False).astype(bool)
    index = np.nonzero(live)[0]
    x = np.empty((len(index), len(features)))
    for j, f in enumerate(features):  # a gap (null) is NaN
        x[:, j] = table.column(f).cast("float64").to_numpy(zero_copy_only=False)[live]
    proba = None
    if "probabilities" in table.column_names:
        column = table.column("probabilities").combine_chunks()
        proba = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)[live]
    prediction = table.column("prediction").to_numpy(zero_copy_only=False)[live]
    rows = Rows(number, index, table.column("version").to_numpy(zero_copy_only=False)[live].astype(np.int64),
                table.column("ts").to_numpy(zero_copy_only=False)[live].astype("datetime64[ms]"), x,
                # a class index, or a regression model's predicted value (float64, kept as it is)
                prediction if prediction.dtype.kind == "f" else prediction.astype(np.int64),
                table.column("request_id").to_numpy(zero_copy_only=False)[live], proba,
                {c: category_values(table.column(c), live) for c in categorical})
    return rows, features
