"""Stop a Ray head's process group in Ray's own order: the raylet, then the rest, the GCS last.

Ray's processes stop within ~2 s of SIGTERM, but the GCS and the raylet linger ~30 s when the
group is signalled at once (Ray 2.60 here: the whole group SIGTERMed took 33 s; the raylet alone
first, then the rest with the GCS, still 32 s; in this order, 1.9 s). `ray stop` stops in three
steps, each waiting for the one before: the raylet; the dashboard, agents, log monitor and client
server (and `ray start --block`, which takes its children with it); the GCS. It stops every Ray
on the machine, though, and `handoff up`'s head is one process group among others (a user's own
Ray, the tests'), so the same order is applied here to that group alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

from cluster.mlflow_server import terminate_process_group


@dataclass(frozen=True)
class GroupMember:
    pid: int
    name: str     # the executable's name (ps `comm`: at most 15 characters on Linux, a path on macOS)
    zombie: bool  # exited, not yet reaped by its parent: stopped


def stop_phases(members: list[GroupMember]) -> list[list[int]]:
    """The live members' pids in the order they are stopped: raylets, then every other process,
    GCS servers last; empty phases are left out."""
    def kind(m: GroupMember) -> int:
        base = os.path.basename(m.name)
        return 0 if base == "raylet" else 2 if base.startswith("gcs_server") else 1

    live = [m for m in members if not m.zombie]
    return [phase for phase in ([m.pid for m in live if kind(m) == k] for k in range(3)) if phase]


def parse_ps(text: str, pgid: int) -> list[GroupMember]:
    """The members of process group `pgid` in `ps -axo pid=,pgid=,stat=,comm=` output."""
    members = []
    for line in text.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[1].isdigit() and int(parts[1]) == pgid:
            members.append(GroupMember(int(parts[0]), parts[3].strip(), parts[2].startswith("Z")))
    return members


def group_members(pgid: int) -> list[GroupMember]:
    out = subprocess.run(["ps", "-axo", "pid=,pgid=,stat=,comm="], capture_output=True, text=True, check=True)
    return parse_ps(out.stdout, pgid)


def stop_ray_head(pid: int, grace_s: float) -> None:
    """SIGTERM the group led by `pid` phase by phase (`stop_phases`), each phase waited for until it
    is gone; whatever is left when `grace_s` is spent is SIGKILLed, the whole group."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    try:
        for phase in stop_phases(group_members(pgid)):
            for member in phase:
                try:
                    os.kill(member, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            pending = set(phase)
            while pending and time.monotonic() < deadline:
                time.sleep(0.1)
                pending &= {m.pid for m in group_members(pgid) if not m.zombie}
                _reap(pid)
            if pending:
                break
    except (OSError, subprocess.CalledProcessError):  # no `ps`: the whole group at once, as before
        terminate_process_group(pid)
    while time.monotonic() < deadline and _group_alive(pgid, pid):
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _group_alive(pgid: int, leader: int) -> bool:
    _reap(leader)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    try:
        return any(not m.zombie for m in group_members(pgid))
    except (OSError, subprocess.CalledProcessError):
        return True


def _reap(pid: int) -> None:
    """Collect the group leader's exit status if it is this process's child (`handoff up` in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
