"""Where batch inference reads and writes: the input table's files, schema and fingerprint, and an
output that appears whole or not at all.

Paths are local or any pyarrow filesystem URI (`cluster.storage.filesystem`). The output is
written to a staging directory beside it and moved into place once every file is there; an
existing output is refused unless overwriting, and then it is replaced only after the new one is
complete.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.storage import filesystem
from serving.batch.schema import BatchInputError

_CHUNK = 8 << 20


@dataclass(frozen=True)
class InputTable:
    """A readable Parquet input: its URI, filesystem, files (in path order) with their Hive partition
    values and their own schemas (partition columns included), the table's schema (its first file's)
    and row count (from the footers)."""

    uri: str
    fs: pafs.FileSystem
    files: tuple[str, ...]
    schema: pa.Schema
    rows: int
    partitions: tuple[dict, ...] = ()
    file_schemas: tuple[pa.Schema, ...] = ()


def open_input(uri: str) -> InputTable:
    """The Parquet file or directory at `uri` (Hive partitions allowed), or `BatchInputError` naming
    the URI: nothing there, no Parquet files, or files that cannot be read as Parquet."""
    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise BatchInputError(f"cannot open input {uri!r}: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise BatchInputError(f"input not found: {uri!r}")
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive", exclude_invalid_files=False)
        fragments = sorted(dataset.get_fragments(), key=lambda f: f.path)
        if not fragments:
            raise BatchInputError(f"input {uri!r} holds no Parquet files")
        partitions = tuple(pads.get_partition_keys(f.partition_expression) or {} for f in fragments)
        return InputTable(uri, fs, tuple(f.path for f in fragments), dataset.schema,
                          sum(f.metadata.num_rows for f in fragments), partitions,
                          tuple(_file_schema(f.physical_schema, keys, dataset.schema)
                                for f, keys in zip(fragments, partitions)))
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchInputError(f"input {uri!r} is not readable as Parquet: {exc}") from None


def _file_schema(physical: pa.Schema, partition: dict, schema: pa.Schema) -> pa.Schema:
    """A file's columns as it is read: its own, then the Hive partition columns its path gives a value."""
    for name in partition:
        if name not in physical.names:
            physical = physical.append(schema.field(name))
    return physical


def fingerprint(table: InputTable) -> str:
    """sha256 over every input file's path (relative to the input) and bytes, in path order: the same
    digest means the same rows were scored."""
    digest = hashlib.sha256()
    root = posixpath.dirname(table.files[0]) if len(table.files) == 1 else posixpath.commonpath(table.files)
    for name in table.files:
        digest.update(name[len(root):].encode() + b"\0")
        with table.fs.open_input_stream(name) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def refuse_existing(uri: str, overwrite: bool, what: str = "output") -> None:
    """Refuse an existing `what` unless overwriting (naming the path and the flag), and one whose
    place cannot be looked at (an unknown URI scheme, storage that cannot be reached)."""
    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise BatchInputError(f"cannot open {what} {uri!r}: {exc}") from None
    if info.type != pafs.FileType.NotFound and not overwrite:
        raise BatchInputError(f"{what} {uri!r} already exists; choose another path or pass --overwrite")


def refuse_overlap(input_uri: str, uri: str, what: str = "output") -> None:
    """Refuse a `what` that is the input, lies inside it (its files would join the input's table) or
    holds it (overwriting it would delete the input), naming both."""
    try:
        (in_fs, inside), (fs, path) = filesystem(input_uri), filesystem(uri)
    except (pa.ArrowInvalid, OSError, ValueError):
        return  # refused, naming it, where it is opened
    if in_fs.type_name != fs.type_name:
        return
    inside, path = posixpath.normpath(inside), posixpath.normpath(path)
    if inside == path or path.startswith(inside.rstrip("/") + "/") or inside.startswith(path.rstrip("/") + "/"):
        raise BatchInputError(f"{what} {uri!r} overlaps the input {input_uri!r} (the same path, or one inside the "
                              "other); write it outside the input")


def staging_uri(uri: str, run_id: str) -> str:
    """A directory beside `uri` (same filesystem, so the final move is a rename) named for the run."""
    head, _, base = uri.rstrip("/").rpartition("/")
    return f"{head}/.{base}.staging-{run_id}" if head else f".{base}.staging-{run_id}"


def publish(staging: str, uri: str) -> None:
    """Move the complete staging directory to `uri`, replacing what is there only now."""
    fs, src = filesystem(staging)
    _, dst = filesystem(uri)
    old = None
    if fs.get_file_info(dst).type != pafs.FileType.NotFound:
        old = f"{src}.replaced"
        _move(fs, dst, old)
    _move(fs, src, dst)
    if old is not None:
        _delete(fs, old)


def discard(uri: str) -> None:
    """Remove a staging directory (a failed or refused run leaves nothing behind)."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        _delete(fs, path)


def _move(fs: pafs.FileSystem, src: str, dst: str) -> None:
    try:
        fs.move(src, dst)  # a rename on local and HDFS filesystems
    except (OSError, pa.ArrowNotImplementedError):  # object stores move files, not directories
        for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
            if info.type == pafs.FileType.File:
                fs.move(info.path, dst + info.path[len(src):])
        _delete(fs, src)


def _delete(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
    else:
        fs.delete_file(path)


@dataclass(frozen=True)
class WrittenFiles:
    """What a finished write holds: its files, their rows, and each file's key-value metadata."""

    files: tuple[str, ...]
    rows: int
    metadata: tuple[dict[str, str], ...]


def written_files(uri: str) -> WrittenFiles:
    """The Parquet files under `uri` (footers only: rows and metadata)."""
    fs, path = filesystem(uri)
    infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
    files, rows, metadata = [], 0, []
    for info in sorted(infos, key=lambda i: i.path):
        meta = pq.ParquetFile(info.path, filesystem=fs).metadata
        files.append(info.path)
        rows += meta.num_rows
        metadata.append({k.decode(): v.decode() for k, v in (meta.metadata or {}).items()
                         if not k.startswith(b"ARROW:")})
    return WrittenFiles(tuple(files), rows, tuple(metadata))
