"""Which code runs: the git state of a checkout, carried into Ray jobs whose copy has no `.git`.

A job's `working_dir` is uploaded without `.git` (cluster/jobs.py), so code running in a job cannot
ask git which commit it is. The submitter can: `JobRunner.submit` records its checkout's state in
the job's environment, and `source_state` reads it back where there is no checkout.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

COMMIT_ENV = "HANDOFF_SOURCE_COMMIT"
DIRTY_ENV = "HANDOFF_SOURCE_DIRTY"
UNKNOWN = ("unknown", True)


def git_state(repo_dir: Path) -> tuple[str, bool]:
    """(commit, dirty) of the checkout at `repo_dir`; ('unknown', True) outside a git checkout.
    Dirty means a tracked file differs from the commit (untracked files do not count)."""
    try:
        commit = subprocess.run(["git", "-C", str(repo_dir), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return commit, bool(status.strip())


def source_env(repo_dir: Path) -> dict[str, str]:
    """What a job submitted from `repo_dir` is told about its code (nothing outside a checkout)."""
    commit, dirty = git_state(repo_dir)
    return {} if commit == UNKNOWN[0] else {COMMIT_ENV: commit, DIRTY_ENV: str(dirty).lower()}


def source_state(repo_dir: Path, environ: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The checkout's own state; in a copy without `.git` (a Ray job), what its submitter recorded."""
    state = git_state(repo_dir)
    environ = os.environ if environ is None else environ
    if state == UNKNOWN and environ.get(COMMIT_ENV):
        return environ[COMMIT_ENV], environ.get(DIRTY_ENV, "true") != "false"
    return state
