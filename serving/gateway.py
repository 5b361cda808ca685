"""The `Gateway` Serve deployment: Handoff's HTTP front and traffic split for every served model.

Each gateway replica runs its own uvicorn server (port 8000, `SO_REUSEPORT`, so several replicas on
one node share the port) instead of Serve's proxy, and sends each request to a replica of the chosen
version over a direct connection (serving/replica_client.py; the version's Serve deployment handle
is the fallback, or the only path with `transport: handle`). The serving benchmark measured why:
Serve's proxy costs ~10 ms of CPU a request on this machine, a Serve handle call ~40% of this
front's CPU; the front with the direct path answers ~2,000 requests/s on 2 cores.

The traffic policies arrive as `user_config` (`{"models": {NAME: {"policy": JSON, "batching": {V: ...}}}}`):
a change reaches `reconfigure` in the running replicas, which swap the routing table between two
requests. Nothing is restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from serving.batcher import Batcher
from serving.endpoints import directory as endpoint_directory
from serving.http_app import Answer, build_asgi
from serving.live_log import LiveLog, should_log
from serving.model_version import DEPLOYMENT as VERSION_DEPLOYMENT
from serving.model_version import app_name
from serving.policy import TrafficPolicy
from serving.protocol import BadRequest, ModelSignature
from serving.replica_client import ReplicaPool

log = logging.getLogger(__name__)
GATEWAY_APP = "handoff-gateway"
GATEWAY_DEPLOYMENT = "Gateway"
SHADOW_TIMEOUT_S = 10.0  # a shadow that does not answer in time counts as failed
LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


@dataclass
class ModelRoutes:
    """What the gateway knows of one model: its signature, policy and a handle per version."""

    sig: ModelSignature
    policy: TrafficPolicy
    handles: dict[int, object]
    batchers: dict[int, Batcher]
    rng: random.Random = field(default_factory=random.Random)


class _Metrics:
    """Ray metrics (exported to Prometheus by every node's metrics agent).

    Recorded once a second from what the requests left in memory: a Ray metric record on the
    request path was ~10% of the gateway's CPU and contended with Serve's router thread."""

    def __init__(self):
        from ray.util import metrics

        keys = ("model", "version")
        self.counters = {
            "requests": metrics.Counter("handoff_requests_total", "answered requests", tag_keys=keys),
            "errors": metrics.Counter("handoff_request_errors_total", "requests a version failed", tag_keys=keys),
            "shadow": metrics.Counter("handoff_shadow_requests_total", "mirrored rows answered", tag_keys=keys),
            "shadow_agreements": metrics.Counter("handoff_shadow_agreements_total",
                                                 "mirrored rows whose prediction matched the live answer",
                                                 tag_keys=keys),
            "shadow_errors": metrics.Counter("handoff_shadow_errors_total", "mirrored requests that failed",
                                             tag_keys=keys),
        }
        self.latency = metrics.Histogram("handoff_request_latency_ms", "gateway latency of answered requests",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=keys)
        self.totals: dict[tuple[str, int, str], int] = {}
        self._unrecorded: dict[tuple[str, int, str], int] = {}
        self._latencies: list[tuple[str, int, float]] = []

    def count(self, model: str, version: int, what: str, n: int = 1) -> None:
        key = (model, version, what)
        self.totals[key] = self.totals.get(key, 0) + n
        self._unrecorded[key] = self._unrecorded.get(key, 0) + n

    def observe_latency(self, model: str, version: int, ms: float) -> None:
        self._latencies.append((model, version, ms))

    def record(self) -> None:
        latencies, self._latencies = self._latencies, []
        for model, version, ms in latencies:
            self.latency.observe(ms, tags={"model": model, "version": str(version)})
        pending, self._unrecorded = self._unrecorded, {}
        for (model, version, what), n in pending.items():
            if n:
                self.counters[what].inc(n, tags={"model": model, "version": str(version)})


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket several gateway replicas on one node can share (the kernel balances)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


@serve.deployment(name=GATEWAY_DEPLOYMENT, health_check_period_s=5, graceful_shutdown_timeout_s=30)
class Gateway:
    def __init__(self, host: str, port: int, max_body_bytes: int, api_keys: list[str],
                 live_log: dict | None):
        self._models: dict[str, ModelRoutes] = {}
        self._handles: dict[tuple[str, int], object] = {}
        self._pools: dict[tuple[str, int], ReplicaPool] = {}
        self._batchers: dict[tuple, Batcher] = {}
        self._metrics = _Metrics()
        self._log_cfg = live_log
        self._live_log = LiveLog(live_log["root"], live_log["flush_seconds"], live_log["max_rows"]) \
            if live_log else None
        self._shadow_tasks: set[asyncio.Task] = set()
        app = build_asgi(self, max_body_bytes, frozenset(api_keys))
        self._sock = reuse_port_socket(host, port)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(app,), name="handoff-http", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError(f"the HTTP server did not start on {host}:{port}")

    # --- the HTTP server thread ---------------------------------------------------------------
    def _serve(self, app) -> None:
        import uvicorn

        asyncio.set_event_loop(self._loop)
        config = uvicorn.Config(app, loop="none", http="httptools", lifespan="off", access_log=False,
                                log_level="warning", timeout_graceful_shutdown=20)
        self._server = uvicorn.Server(config)
        self._loop.call_soon(self._started.set)
        self._loop.create_task(self._record_metrics())
        self._loop.run_until_complete(self._server.serve(sockets=[self._sock]))

    async def _record_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._metrics.record()

    def _on_loop(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # --- configuration (Serve calls this with the new user_config, no restart) ----------------
    def reconfigure(self, user_config: dict) -> None:
        self._on_loop(self._apply(user_config.get("models", {})))

    async def _apply(self, models: dict) -> None:
        routes: dict[str, ModelRoutes] = {}
        for name, spec in models.items():
            policy = TrafficPolicy.from_json(spec["policy"])
            handles = {v: self._handle(name, v) for v in policy.versions}
            current = self._models.get(name)
            sig = current.sig if current is not None and set(handles) <= set(current.handles) else None
            if sig is None:
                info = await handles[policy.live_versions[0]].signature.remote()
                sig = ModelSignature(name, tuple(info["features"]), int(info["num_classes"]))
            batching = {int(v): b for v, b in spec.get("batching", {}).items()}
            batchers = {v: self._batcher(name, v, batching.get(v, {})) for v in handles}
            routes[name] = ModelRoutes(sig, policy, handles, batchers)
        self._models = routes  # one assignment: a request sees the old table or the new one
        self._spec = dict(models)
        self._forget_unrouted(routes)

    def _forget_unrouted(self, routes: dict[str, ModelRoutes]) -> None:
        """Close the direct connections and drop the batchers nothing routes to any more (a request
        still holding the old table falls back to the version's Serve handle)."""
        live = {(name, v) for name, r in routes.items() for v in r.handles}
        in_use = {id(b) for r in routes.values() for b in r.batchers.values()}
        for key in [k for k in self._pools if k not in live]:
            self._pools.pop(key).close()
        for key in [k for k, b in self._batchers.items() if id(b) not in in_use]:
            del self._batchers[key]

    def _batcher(self, model: str, version: int, batching: dict) -> Batcher:
        """Reuse the running batcher when its settings hold (its queue stays with it)."""
        key = (model, version, batching.get("max_batch_size", 1), batching.get("max_in_flight", 2),
               batching.get("replicas", 1), batching.get("transport", "direct"))
        if key not in self._batchers:
            if key[5] == "direct":
                call = self._pool(model, version).predict
            else:
                handle = self._handle(model, version)
                call = lambda x: handle.predict.remote(x)  # noqa: E731
            self._batchers[key] = Batcher(call, key[2], key[3] * key[4])
        return self._batchers[key]

    def _pool(self, model: str, version: int) -> ReplicaPool:
        """The direct connections to a version's replicas (started on first use, on the server loop)."""
        key = (model, version)
        if key not in self._pools:
            handle = self._handle(model, version)
            self._pools[key] = ReplicaPool(
                f"{model}/v{version}",
                lambda: self._directory().get.remote(app_name(model, version)),
                lambda x: handle.predict.remote(x))
            self._pools[key].start()
        return self._pools[key]

    def _directory(self):
        if getattr(self, "_endpoints", None) is None:
            self._endpoints = endpoint_directory()
        return self._endpoints

    def _handle(self, model: str, version: int):
        key = (model, version)
        if key not in self._handles:
            self._handles[key] = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=app_name(model, version))
        return self._handles[key]

    # --- Backend (used by the HTTP app) --------------------------------------------------------
    def _routes(self, model: str) -> ModelRoutes:
        routes = self._models.get(model)
        if routes is None:
            served = ", ".join(sorted(self._models)) or "none"
            raise BadRequest(f"unknown model {model!r} (served: {served})", status=404)
        return routes

    def signature(self, model: str) -> ModelSignature:
        return self._routes(model).sig

    def versions(self, model: str) -> list[int]:
        return self._routes(model).policy.versions

    def ready(self, model: str | None = None) -> bool:
        return bool(self._models) if model is None else model in self._models

    async def _call(self, routes: ModelRoutes, version: int, x: np.ndarray) -> np.ndarray:
        return await routes.batchers[version].submit(x)

    async def answer(self, model: str, x: np.ndarray, request_id: str, routing_key: str | None,
                     version: int | None) -> Answer:
        start = time.perf_counter()
        routes = self._routes(model)
        if version is None:
            version = routes.policy.choose(routing_key, routes.rng)
        elif version not in routes.handles:
            raise BadRequest(f"model {model!r} has no served version {version} "
                             f"(served: {', '.join(map(str, routes.policy.versions))})", status=404)
        try:
            proba = await self._call(routes, version, x)
        except Exception:
            self._metrics.count(model, version, "errors")
            raise
        latency_ms = (time.perf_counter() - start) * 1000
        self._metrics.observe_latency(model, version, latency_ms)
        self._metrics.count(model, version, "requests")
        prediction = proba.argmax(axis=1)
        if self._live_log is not None and should_log(request_id, self._log_cfg["sample_percent"]):
            self._live_log.append(model, routes.sig.features, request_id, version, routing_key, x, prediction,
                                  latency_ms)
        for shadow_version in routes.policy.mirrors(routes.rng):
            task = asyncio.get_running_loop().create_task(
                self._shadow(model, routes, shadow_version, x, prediction, request_id, routing_key))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return Answer(version, proba)

    async def _shadow(self, model: str, routes: ModelRoutes, version: int, x: np.ndarray,
                      live_prediction: np.ndarray, request_id: str, routing_key: str | None) -> None:
        """Mirror a request: record the shadow's answer and agreement; never affect the caller."""
        start = time.perf_counter()
        try:
            proba = await asyncio.wait_for(self._call(routes, version, x), SHADOW_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
            self._metrics.count(model, version, "shadow_errors")
            log.warning("shadow version %s/%s failed: %s", model, version, exc)
            return
        prediction = proba.argmax(axis=1)
        agree = int((prediction == live_prediction).sum())
        self._metrics.count(model, version, "shadow", len(prediction))
        self._metrics.count(model, version, "shadow_agreements", agree)
        if self._live_log is not None and should_log(request_id, self._log_cfg["sample_percent"]):
            self._live_log.append(model, routes.sig.features, request_id, version, routing_key, x, prediction,
                                  (time.perf_counter() - start) * 1000, shadow=True)

    # --- control plane calls (through the deployment handle) ----------------------------------
    def describe(self) -> dict:
        """This replica's routing table and counters (the CLI's `status` reads it)."""
        return {"pid": os.getpid(),
                "models": dict(getattr(self, "_spec", {})),
                "features": {name: list(r.sig.features) for name, r in self._models.items()},
                "counts": [{"model": m, "version": v, "what": w, "n": n} for (m, v, w), n in dict(self._metrics.totals).items()],
                "live_log_rows_written": self._live_log.rows_written if self._live_log else 0,
                "direct": {f"{m}/{v}": {"replicas": len(p.connections), "direct": p.direct,
                                        "fallback": p.fallen_back, "discovery": p.last_discovery}
                           for (m, v), p in self._pools.items()}}

    def flush_live_log(self) -> int:
        if self._live_log is not None:
            self._live_log.flush()
            return self._live_log.rows_written
        return 0

    def __del__(self):
        """Graceful shutdown: stop accepting, let in-flight requests finish, write the live log."""
        server = getattr(self, "_server", None)
        if server is not None:
            server.should_exit = True
            self._thread.join(timeout=25)
        if getattr(self, "_metrics", None) is not None:
            self._metrics.record()
        if getattr(self, "_live_log", None) is not None:
            self._live_log.close()
