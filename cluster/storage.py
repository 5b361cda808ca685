"""Paths that may be local or any pyarrow filesystem URI (s3://, gs://, hdfs://, file://)."""

from __future__ import annotations

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
