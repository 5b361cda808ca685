"""Paths that may be local or any pyarrow filesystem URI (s3://, gs://, hdfs://, file://)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs as pafs


def absolute(uri: str) -> str:
    """A URI as any process sees it: local paths made absolute (a Ray worker's directory is not ours)."""
    return uri if "://" in uri else str(Path(uri).expanduser().absolute())


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a URI or a (relative) local path."""
    return pafs.FileSystem.from_uri(absolute(uri))


def join(base: str, name: str) -> str:
    """`base/name` for a URI or a local path."""
    return f"{base.rstrip('/')}/{name}" if "://" in base else str(Path(base) / name)


def renames_atomically(fs: pafs.FileSystem) -> bool:
    """A filesystem whose rename replaces a file in one step (a local disk, HDFS); an object store's
    move is a copy and a delete, two requests that may fail between."""
    return isinstance(fs, (pafs.LocalFileSystem, pafs.HadoopFileSystem))


def staging_path(fs: pafs.FileSystem, final: str) -> str:
    """Where to write a file that readers must see whole or not at all: beside `final` under a
    dot-name (readers skip those), moved over by `publish`, where renames are atomic; `final` itself
    on an object store, where an object appears whole when its upload completes (a copy and a
    delete there could leave both when the delete fails, and the rows written twice)."""
    if not renames_atomically(fs):
        return final
    directory, name = final.rsplit("/", 1) if "/" in final else ("", final)
    return f"{directory}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if directory else f".{name}.{uuid.uuid4().hex[:8]}.tmp"


def publish(fs: pafs.FileSystem, staged: str, final: str) -> None:
    """Put a file written at `staging_path(fs, final)` in place."""
    if staged != final:
        fs.move(staged, final)
