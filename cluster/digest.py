"""Stable short digests of plain values (deployment code versions, job submission ids)."""

from __future__ import annotations

import hashlib
import json


def stable_digest(*parts: object) -> str:
    """16 hex digits that depend only on the values of `parts` (JSON with sorted keys; anything else
    by `str`): equal numbers digest alike whatever their type (0 and 0.0, 2 and 2.0), as Python
    compares them, so a value that went through JSON or a config reload keeps its digest."""
    return hashlib.sha256(json.dumps(_canonical(list(parts)), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _canonical(value: object) -> object:
    """`value` with every integral float as an int, in lists, tuples and dict values alike."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def source_digest(*packages: str) -> str:
    """16 hex digits of the Python source of `packages` (importable names) as this process would
    import them: every `.py` file under each, by relative path and content. What a deployment's code
    version is made of, so that new code restarts its replicas and nothing else does."""
    import importlib.util
    from pathlib import Path

    digest = hashlib.sha256()
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{package!r} is not an importable package")
        for root in map(Path, spec.submodule_search_locations):
            for path in sorted(root.rglob("*.py")):
                digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
