"""Is the process behind a recorded pid still the one that was recorded? (`handoff down` signals
only then: a pid reused by another program after a reboot or a crash is left alone.)

A process is known by its pid, its start time and its command line, read with `ps` (the same on
Linux and macOS); a pid alone is reused by the kernel. Where /proc is (Linux) the start time compared
is the kernel's own, in clock ticks since boot: `ps -o lstart` derives the wall-clock time from the
boot time, which moves when the system clock is stepped (a CI run's `handoff down` once found both of
its own processes "started" at other times and left them running).
"""

from __future__ import annotations

import subprocess

from pydantic import BaseModel


class ProcessIdentity(BaseModel):
    pid: int
    started: str   # `ps -o lstart=`: the start time to the second
    command: str   # `ps -o command=`, cut to 300 characters
    start_ticks: int | None = None  # /proc/PID/stat's starttime (Linux): unmoved by clock changes


def start_ticks(pid: int) -> int | None:
    """The process's start in clock ticks since boot (field 22 of /proc/PID/stat), None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


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
    return ProcessIdentity(pid=pid, started=" ".join(parts[:5]), command=parts[5][:300], start_ticks=start_ticks(pid))


def still_the_same(recorded: ProcessIdentity | None, pid: int, expect_in_command: str) -> tuple[bool, str]:
    """(True, "") when `pid` runs the recorded process (or, recorded before identities were kept,
    a process whose command line names `expect_in_command`); else (False, why)."""
    now = identity_of(pid)
    if now is None:
        return False, f"pid {pid} is not running"
    if recorded is not None:
        by_ticks = recorded.start_ticks is not None and now.start_ticks is not None
        same_start = now.start_ticks == recorded.start_ticks if by_ticks else now.started == recorded.started
        if not same_start or now.command != recorded.command:
            return False, (f"pid {pid} is now another process (started {now.started}: {now.command[:80]!r}; "
                           f"recorded: started {recorded.started}: {recorded.command[:80]!r})")
        return True, ""
    if expect_in_command not in now.command:
        return False, f"pid {pid} runs {now.command[:80]!r}, not {expect_in_command}"
    return True, ""
