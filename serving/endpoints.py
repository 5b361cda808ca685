"""Where the gateway finds the version replicas' direct endpoints: a small named Ray actor.

Each `ModelVersion` replica registers its endpoint (address, port, secret) under its application
and renews it every few seconds; a graceful shutdown removes it, and an entry not renewed expires,
so a replica that died without shutting down drops out by itself. The gateway reads a version's
live entries every few seconds.

Why a directory and not Serve's `handle.broadcast("endpoint")`: reading it every few seconds
sends nothing to the version replicas (a broadcast is a call into each of them), and a replica is
listed as soon as its endpoint is up. The directory is one 0-CPU actor
for the cluster; the endpoints' secrets go only through Ray's authenticated channels.
"""

from __future__ import annotations

import time

import ray

DIRECTORY_NAME = "handoff-endpoints"
DIRECTORY_NAMESPACE = "handoff"
RENEW_S = 3.0
EXPIRE_S = 10.0  # an entry not renewed for this long belongs to a replica that is gone


@ray.remote(num_cpus=0, max_restarts=-1)
class EndpointDirectory:
    def __init__(self):
        self._entries: dict[str, dict[str, tuple[dict, float]]] = {}

    def put(self, app: str, replica: str, endpoint: dict) -> None:
        self._entries.setdefault(app, {})[replica] = (endpoint, time.monotonic() + EXPIRE_S)

    def remove(self, app: str, replica: str) -> None:
        self._entries.get(app, {}).pop(replica, None)

    def get(self, app: str) -> list[dict]:
        """The live endpoints of `app`'s replicas (expired ones are dropped)."""
        now = time.monotonic()
        live = {r: (e, t) for r, (e, t) in self._entries.get(app, {}).items() if t > now}
        self._entries[app] = live
        return [e for e, _ in live.values()]


def directory():
    """The cluster's directory actor (created by whoever asks first; it outlives Serve restarts)."""
    return EndpointDirectory.options(name=DIRECTORY_NAME, namespace=DIRECTORY_NAMESPACE, lifetime="detached",
                                     get_if_exists=True).remote()


class Registration:
    """Keeps one replica's entry in the directory: renewed on a thread until `close`."""

    def __init__(self, app: str, endpoint: dict):
        import threading

        self.app, self.replica, self.endpoint = app, endpoint["replica"], endpoint
        self._directory = directory()
        self._stop = threading.Event()
        ray.get(self._directory.put.remote(app, self.replica, endpoint), timeout=60)  # listed before it is ready
        self._thread = threading.Thread(target=self._renew, name="handoff-endpoint-renew", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self._directory.put.remote(self.app, self.replica, self.endpoint)
            except Exception:  # noqa: BLE001 - the directory restarts; the next renewal lists us again
                pass

    def close(self) -> None:
        self._stop.set()
        try:
            ray.get(self._directory.remove.remote(self.app, self.replica), timeout=5)
        except Exception:  # noqa: BLE001 - the entry expires by itself
            pass
