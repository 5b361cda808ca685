"""Is the process behind a recorded pid still the one that was recorded? (`handoff down` signals
only then: a pid reused by another program after a reboot or a crash is left alone.)

A process is known by its pid, its start time and its command line, read with `ps` (the same on
Linux and macOS); a pid alone is reused by the kernel.
"""

from __future__ import annotations

import subprocess

from pydantic import BaseModel


class ProcessIdentity(BaseModel):
    pid: int
    started: str   # `ps -o lstart=`: the start time to the second
    command: str   # `ps -o command=`, cut to 300 characters


def identity_of(pid: int) -> ProcessIdentity | None:
    """The running process `pid`'s identity, None when no such process runs."""
    try:
        out = subprocess.run(["ps", "-ww", "-o", "lstart=", "-o", "command=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip()
    if out.returncode != 0 or not line:
        return None
    parts = line.split(None, 5)  # lstart is five words: "Thu Dec  3 08:01:12 2026"
    if len(parts) < 6:
        return None
    return ProcessIdentity(pid=pid, started=" ".join(parts[:5]), command=parts[5][:300])


def still_the_same(recorded: ProcessIdentity | None, pid: int, expect_in_command: str) -> tuple[bool, str]:
    """(True, "") when `pid` runs the recorded process (or, recorded before identities were kept,
    a process whose command line names `expect_in_command`); else (False, why)."""
    now = identity_of(pid)
    if now is None:
        return False, f"pid {pid} is not running"
    if recorded is not None:
        if (now.started, now.command) != (recorded.started, recorded.command):
            return False, (f"pid {pid} is now another process (started {now.started}: {now.command[:80]!r}; "
                           f"recorded: started {recorded.started}: {recorded.command[:80]!r})")
        return True, ""
    if expect_in_command not in now.command:
        return False, f"pid {pid} runs {now.command[:80]!r}, not {expect_in_command}"
    return True, ""
