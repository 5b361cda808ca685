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
    merged) in name order: per day, schema and generation, the files under `target_rows` taken in
    name order, `min_files` at a time (fewer when the next would pass `target_rows`: a group of two or
    more that holds all a merge may). One generation a merge: sixteen files become one of the next,
    so a label is rewritten once a generation (log₁₆ of the files) however long the monitor runs,
    and a day keeps under `min_files` files a generation beside the merges. A file of another
    generation may lie between a merge's sources (one that appeared late sorts before the merge of
    the files around it): every reader applies a label by when its file was written, not by where
    its name sorts, so such a straggler is merged with the next files of its own generation."""
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for key, rows, schema in files:
        if schema is not None and rows < spec.target_rows:
            here = (key.rsplit("/", 1)[0] if "/" in key else "", schema, generation_of(key))
            groups.setdefault(here, []).append((key, rows))
    merges = []
    for members in groups.values():
        run, total = [], 0
        for key, rows in members:
            if run and total + rows > spec.target_rows:
                if len(run) >= 2:
                    merges.append(run)
                run, total = [], 0
            run.append(key)
            total += rows
            if len(run) == spec.min_files:
                merges.append(run)
                run, total = [], 0
    return sorted(merges, key=lambda m: m[-1])


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
