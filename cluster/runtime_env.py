"""The one builder of a Ray `runtime_env` that installs a model's extra packages (pure).

Ray's `pip` runtime environment makes, once per node and package list, a virtualenv that sees the
cluster's own packages (from a venv it clones it) and pip-installs the list into it; every task,
actor, replica or job given the same list on that node reuses it. Handoff passes only what the
cluster lacks (training/environment.py `unmet`), in one canonical form, so equal lists make equal
environments (and equal Serve deployment versions: no restart).
"""

from __future__ import annotations

from collections.abc import Iterable


def pip_env(packages: Iterable[str]) -> dict:
    """The `runtime_env` fields that install `packages` ({} for none: the cluster's environment as it
    is). pip's own consistency check is off: the cluster's packages are not the model's to judge."""
    packages = list(packages)
    return {"pip": {"packages": packages, "pip_check": False}} if packages else {}


def installer_failure(text: str, limit: int = 2000) -> str:
    """What a user needs from Ray's report of a runtime environment that failed to set up: pip's own
    `ERROR:` lines (they name the requirement and why), not the agent's traceback around them; else
    the report's last line. Short enough for one error line (`limit` characters)."""
    lines = [line.strip() for line in str(text).splitlines()]
    first = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), None)
    kept = [line for line in lines[first:] if line] if first is not None else [line for line in lines if line][-1:]
    said = " ".join(kept) or str(text).strip()
    return said if len(said) <= limit else said[:limit - 1] + "…"
