"""Compaction of label files: the small files the gateway writes per feedback batch, merged in order.

A label file is written per accepted `POST /feedback` batch; a model labelled as it is answered
collects thousands a day, each one a list entry of the monitor's state, a read at every start and a
listing at every pass. As soon as the monitor has read them, runs of `min_files` consecutive files
of one day and generation are merged into one of the next generation (up to `target_rows` labels):
the files the state lists stay under `min_files` a generation, and a label is rewritten once a
generation, however fast label files come. A merge is the sources' rows
concatenated in their order, so "the latest label sent for an id wins" reads the same from the
merge as from its sources; it is named after its last source (`…-m.parquet`: a reader that lists
files by name meets it where its sources were), and its metadata lists its sources and their row
counts (`segments`), so that a reader kept between calls that has read some of the sources applies
only the rows it has not (a merge it read whole again would put older labels over newer ones).
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.storage import join
from monitoring.compaction import CompactionSpec, schema_id

SEGMENTS = b"handoff.label_segments"
#: the columns of a label file (serving/feedback.py labels_table); `value` only for a regression model
COLUMNS = ("request_id", "label", "class_index", "value", "ts")


_STAMP = re.compile(r"(?:^|/)part-(\d+)-")
_GENERATION = re.compile(r"-m(\d+)$")


def stamp_of(key: str) -> float | None:
    """When a label file was written (epoch seconds, from its name; a merge bears its last source's),
    None for a name the gateway does not give."""
    found = _STAMP.search(key)
    return int(found.group(1)) / 1000 if found else None


def generation_of(key: str) -> int:
    """How many merges deep a label file is: 0 for a gateway's file, K for a merge named `…-mK`."""
    stem = key[: -len(".parquet")] if key.endswith(".parquet") else key
    found = _GENERATION.search(stem)
    return int(found.group(1)) if found else 0


def plan_label_merges(files: list[tuple[str, int, str]], spec: CompactionSpec) -> list[list[str]]:
    """Groups of label files to merge, from (key, rows, schema id: None for a file that cannot be
    merged) in name order: runs of consecutive files of one day, schema and generation, each under
    `target_rows` and together at most `target_rows`, of `min_files` files (a longer run gives
    several). Only consecutive files: a merge takes its last source's place in the order, so no file
    may lie between its sources. One generation a merge: sixteen files become one of the next, so a
    label is rewritten once per generation (log₁₆ of the files) however long the monitor runs, and
    the files a day holds stay under `min_files` per generation beside the merges."""
    merges, run, total, group = [], [], 0, None
    for key, rows, schema in [*files, (None, 0, None)]:
        here = (key.rsplit("/", 1)[0] if key and "/" in key else "", schema, generation_of(key or ""))
        joins = key is not None and schema is not None and rows < spec.target_rows  # may be a source
        full = joins and here == group and total + rows > spec.target_rows  # the run holds all it may
        if run and (not joins or here != group or full or len(run) == spec.min_files):
            if len(run) == spec.min_files or (full and len(run) >= 2):
                merges.append(run)
            run, total = [], 0
        if joins:
            run.append(key)
            total, group = total + rows, here
    return merges


def merged_name(last_source: str) -> str:
    """The key of a merge whose last source is `last_source`: beside it in name order, under a name
    no other file has (a gateway's `part-T-U.parquet` gives `part-T-U-m1.parquet`, a merge's `-mK`
    gives `-mK+1`: names of one lineage share a prefix no other file has)."""
    stem = last_source[: -len(".parquet")] if last_source.endswith(".parquet") else last_source
    found = _GENERATION.search(stem)
    if found:
        return f"{stem[:found.start()]}-m{int(found.group(1)) + 1}.parquet"
    return f"{stem}-m1.parquet"


def shape_of(fs: pafs.FileSystem, base: str, key: str) -> tuple[int, str | None]:
    """(rows, schema id) of a label file from its footer; (0, None) for one that does not parse."""
    try:
        with fs.open_input_file(join(base, key)) as f:
            parquet = pq.ParquetFile(f)
            return parquet.metadata.num_rows, schema_id(parquet.schema_arrow)
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - not a Parquet file: never merged
        return 0, None


def segments_of(schema: pa.Schema, key: str, rows: int) -> list[dict]:
    """The original label files a file holds, in order, with their rows: a merge's from its metadata,
    a gateway's own file is one segment (itself)."""
    raw = (schema.metadata or {}).get(SEGMENTS)
    if raw is None:
        return [{"key": key, "rows": rows}]
    return json.loads(raw)


def merge_label_files(fs: pafs.FileSystem, base: str, keys: list[str], tmp_key: str) -> tuple[int, str]:
    """Write the labels of `keys`, in order, as one file at `tmp_key` under `base` on `fs`, its metadata
    naming every original file it holds; its (rows, schema id)."""
    tables, segments = [], []
    for key in keys:
        table = pq.read_table(join(base, key), filesystem=fs)
        segments += segments_of(table.schema, key, table.num_rows)
        tables.append(table.select([c for c in COLUMNS if c in table.column_names]).replace_schema_metadata(None))
    merged = pa.concat_tables(tables).replace_schema_metadata({SEGMENTS: json.dumps(segments).encode()})
    pq.write_table(merged, join(base, tmp_key), filesystem=fs)
    return merged.num_rows, schema_id(merged.schema)
