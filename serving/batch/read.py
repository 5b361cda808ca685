"""Read the input table into Ray Data: one read unit per Parquet file, streamed in blocks.

Written here rather than calling `ray.data.read_parquet`, for one measured reason: in Ray 2.60 that
reader starts with a file-listing task that asks for a whole CPU and cannot be given less. On a
cluster whose CPUs are held by Serve replicas and the scoring actors (`handoff up` with a served
model and the pool on a 2-core laptop: gateway 0.5 + versions + pool) the listing never starts and
the run hangs. The input's files are already known (`files.open_input`), so the driver hands
Ray Data the list (`from_items`: no task) and read tasks of a quarter CPU read each file in blocks,
with Hive partition values (`day=3/`) as columns like any other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from serving.batch.files import InputTable

#: the CPUs each read task asks for (reading is light next to the model call)
READ_CPUS = 0.25


def read_units(table: InputTable) -> list[dict[str, str]]:
    """One unit per file: its path and its Hive partition values (as text, typed when read; None for
    a null partition, Hive's `__HIVE_DEFAULT_PARTITION__`)."""
    return [{"path": path, **{f"partition.{k}": None if v is None else str(v) for k, v in keys.items()}}
            for path, keys in zip(table.files, table.partitions)]


def read_blocks(units: pa.Table, *, fs, schema: pa.Schema, columns: list[str], block_rows: int) -> Iterator[pa.Table]:
    """The rows of each unit's file, `block_rows` at a time, as `columns` (partition values filled in)."""
    for unit in units.to_pylist():
        source = pq.ParquetFile(unit["path"], filesystem=fs)
        names = set(source.schema_arrow.names)  # a property built anew on each use: once per file
        in_file = [c for c in columns if c in names]
        # a Hive partition value is constant over the file: typed once, repeated per block by Arrow
        constant = {name: pa.scalar(unit.get(f"partition.{name}")).cast(schema.field(name).type)
                    for name in columns if name not in in_file}
        for batch in source.iter_batches(batch_size=block_rows, columns=in_file):
            block = pa.Table.from_batches([batch])
            for name, value in constant.items():
                block = block.append_column(schema.field(name), pa.repeat(value, block.num_rows))
            yield block.select(columns)


def row_bytes(schema: pa.Schema, columns) -> int:
    """An estimate of one row's in-memory bytes over `columns` (fixed-width types exactly, others 32)."""
    total = 0
    for name in columns:
        try:
            width = schema.field(name).type.bit_width  # pyarrow raises for variable-width types
        except ValueError:
            width = 0
        total += max(1, width // 8) if width > 0 else 32
    return max(1, total)


def read_dataset(table: InputTable, columns: list[str], block_rows: int, concurrency: int | None = None):
    """The Ray Dataset of the input's `columns`, in blocks of about `block_rows` rows, read by at most
    `concurrency` tasks at once (None: as many as Ray Data schedules)."""
    import ray.data

    units = read_units(table)
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    # each yielded block stays a block (Ray Data would merge blocks up to 128 MiB: one actor's work)
    ds.context.target_max_block_size = max(1, block_rows * row_bytes(table.schema, columns))
    # a task pool of at most `concurrency` tasks (`map_batches(concurrency=)` is deprecated since Ray 2.51)
    return ds.map_batches(read_blocks, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS,
                          compute=ray.data.TaskPoolStrategy(size=concurrency),
                          fn_kwargs={"fs": table.fs, "schema": table.schema, "columns": list(columns),
                                     "block_rows": block_rows})
