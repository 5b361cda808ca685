"""Where a directory or file is to be made on this machine's disk (pure: pathlib only)."""

from __future__ import annotations

from pathlib import Path


def file_in_the_way(path: Path) -> Path | None:
    """The file that stands where `path`, or one of its parents, would have to be a directory (nothing
    could be made under it); None when the way is clear. The nearest path that exists decides: a
    directory clears the way, a file blocks it; one that cannot even be read is left to the write to name."""
    for candidate in (path, *path.parents):
        try:
            if candidate.exists():
                return None if candidate.is_dir() else candidate
        except OSError:
            return None
    return None
