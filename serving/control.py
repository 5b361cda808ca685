"""The serving control plane (Python API behind `handoff serve/traffic/canary/shadow/promote/...`).

The registry is the single source of truth for traffic: the policy is the registered model's
`handoff.traffic` tag and earlier champions its `handoff.champion_history` tag, so a restarted
application comes back with the same weights. The serving config in force (gateway, sizing, live
log) is one record on the cluster (serving/config_store.py) that every caller reads. Every change
holds the cluster's serving lock (serving/control_lock.py) from reading the routing table to writing
it back, and runs in the order that keeps requests answered: deploy the versions the new policy
needs, switch the gateway's routing table (`user_config`, no restart), persist the policy, then
delete the versions nothing routes to.

A change restarts a replica only when what it runs changes: its code (the Handoff source it
imports), its resources or its runtime environment. Serve restarts replicas whenever the deployment
version it computes changes, and that version is built here from canonical values alone (floats as
floats, the runtime environment named: serving.config.actor_options), never from the caller.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable

from ray import serve

from cluster.digest import source_digest, stable_digest
from cluster.placement import unplaceable

from serving.config import ConfigSource, ModelRouting, RoutingTable, ServingConfig, VersionRouting, actor_options
from serving.config_store import store_config, stored_config
from serving.control_lock import serving_lock
from serving.gateway import GATEWAY_APP, Gateway
from serving.model_version import DEPLOYMENT as VERSION_DEPLOYMENT
from serving.model_version import app_name, served_versions, version_app
from serving.policy import PolicyError, TrafficPolicy, check_served
from serving.rollout import Rollout, promote, rollback
from serving.version_environment import check_version_environment, replica_packages
from training import CHAMPION, DRIFT_ACCEPTED_TAG, Registry, installed_versions

log = logging.getLogger(__name__)
TRAFFIC_TAG = "handoff.traffic"
HISTORY_TAG = "handoff.champion_history"
#: the packages a replica's code comes from (a gateway and a version replica import these)
REPLICA_PACKAGES = ("cluster", "training", "serving")


def stop_serving() -> list[str]:
    """Stop every Serve application on the connected cluster, gracefully: each gateway replica stops
    listening, lets in-flight requests finish and writes its buffered live log before it goes (what
    killing the cluster's processes would lose). The applications stopped; none when none ran."""
    try:
        running = sorted(serve.status().applications)
    except Exception:  # noqa: BLE001 - no Serve controller on this cluster: nothing to stop
        return []
    if running:
        serve.shutdown()
    return running


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, str]:
    """This process's installed distributions: the cluster's environment (the control plane never runs
    in a model's), against which a version's extra packages are decided."""
    return installed_versions()


@functools.lru_cache(maxsize=1)
def _replica_source() -> str:
    return source_digest(*REPLICA_PACKAGES)


def code_version(kind: str, *parts) -> str:
    """A deployment's code version: the Handoff source its replicas import and what they are built
    from (`parts`, canonical values). Serve then treats a later change of only `user_config` or replica
    counts as a lightweight update, never a restart; new code restarts the replicas."""
    return stable_digest(kind, _replica_source(), *parts)


def _inputs(sig) -> str:
    """A signature's columns as a refusal names them: `features [f1, f2]`, or with their kinds."""
    if sig.all_numeric:
        return f"features {list(sig.features)}"
    return "columns " + ", ".join(f"{n} ({kind if values is None else values})" for n, kind, values in sig.inputs)


def run_app(app, name: str, timeout_s: float, asks: dict[str, float], poll_s: float = 0.2) -> None:
    """Deploy the Serve application `name`, whose replicas each ask for `asks` (Ray resources), and
    return once it runs. `RuntimeError` naming Serve's reason when it fails to deploy, or when it is
    not running after `timeout_s`, naming what it waits for (`serve.run` would wait for ever for
    replicas no node can hold, and with them the cluster's serving lock: every later change, the
    loop's included, would wait behind it)."""
    from ray.serve.api import _run

    _run(app, _blocking=False, name=name, route_prefix=None)
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        state = str(getattr(status.status, "value", status.status)) if status is not None else "NOT_STARTED"
        if state == "RUNNING":
            return
        if state == "DEPLOY_FAILED":
            raise RuntimeError(status.message or "Serve gave no reason")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not running after {timeout_s:g} s (serving deploy_timeout_s): "
                               f"{_waiting_for(status, asks)}")
        time.sleep(poll_s)


