"""Compaction of the live log: small files every version has read, merged into larger ones.

The gateway writes a file per flush (thousands a day under light traffic); reading, listing and
keeping them costs more per row the smaller they are. Once every version's monitor position is past
a file, its rows are never read by the monitor again, so files of one day with the same schema are
merged (`plan_merges`, pure) into files of up to `target_rows` rows, in their order: the same rows,
the same columns, fewer files. `merge_files` writes the merge beside the sources under a name no
reader lists; the core moves it into place and deletes the sources, recording each step so that a
crash at any point leaves every row in exactly one listed file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage import filesystem, join
from monitoring.live_reader import model_dir

#: as the gateway writes them (serving/live_log.py PARQUET_OPTIONS)
OPTIONS = {"compression": "lz4", "use_dictionary": ["version", "routing_key", "prediction", "label", "shadow"]}
#: rows of a merged file's row groups: a reader of recent rows (a retraining's) skips the older groups by their statistics
MERGED_ROW_GROUP = 65_536


@dataclass(frozen=True)
class CompactionSpec:
    min_files: int = 16          # small files of a day and schema before they are merged
    target_rows: int = 1_000_000  # rows of a merged file at most; files this large are left alone

    def __post_init__(self):
        if self.min_files < 2 or self.target_rows < 1:
            raise ValueError("compaction needs min_files ≥ 2 and target_rows ≥ 1")


def schema_id(schema: pa.Schema) -> str:
    """Files merge only with files of the same columns and types (metadata aside)."""
    return hashlib.sha256(str(schema.remove_metadata()).encode()).hexdigest()[:16]


def describe(root: str, model: str, key: str) -> tuple[int, str]:
    """(rows, schema id) of a live-log file, from its footer."""
    fs, base = filesystem(model_dir(root, model))
    with fs.open_input_file(join(base, key)) as f:
        parquet = pq.ParquetFile(f)
        return parquet.metadata.num_rows, schema_id(parquet.schema_arrow)


def plan_merges(files: list[tuple[str, int, str]], spec: CompactionSpec) -> list[list[str]]:
    """Groups of file keys to merge, from (key, rows, schema id) in read order: per day directory
    and schema, the files under `target_rows`, taken in order into groups of at most `target_rows`
    rows; only when a day and schema has at least `min_files` of them, and only groups of two or more."""
    by_group: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for key, rows, schema in files:
        if rows < spec.target_rows:
            by_group.setdefault((key.rsplit("/", 1)[0] if "/" in key else "", schema), []).append((key, rows))
    merges = []
    for small in by_group.values():
        if len(small) < spec.min_files:
            continue
        group, total = [], 0
        for key, rows in small:
            if group and total + rows > spec.target_rows:
                if len(group) > 1:
                    merges.append(group)
                group, total = [], 0
            group.append(key)
            total += rows
        if len(group) > 1:
            merges.append(group)
    return merges


def merge_files(root: str, model: str, keys: list[str], tmp_key: str) -> int:
    """Write the rows of `keys`, in order, as one file at `tmp_key`; its row count."""
    fs, base = filesystem(model_dir(root, model))
    tables = [pq.read_table(join(base, k), filesystem=fs) for k in keys]
    merged = pa.concat_tables([t.replace_schema_metadata(_own_metadata(t)) for t in tables])
    pq.write_table(merged, join(base, tmp_key), filesystem=fs, row_group_size=MERGED_ROW_GROUP, **OPTIONS)
    return merged.num_rows


def _own_metadata(table: pa.Table) -> dict:
    """The gateway's schema metadata (which columns are categorical), without what pandas or
    Parquet writers add: the merged file says what its sources said."""
    return {k: v for k, v in (table.schema.metadata or {}).items() if k.startswith(b"handoff.")}
