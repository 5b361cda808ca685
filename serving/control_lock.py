"""One lock per cluster for serving changes: a small named Ray actor that hands out leases in turn.

Every change of what is served reads the gateway's routing table, changes one model and deploys the
table back (serving/control.py); two such changes at once (two models' loops, a loop and a CLI
command) would each write back a table without the other's change. Every caller takes this lock
first, wherever it runs (a CLI process, the monitor actor, a Ray job): the actor is one per cluster
(`handoff-serving-lock` in namespace `handoff`), so the lock holds across processes and nodes.

The holder renews its lease from a thread while it works; a holder that dies stops renewing and its
lease runs out (`LEASE_S`), so a killed command never blocks the cluster for long. Waiters are
served in the order they first asked; a waiter that stops asking (killed while it waited) loses its
place after `WAITER_GONE_S`, so it cannot block the ones behind it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import ray

LOCK_NAME = "handoff-serving-lock"
LOCK_NAMESPACE = "handoff"
LEASE_S = 30.0          # a holder that has not renewed for this long is gone
WAITER_GONE_S = 5.0     # a waiter that has not asked for this long has given up
POLL_S = 0.1            # how often a waiter asks
DEFAULT_WAIT_S = 900.0  # how long a caller waits before it gives up (a canary's deploy takes ~30 s)


class LockTimeout(TimeoutError):
    """The lock stayed held by someone else for longer than the caller would wait."""


class Leases:
    """The lease and the queue, pure (the lock actor runs one; a sync actor runs one method at a time).
    `clock` is monotonic seconds, `wall` the time shown to waiters."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._clock, self._wall = clock, wall
        self._holder: dict | None = None          # ticket, who, since, expires
        self._waiting: dict[str, float] = {}      # ticket → last time it asked (in asking order)

    def try_acquire(self, ticket: str, who: str, lease_s: float = LEASE_S) -> dict:
        """Grant the lease to `ticket` if it is free (or ran out) and `ticket` is first in line; else
        keep its place. Returns whether it was granted, and who holds it."""
        now = self._clock()
        if self._holder is not None and self._holder["expires"] < now:
            self._holder = None
        self._waiting = {t: seen for t, seen in self._waiting.items() if now - seen < WAITER_GONE_S or t == ticket}
        self._waiting[ticket] = now
        if self._holder is None and next(iter(self._waiting)) == ticket:
            del self._waiting[ticket]
            self._holder = {"ticket": ticket, "who": who, "since": self._wall(), "expires": now + lease_s}
            return {"granted": True}
        holder = self._holder or {}
        return {"granted": False, "holder": holder.get("who"), "ahead": list(self._waiting).index(ticket)}

    def renew(self, ticket: str, lease_s: float = LEASE_S) -> bool:
        """Extend the lease; False when `ticket` no longer holds it (it ran out, or the actor restarted)."""
        if self._holder is None or self._holder["ticket"] != ticket:
            return False
        self._holder["expires"] = self._clock() + lease_s
        return True

    def release(self, ticket: str) -> None:
        if self._holder is not None and self._holder["ticket"] == ticket:
            self._holder = None
        self._waiting.pop(ticket, None)

    def holder(self) -> dict | None:
        """Who holds the lease now (None: free)."""
        if self._holder is None or self._holder["expires"] < self._clock():
            return None
        return {"who": self._holder["who"], "since": self._holder["since"]}


ServingLock = ray.remote(num_cpus=0, max_restarts=-1)(Leases)


def lock_actor():
    """The cluster's lock actor (created by whoever asks first; it outlives Serve restarts)."""
    return ServingLock.options(name=LOCK_NAME, namespace=LOCK_NAMESPACE, lifetime="detached",
                               get_if_exists=True).remote()


def caller() -> str:
    """How a holder is named to those who wait for it: host, process and what it runs."""
    import sys

    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
    return f"{socket.gethostname()}:{os.getpid()} ({command or 'python'})"


@contextlib.contextmanager
def serving_lock(who: str | None = None, wait_s: float = DEFAULT_WAIT_S,
                 say: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Hold the cluster's serving lock for the block (renewed on a thread); `LockTimeout` when it
    stays held by another caller for `wait_s`."""
    actor, ticket, who = lock_actor(), uuid.uuid4().hex, who or caller()
    deadline, told = time.monotonic() + wait_s, False
    while True:
        answer = ray.get(actor.try_acquire.remote(ticket, who), timeout=60)
        if answer["granted"]:
            break
        if time.monotonic() > deadline:
            ray.get(actor.release.remote(ticket), timeout=60)
            raise LockTimeout(f"another serving change held the cluster's serving lock for {wait_s:.0f} s "
                              f"(held by {answer['holder'] or 'nobody; others wait before this one'}); "
                              f"try again when it is done")
        if not told and answer["holder"]:
            say(f"waiting for another serving change to finish (held by {answer['holder']})")
            told = True
        time.sleep(POLL_S)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_S / 4):
            try:
                ray.get(actor.renew.remote(ticket), timeout=LEASE_S / 2)
            except Exception:  # noqa: BLE001 - one missed renewal is not fatal; the next one tries again
                continue

    renewer = threading.Thread(target=renew, name="handoff-serving-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        with contextlib.suppress(Exception):
            ray.get(actor.release.remote(ticket), timeout=60)
