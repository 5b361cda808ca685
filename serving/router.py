"""The gateway's router: which version answers a request, and how the request reaches it.

Holds the routing table (per model: signature, traffic policy, how to call each version), chooses
the version (the pure policy, serving/policy.py), sends the request over the direct path to one of
the version's replicas (serving/replica_client.py; the version's Serve handle is the fallback, or
the only path with `transport: handle`) through a per-version batcher, mirrors it to shadow
versions, and appends the answer to the live log. It is the HTTP app's `Backend`. Everything runs
on the gateway's HTTP event loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import numpy as np

from serving.batcher import Batcher, DeadlinePassed, Overloaded
from serving.config import LiveLogConfig, RoutingTable, VersionRouting
from serving.endpoints import directory as endpoint_directory
from serving.feedback import FeedbackLog, parse_feedback
from serving.http_app import Answer
from serving.live_log import LiveLog, should_log
from serving.metrics import GatewayMetrics
from serving.model_version import DEPLOYMENT as VERSION_DEPLOYMENT
from serving.model_version import app_name
from serving.policy import TrafficPolicy
from serving.protocol import BadRequest, ModelSignature
from serving.replica_client import NO_REPLICA_WAIT_S, ReplicaPool, handle_result
from training import ColumnError, Preparation

log = logging.getLogger(__name__)


def _preparation(info: dict) -> Preparation:
    """A version's preparation as its replica reported it (none: a version registered before
    preparations existed, which takes complete numeric columns)."""
    return Preparation.from_json(info["preparation"]) if info.get("preparation") else \
        Preparation.numeric(info["features"])


SHADOW_TIMEOUT_S = 10.0  # a shadow that does not answer in time counts as failed


@dataclass
class ModelRoutes:
    """What the router knows of one model: its signature, policy, and per version a handle, a
    batcher and the preparation that turns a request's raw rows into that version's input."""

    sig: ModelSignature
    policy: TrafficPolicy
    handles: dict[int, object]
    batchers: dict[int, Batcher]
    preparations: dict[int, Preparation] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)


class Router:
    def __init__(self, live_log: LiveLogConfig | None, metrics: GatewayMetrics, request_timeout_s: float = 5.0,
                 max_queued_per_version: int = 1000):
        self.table = RoutingTable()
        self.request_timeout_s, self.max_queued = request_timeout_s, max_queued_per_version
        self.metrics = metrics
        self._models: dict[str, ModelRoutes] = {}
        self._handles: dict[tuple[str, int], object] = {}
        self._pools: dict[tuple[str, int], ReplicaPool] = {}
        self._batchers: dict[tuple[str, int, VersionRouting], Batcher] = {}
        self._endpoints = None
        self._log_cfg = live_log
        self.live_log = LiveLog(live_log.root, live_log.flush_seconds, live_log.max_rows,
                                live_log.max_requests, live_log.max_buffered_rows) if live_log else None
        self.feedback_log = FeedbackLog(live_log.root) if live_log else None
        self._shadow_tasks: set[asyncio.Task] = set()

    # --- the routing table ------------------------------------------------------------------------
    async def apply(self, table: RoutingTable) -> None:
        """Build the new table (asking a new version for its signature), then swap it in at once."""
        routes: dict[str, ModelRoutes] = {}
        for name, spec in table.models.items():
            policy = TrafficPolicy.from_json(spec.policy)
            handles = {v: self._handle(name, v) for v in policy.versions}
            current = self._models.get(name)
            known = current.preparations if current is not None else {}
            infos = {v: await handles[v].signature.remote() for v in handles if v not in known}
            preparations = {v: known[v] if v in known else _preparation(infos[v]) for v in handles}
            first = policy.live_versions[0]
            sig = current.sig if current is not None and first in known else ModelSignature.of_info(name, infos[first])
            batchers = {v: self._batcher(name, v, spec.versions.get(v, VersionRouting())) for v in handles}
            routes[name] = ModelRoutes(sig, policy, handles, batchers, preparations)
        self._models = routes  # one assignment: a request sees the old table or the new one
        self.table = table
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

    def _batcher(self, model: str, version: int, routing: VersionRouting) -> Batcher:
        """Reuse the running batcher when its settings hold (its queue stays with it)."""
        key = (model, version, routing)
        if key not in self._batchers:
            if routing.transport == "direct":
                call = self._pool(model, version).predict
            else:
                handle = self._handle(model, version)
                call = lambda x: handle_result(handle.predict.remote(x), self.request_timeout_s)  # noqa: E731
            self._batchers[key] = Batcher(call, routing.max_batch_size, routing.max_in_flight * routing.replicas,
                                          self.max_queued, self.request_timeout_s, f"model {model!r} version {version}",
                                          limit_s=self.request_timeout_s + NO_REPLICA_WAIT_S)
        return self._batchers[key]

    def _pool(self, model: str, version: int) -> ReplicaPool:
        """The direct connections to a version's replicas (started on first use, on this loop)."""
        key = (model, version)
        if key not in self._pools:
            handle = self._handle(model, version)
            self._pools[key] = ReplicaPool(
                f"{model}/v{version}",
                lambda: self._directory().get.remote(app_name(model, version)),
                lambda x, wait: handle_result(handle.predict.remote(x), self.request_timeout_s, wait),
                timeout_s=self.request_timeout_s)
            self._pools[key].start()
        return self._pools[key]

    def _directory(self):
        if self._endpoints is None:
            self._endpoints = endpoint_directory()
        return self._endpoints

    def _handle(self, model: str, version: int):
        from ray import serve

        key = (model, version)
        if key not in self._handles:
            self._handles[key] = serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=app_name(model, version))
        return self._handles[key]

    # --- Backend (used by the HTTP app) -------------------------------------------------------------
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

    async def answer(self, model: str, rows: np.ndarray | dict, request_id: str, routing_key: str | None,
                     version: int | None) -> Answer:
        """Choose the version (or check the one asked for), prepare the rows for it, call it, count,
        log the rows as received, mirror to shadows."""
        start = time.perf_counter()
        routes = self._routes(model)
        if version is None:
            version = routes.policy.choose(routing_key, routes.rng)
        elif version not in routes.handles:
            raise BadRequest(f"model {model!r} has no served version {version} "
                             f"(served: {', '.join(map(str, routes.policy.versions))})", status=404)
        x = self._prepare(model, routes, version, rows)
        try:
            proba = await routes.batchers[version].submit(x)
        except Overloaded:
            self.metrics.count(model, version, "shed")
            raise
        except DeadlinePassed:
            self.metrics.count(model, version, "timeouts")
            raise
        except Exception:
            self.metrics.count(model, version, "errors")
            raise
        latency_ms = (time.perf_counter() - start) * 1000
        self.metrics.observe_latency(model, version, latency_ms)
        self.metrics.count(model, version, "requests")
        prediction, label = routes.sig.read(proba)
        self._log(model, routes, request_id, version, routing_key, rows, proba, prediction, label, latency_ms,
                  shadow=False)
        for shadow_version in routes.policy.mirrors(routes.rng):
            task = asyncio.get_running_loop().create_task(
                self._shadow(model, routes, shadow_version, rows, prediction, request_id, routing_key))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return Answer(version, proba, prediction, label)

    async def _shadow(self, model: str, routes: ModelRoutes, version: int, rows: np.ndarray | dict,
                      live_prediction: np.ndarray, request_id: str, routing_key: str | None) -> None:
        """Mirror a request: record the shadow's answer and how it compares with the live one (rows
        that agree on the class; for regression the sum of absolute differences); never affect the
        caller."""
        start = time.perf_counter()
        try:
            x = self._prepare(model, routes, version, rows)
            proba = await asyncio.wait_for(routes.batchers[version].submit(x), SHADOW_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
            self.metrics.count(model, version, "shadow_errors")
            log.warning("shadow version %s/%s failed: %s", model, version, exc)
            return
        prediction, label = routes.sig.read(proba)
        self.metrics.count(model, version, "shadow", len(prediction))
        if routes.sig.regression:
            self.metrics.count(model, version, "shadow_absolute_difference",
                               float(np.abs(prediction - live_prediction).sum()))
        else:
            self.metrics.count(model, version, "shadow_agreements", int((prediction == live_prediction).sum()))
        self._log(model, routes, request_id, version, routing_key, rows, proba, prediction, label,
                  (time.perf_counter() - start) * 1000, shadow=True)

    def _prepare(self, model: str, routes: ModelRoutes, version: int, rows: np.ndarray | dict) -> np.ndarray:
        """The rows as `version` takes them (its preparation: gaps imputed, categories one-hot);
        a value of the wrong kind is a 422 naming its column. Values outside a version's vocabulary
        and gaps it filled are counted."""
        preparation = routes.preparations[version]
        try:
            prepared = preparation.transform_matrix(rows) if isinstance(rows, np.ndarray) else \
                preparation.transform(rows)
        except ColumnError as exc:
            raise BadRequest(str(exc), status=422) from None
        for column, n in prepared.other.items():
            self.metrics.count_column(model, version, column, "unseen", n)
        for column, n in prepared.imputed.items():
            self.metrics.count_column(model, version, column, "imputed", n)
        return prepared.x

    def _log(self, model: str, routes: ModelRoutes, request_id: str, version: int, routing_key: str | None,
             rows: np.ndarray | dict, proba: np.ndarray, prediction: np.ndarray, label: np.ndarray, latency_ms: float,
             shadow: bool) -> None:
        if self.live_log is not None and should_log(request_id, self._log_cfg.sample_percent):
            self.live_log.append(model, routes.sig.features, request_id, version, routing_key, rows, prediction,
                                 latency_ms, shadow=shadow, labels=label,
                                 proba=None if routes.sig.regression else proba,
                                 value_types=routes.sig.value_types or None)

    async def feedback(self, model: str, payload) -> dict:
        """Check a batch of labels against the model's classes and write it beside the live log
        before answering (an acknowledged label is on disk)."""
        routes = self._routes(model)
        labels = parse_feedback(payload, routes.sig.classes, routes.sig.regression)
        if self.feedback_log is None:
            raise BadRequest("the live log is off (serving live_log.enabled), so labels have nowhere to go", 503)
        await asyncio.to_thread(self.feedback_log.write, model, labels)
        return {"model": model, "accepted": len(labels)}

    # --- what the control plane reads ---------------------------------------------------------------
    def describe(self) -> dict:
        """The routing table, signatures and the direct path's state of each version."""
        return {"models": self.table.to_user_config()["models"],
                "features": {name: list(r.sig.features) for name, r in self._models.items()},
                "direct": {f"{m}/{v}": {"replicas": len(p.connections), "direct": p.direct,
                                        "fallback": p.fallen_back, "discovery": p.last_discovery}
                           for (m, v), p in self._pools.items()}}
