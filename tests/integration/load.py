"""Load and pressure for integration tests: bounded client threads on 127.0.0.1, a CPU hog, and the
Serve replicas' actor ids read back from the dashboard (what tells a restart from a reconfigure)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROW = [50.0, 0.0, 80.0, 0.0, 20.0, 0.0, 30.0, 60.0, 30.0]


def infer_body(rows=(ROW,)) -> dict:
    return {"inputs": [{"name": "features", "shape": [len(rows), 9], "datatype": "FP32",
                        "data": [v for r in rows for v in r]}]}


def call(port, path, body=None, headers=None, raw: bytes | None = None, method=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


class LoadLoop:
    """Bounded load on 127.0.0.1 (at most `max_requests`, at most `max_seconds`), counting outcomes."""

    def __init__(self, port: int, model: str, threads: int = 3, max_requests: int = 200_000,
                 max_seconds: float = 300, headers: dict | None = None):
        self.port, self.model, self.headers = port, model, headers or {}
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.ok, self.failed, self.versions, self.failures, self.failed_at = 0, 0, {}, [], []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self.deadline and self.ok + self.failed < self.max_requests:
            try:
                status, headers, body = call(self.port, f"/v2/models/{self.model}/infer", infer_body(),
                                             headers=self.headers)
            except Exception as exc:  # noqa: BLE001 - a refused connection is a failed request
                status, headers, body = 0, {}, str(exc)
            with self._lock:
                if status == 200:
                    self.ok += 1
                    v = headers.get("x-model-version")
                    self.versions[v] = self.versions.get(v, 0) + 1
                else:
                    self.failed += 1
                    self.failures.append((status, body))
                    self.failed_at.append(time.monotonic())

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(60)


class CpuHog:
    """Another process that keeps one CPU busy for as long as the block runs (at most `max_seconds`)."""

    def __init__(self, max_seconds: float = 900):
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + "
                                      f"{self.max_seconds}\nwhile time.monotonic() < end: pass"])
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(timeout=30)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def serve_replicas(dashboard_url: str) -> dict[str, set[str]]:
    """Every Serve application's replicas on the cluster, by Ray actor id (Serve's REST API on the
    dashboard: a restarted replica is a new actor, a reconfigured one keeps its id)."""
    from cluster.jobs import cluster_token

    token = cluster_token()
    req = urllib.request.Request(f"{dashboard_url}/api/serve/applications/",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        apps = json.loads(r.read())["applications"]
    return {name: {rep["actor_id"] for dep in app["deployments"].values() for rep in dep["replicas"]
                   if rep.get("state") == "RUNNING"}
            for name, app in apps.items()}


def unchanged_except_new(before: dict[str, set[str]], after: dict[str, set[str]], new_apps=()) -> list[str]:
    """What restarted between two `serve_replicas` readings: each application of `before` that is
    still there must have the same replicas; only `new_apps` may appear. Empty when nothing did."""
    problems = [f"{app}: replicas {sorted(before[app])} became {sorted(after[app])}"
                for app in before if app in after and after[app] != before[app]]
    problems += [f"{app} appeared" for app in after if app not in before and app not in new_apps]
    return problems