def _waiting_for(status, asks: dict[str, float]) -> str:
    """What an application not running yet waits for: each replica's resources when no node offers
    them, then what Serve says of its deployments (after ~30 s it names the resources a replica needs
    and what the cluster has)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    why = unplaceable(asks, nodes)
    said = [f"{d}: {s.message}" for d, s in (status.deployments.items() if status is not None else ())
            if getattr(s, "message", "")]
    parts = ([f"each replica asks for {asks} and {why}"] if why else []) + said
    if not parts:
        state = getattr(status.status, "value", status.status) if status is not None else "NOT_STARTED"
        parts = [f"Serve reports it {state} (replicas still starting: a large model, a slow package install)"]
    return "; ".join(parts)


class ServingControl:
    def __init__(self, registry: Registry, config: ServingConfig | ConfigSource | None = None,
                 live_log_root: str | None = None, say: Callable[[str], None] = lambda _: None,
                 allow_env_drift: bool = False):
        """`config`: a `ServingConfig` this caller declares (it becomes the config in force with the
        first change; `live_log_root` fills its live log root where it names none), a `ConfigSource`,
        or None: the config in force on the cluster, as it is. `allow_env_drift`: a version deployed by
        this caller may run where its core versions differ from its training's (recorded on it)."""
        if isinstance(config, ServingConfig):
            if live_log_root and not config.live_log.root:
                config = config.model_copy(update={"live_log": config.live_log.model_copy(
                    update={"root": live_log_root})})
            config = ConfigSource(declared=config)
        self.registry, self.say, self.allow_env_drift = registry, say, allow_env_drift
        self.accepted: list[dict] = []  # environment differences this caller accepted: {version, differences}
        self.source = config or ConfigSource()
        self.cfg: ServingConfig | None = self.source.declared  # the config of the last change

    @property
    def live_log_root(self) -> str | None:
        cfg = self.cfg or stored_config()
        return cfg.live_log.root if cfg is not None else None

    @contextlib.contextmanager
    def _change(self):
        """The one way into a change: the cluster's serving lock, and the config in force read (and
        written back, with this caller's declaration or overrides) under it."""
        with serving_lock(say=self.say):
            cfg = self.source.resolve(stored_config())
            self.cfg = cfg
            yield cfg
            store_config(cfg)

    # --- registry state ---------------------------------------------------------------------------
    def stored_policy(self, name: str) -> TrafficPolicy | None:
        text = self.registry.model_tags(name).get(TRAFFIC_TAG)
        return TrafficPolicy.from_json(text) if text else None

    def _history(self, name: str) -> tuple[int, ...]:
        return tuple(int(v) for v in json.loads(self.registry.model_tags(name).get(HISTORY_TAG, "[]")))

    def _champion(self, name: str) -> int | None:
        return self.registry.aliases(name).get(CHAMPION)

    def current_policy(self, name: str) -> TrafficPolicy:
        """The stored policy, or all traffic to the champion for a model never served before."""
        policy = self.stored_policy(name)
        if policy is not None:
            return policy
        champion = self._champion(name)
        if champion is None:
            raise PolicyError(f"model {name!r} has no champion version; register one with `handoff tune`")
        return TrafficPolicy.single(champion)

    # --- Serve state ----------------------------------------------------------------------------
    @staticmethod
    def _running_apps() -> dict:
        return serve.status().applications

    def _delete_apps(self, names: list[str], timeout_s: float = 120.0) -> None:
        """Delete these Serve applications together and return once every one is gone: Serve stops
        their replicas in parallel (deleted one after another, each took ~3 s of graceful shutdown
        here). Only for applications nothing routes to any more."""
        if not names:
            return
        for name in names:
            serve.delete(name, _blocking=False)
        deadline = time.monotonic() + timeout_s
        while remaining := sorted(set(names) & set(self._running_apps())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Serve did not delete {', '.join(remaining)} within {timeout_s:.0f} s")
            time.sleep(0.1)

    def _gateway_models(self) -> dict[str, ModelRouting]:
        """The routing table the running gateway holds (empty when no gateway runs)."""
        if GATEWAY_APP not in self._running_apps():
            return {}
        models = serve.get_app_handle(GATEWAY_APP).describe.remote().result(timeout_s=60)["models"]
        return dict(RoutingTable.model_validate({"models": models}).models)

    def _version_packages(self, cfg: ServingConfig, name: str, version: int, new: bool) -> list[str]:
        """What the version's replicas install beyond the cluster's environment; before its first
        replica, the check that it installs and that the cluster answers as its training did
        (serving/version_environment.py): refused, nothing deployed, traffic unchanged."""
        lineage = self.registry.version(name, version).lineage
        packages = replica_packages(lineage, _installed())
        if new:
            accepted = check_version_environment(
                name, version, lineage, packages, cfg.deployment_for(name, version).resources, self.allow_env_drift,
                lambda value: self.registry.set_version_tags(name, version, {DRIFT_ACCEPTED_TAG: value}), self.say)
            if accepted:
                self.accepted.append({"model": name, "version": version, "differences": accepted})
        return packages

    def _deploy_version(self, cfg: ServingConfig, name: str, version: int, new: bool, packages: list[str]) -> None:
        sizing = cfg.deployment_for(name, version)
        app = version_app(name, version, self.registry.tracking_uri, None, sizing,
                          code_version("version", name, version, sizing.cpus, sizing.gpus, sizing.resources),
                          packages)
        if new:
            self.say(f"deploying {name} version {version} ({sizing.replicas} replica(s), {sizing.cpus} CPU, "
                     f"{sizing.gpus} GPU each)")
        try:
            run_app(app, app_name(name, version), cfg.deploy_timeout_s,
                    {"CPU": sizing.cpus, "GPU": sizing.gpus, **sizing.resources})
        except RuntimeError as exc:  # its replicas failed to start, or did not run in time (the message says why)
            if new:  # nothing routes to it: taken down again, traffic unchanged
                self._delete_apps([app_name(name, version)])
            raise PolicyError(f"{name} version {version} failed to start: {exc}; traffic unchanged") from None

    def _deploy_gateway(self, cfg: ServingConfig, models: dict[str, ModelRouting]) -> None:
        g = cfg.gateway
        live_log = cfg.live_log if cfg.live_log.enabled and cfg.live_log.root else None
        # replicas are a Serve option, not the replica's code: changing them never restarts it
        code = g.model_dump(mode="json", exclude={"replicas", "cpus", "resources"}), \
            live_log.model_dump(mode="json") if live_log else None
        deployment = Gateway.options(num_replicas=g.replicas, ray_actor_options=actor_options(g.cpus, resources=g.resources),
                                     user_config=RoutingTable(models=models).to_user_config(),
                                     max_ongoing_requests=1000)
        deployment = deployment.options(_internal=True, version=code_version("gateway", *code))
        try:
            run_app(deployment.bind(g, live_log), GATEWAY_APP, cfg.deploy_timeout_s, {"CPU": g.cpus, **g.resources})
        except RuntimeError as exc:
            raise PolicyError(f"the gateway failed to start: {exc}") from None

    # --- the one way every change happens ---------------------------------------------------------
    def apply(self, name: str, policy: TrafficPolicy) -> TrafficPolicy:
        """Make `policy` the served state of `name`, without dropping a request."""
        with self._change() as cfg:
            return self._apply(cfg, name, policy)

    def _apply(self, cfg: ServingConfig, name: str, policy: TrafficPolicy) -> TrafficPolicy:
        """`apply`, for a caller that holds the lock."""
        known = set(self.registry.version_numbers(name))
        unknown = [v for v in policy.versions if v not in known]
        if unknown:
            raise PolicyError(f"model {name!r} has no version(s) {unknown} (registered: {sorted(known)})")
        serve.start(proxy_location="Disabled")
        running = self._running_apps()
        # every new version's environment checked before anything is deployed
        packages = {v: self._version_packages(cfg, name, v, new=app_name(name, v) not in running)
                    for v in policy.versions}
        for v in policy.versions:
            # idempotent: a running version with unchanged sizing is left alone; changed batching or
            # replica counts are lightweight updates (stable code version), new resources restart it
            self._deploy_version(cfg, name, v, app_name(name, v) not in running, packages[v])
        try:
            self._check_same_inputs(name, policy.versions)
        except PolicyError:
            # nothing routes to what this call deployed: take it down again
            self._delete_apps([app_name(name, v) for v in policy.versions if app_name(name, v) not in running])
            raise
        models = self._gateway_models()
        models[name] = ModelRouting(policy=policy.to_json(), versions={
            v: VersionRouting.of(cfg.deployment_for(name, v)) for v in policy.versions})
        self._deploy_gateway(cfg, models)
        self.registry.set_model_tag(name, TRAFFIC_TAG, policy.to_json())
        dropped = [v for v in served_versions(name, running) if v not in policy.versions]
        for v in dropped:
            self.say(f"removing {name} version {v} (no traffic routes to it)")
        self._delete_apps([app_name(name, v) for v in dropped])
        return policy

    @staticmethod
    def version_signatures(name: str, versions: list[int]) -> dict[int, dict]:
        """Each served version's features, classes and the device its weights are on (one replica asked)."""
        return {v: serve.get_deployment_handle(VERSION_DEPLOYMENT, app_name=app_name(name, v))
                .signature.remote().result(timeout_s=120) for v in versions}

    def _check_same_inputs(self, name: str, versions: list[int]) -> None:
        """Versions that share one endpoint must take the same columns (names, kinds, value types) and
        give the same classes; their preparations (vocabularies, medians) may differ."""
        from serving.protocol import ModelSignature

        seen = {v: ModelSignature.of_info(name, info)
                for v, info in self.version_signatures(name, versions).items()}
        first = versions[0]
        for v, sig in seen.items():
            if sig.task != seen[first].task:
                raise PolicyError(f"{name} version {v} is a {sig.task} model, version {first} a {seen[first].task} "
                                  "one; versions behind one endpoint must give the same kind of answer")
            if (sig.inputs, sig.classes) != (seen[first].inputs, seen[first].classes):
                raise PolicyError(f"{name} version {v} takes {_inputs(sig)} and gives classes {list(sig.classes)}, "
                                  f"version {first} takes {_inputs(seen[first])} and gives "
                                  f"{list(seen[first].classes)}; versions behind one endpoint must match")

    # --- the commands -----------------------------------------------------------------------------
    # every command reads the current policy under the lock, so no other change slips in between
    def _change_policy(self, name: str, change: Callable[[TrafficPolicy], TrafficPolicy]) -> TrafficPolicy:
        with self._change() as cfg:
            return self._apply(cfg, name, change(self.current_policy(name)))

    def serve_model(self, name: str) -> TrafficPolicy:
        return self._change_policy(name, lambda policy: policy)

    def traffic(self, name: str, weights: dict[int, float]) -> TrafficPolicy:
        return self._change_policy(name, lambda policy: policy.with_weights(weights))

    def canary(self, name: str, version: int, percent: float) -> TrafficPolicy:
        return self._change_policy(name, lambda policy: policy.with_canary(version, percent))

    def shadow(self, name: str, version: int, percent: float) -> TrafficPolicy:
        return self._change_policy(name, lambda policy: policy.with_shadow(version, percent))

    def _rollout(self, name: str, decide: Callable[[TrafficPolicy, int | None, tuple[int, ...]], Rollout]) -> Rollout:
        with self._change() as cfg:
            outcome = decide(self.current_policy(name), self._champion(name), self._history(name))
            self._apply(cfg, name, outcome.policy)
            self.registry.set_alias(name, CHAMPION, outcome.champion)
            self.registry.set_model_tag(name, HISTORY_TAG, json.dumps(list(outcome.history)))
            return outcome

    def promote(self, name: str, version: int) -> Rollout:
        return self._rollout(name, lambda policy, champion, history: promote(policy, champion, history, version))

    def rollback(self, name: str) -> Rollout:
        return self._rollout(name, rollback)

    def unserve(self, name: str) -> None:
        """Stop serving `name` (the stored policy stays, so `serve` brings the same weights back); a model
        not served is refused (`check_served`) and nothing changes."""
        with self._change() as cfg:
            models = self._gateway_models()
            versions = served_versions(name, self._running_apps())
            check_served(name, models, versions)
            if models.pop(name, None) is not None:
                if models:
                    self._deploy_gateway(cfg, models)
                else:
                    serve.delete(GATEWAY_APP)  # first and whole: it drains the requests it holds into the versions
            self._delete_apps([app_name(name, v) for v in versions])

    def describe(self) -> dict:
        """What runs now: per app its status and replica counts; the gateway's table and counters."""
        apps = self._running_apps()
        out = {"applications": {}, "gateway": None}
        for app_name_, status in apps.items():
            out["applications"][app_name_] = {
                "status": str(status.status.value if hasattr(status.status, "value") else status.status),
                "deployments": {d: {"status": str(getattr(s.status, "value", s.status)),
                                    "replicas": dict(getattr(s, "replica_states", {}) or {})}
                                for d, s in status.deployments.items()}}
        if GATEWAY_APP in apps:
            out["gateway"] = serve.get_app_handle(GATEWAY_APP).describe.remote().result(timeout_s=60)
        return out
