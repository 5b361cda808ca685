"""`handoff serve/traffic/canary/shadow/promote/rollback/unserve/status`: the serving control plane.

Serving outlives the command, so these need a running cluster: the head `handoff up` started,
or `--address`. Each command connects, calls one method of `serving.ServingControl`,
and prints the policy that is now served. `serve` declares the serving config (file, environment,
`--set`); every other command, and the closed loop, use the config in force that it stored on the
cluster, with their own `--set` applied (kept from then on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from handoff.common import command_settings, command_tracking_uri, err, fail, layered_config, out, print_result
from handoff.options import DEFAULT_SERVING_CONFIG, AddressOpt, HomeOpt, JsonOpt, MonitoringConfigOpt, TrackingOpt

ServingConfigOpt = Annotated[Path | None, typer.Option("--serving-config", help=(
    "serving YAML that becomes the config in force (`serve` reads configs/serving.yaml when it is not given; "
    "the other commands keep the config the model was served with)"))]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help=(
    "change a field of the serving config in force: --set gateway.port=8080 (kept for later commands "
    "and the closed loop)"))]
NameArg = Annotated[str, typer.Argument(help="registered model name")]
AllowDriftOpt = Annotated[bool, typer.Option("--allow-env-drift", help=(
    "serve a version here although Python, torch, numpy, MLflow's major version or Handoff's answer code "
    "differ from where it was trained (refused otherwise); the accepted difference is recorded on the version "
    "(tag handoff.env_drift_accepted)"))]


def quiet_serve_logs() -> None:
    """Serve logs every application update at INFO on the console; the commands say what they do."""
    import logging

    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def _control(home, address, tracking_uri, serving_config, sets, declare: bool = False, allow_env_drift: bool = False):
    """Connect to the running cluster and build the control plane (or fail saying how to start one).

    `declare` (`handoff serve`, or any command given `--serving-config`): the file (default
    configs/serving.yaml), the environment and `--set` make the serving config, which becomes the one in
    force. Otherwise the config in force on the cluster is used with this command's `--set` and
    `HANDOFF_SERVING__*` variables applied to it (the file stands in only where nothing is served yet)."""
    import os

    from cluster.connect import ClusterUnavailable, connect_ray, inside_ray_job, ray_address
    from cluster.services import read_services
    from cluster.settings import SettingsError
    from serving import ConfigSource, ServingControl, load_serving_config
    from training import Registry

    quiet_serve_logs()
    settings = command_settings(home, address, tracking_uri)
    services = read_services(settings)
    where = ray_address(settings, services)
    if where is None and not inside_ray_job():  # a Ray job joins its own cluster
        fail("serving needs a running cluster that outlives this command: start the local one with "
             "`handoff up`, or pass --address of a running cluster")
    declare = declare or serving_config is not None
    cfg = layered_config(load_serving_config, serving_config, DEFAULT_SERVING_CONFIG, sets if declare else [])
    cfg = cfg.model_copy(update={"live_log": cfg.live_log.model_copy(
        update={"root": cfg.live_log.root or str(settings.live_log_dir)})})
    try:
        settings.refuse_in_working_dir("the live log (live_log.root, HANDOFF_SERVING__LIVE_LOG__ROOT)",
                                       cfg.live_log.root)
    except SettingsError as exc:
        fail(str(exc))
    source = ConfigSource(declared=cfg) if declare else ConfigSource(overrides=tuple(sets or ()),
                                                                     environ=dict(os.environ), fallback=cfg)
    try:
        connect_ray(where)
    except ClusterUnavailable as exc:
        fail(str(exc))
    registry = Registry(command_tracking_uri(None, settings, services))
    return ServingControl(registry, source, say=lambda m: err.print(m, style="dim", markup=False, highlight=False),
                          allow_env_drift=allow_env_drift)


def record_accepted(control) -> None:
    """Each environment difference this command accepted (`--allow-env-drift`), as an event in the model's
    monitor (it is already a tag on the version); said plainly where no monitor runs."""
    import ray

    from monitoring import find
    from training import difference_in_words

    for item in control.accepted:
        listed = "; ".join(map(difference_in_words, item["differences"]))
        event = {"kind": "env_drift_accepted", "version": item["version"], "differences": item["differences"],
                 "reason": f"v{item['version']} served with --allow-env-drift: {listed}"}
        monitor = find(item["model"])
        if monitor is None:
            err.print(f"{item['model']} has no monitor running: the accepted difference is recorded on "
                      f"v{item['version']} only (tag handoff.env_drift_accepted)")
            continue
        try:
            ray.get(monitor.record.remote([event]), timeout=60)
        except Exception as exc:  # noqa: BLE001 - traffic has changed; the tag on the version is the record
            err.print(f"the monitor of {item['model']} did not record the accepted difference ({exc}); it is "
                      f"recorded on v{item['version']} (tag handoff.env_drift_accepted)", markup=False)


def _attempt(action):
    """What one control-plane action returns; a user mistake (a policy, a name, a `--set`) becomes a clear
    error and exit code 2, the serving lock held too long by another change exit code 1."""
    from cluster.config_layers import ConfigError
    from serving import LockTimeout, PolicyError
    from training import RegistryError

    try:
        return action()
    except (PolicyError, RegistryError, ConfigError) as exc:
        fail(str(exc))
    except LockTimeout as exc:
        fail(str(exc), 1)


def _run(action, as_json: bool, control=None) -> None:
    """Run one control-plane action (`_attempt`) and print the policy now served."""
    result = _attempt(action)
    policy = getattr(result, "policy", result)
    payload = {"weights": {str(v): w for v, w in policy.shares().items()},
               "shadow": {str(v): p for v, p in policy.shadow.items()}}
    if hasattr(result, "champion"):
        payload["champion"] = result.champion
    if as_json:
        print_result(payload)
        return
    live = ", ".join(f"v{v} {share:.0%}" for v, share in policy.shares().items())
    shadow = ", ".join(f"v{v} {p:g}%" for v, p in policy.shadow.items())
    out.print(f"serving: {live}" + (f"; shadow: {shadow}" if shadow else ""))
    if "champion" in payload:
        out.print(f"champion: v{payload['champion']}")
    if control is not None and control.cfg is not None:
        g = control.cfg.gateway
        out.print(f"endpoint: http://{g.host}:{g.port}/v2/models/<name>/infer  (OpenAPI: /docs)")
        if g.grpc_port is not None:
            out.print(f"gRPC: {g.host}:{g.grpc_port}  (OIP v2 inference.GRPCInferenceService)")


def serve(name: NameArg, home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
          serving_config: ServingConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False,
          allow_env_drift: AllowDriftOpt = False,
          monitoring_config_path: MonitoringConfigOpt = None, monitoring_overrides: Annotated[
              list[str] | None, typer.Option("--monitoring-set", help="override a monitoring field: "
                                             "--monitoring-set enabled=false")] = None) -> None:
    """Serve a registered model over HTTP (OIP v2 on port 8000) with its stored traffic policy.

    A model served for the first time sends all traffic to its `champion`; after that the policy
    stored on the registered model (tag handoff.traffic) comes back, so a restart keeps the weights.
    The model's drift monitor starts with it (monitoring.enabled, default on).

    Each version's replicas install what it recorded in `model.requirements` and the cluster lacks;
    a version trained where Python, torch, numpy, MLflow's major version or Handoff's answer code
    differ from the cluster's is refused (exit 2, traffic unchanged) unless --allow-env-drift.
    """
    from handoff.monitor_commands import monitoring_config, start_monitor

    mon = monitoring_config(monitoring_config_path, monitoring_overrides)
    control = _control(home, address, tracking_uri, serving_config, overrides, declare=True,
                       allow_env_drift=allow_env_drift)
    _run(lambda: control.serve_model(name), as_json, control)
    if mon.enabled and control.cfg.live_log.enabled:
        start_monitor(name, command_settings(home, address, tracking_uri), control.registry.tracking_uri,
                      control.cfg.live_log.root, mon)
    record_accepted(control)


def traffic(name: NameArg,
            weights: Annotated[list[str], typer.Argument(help="VERSION=WEIGHT pairs, e.g. 3=10 2=90")],
            home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
            serving_config: ServingConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False,
            allow_env_drift: AllowDriftOpt = False) -> None:
    """Set the live traffic split exactly; served versions left out stop serving (after the switch).

    Weights are relative (3=1 2=9 is 10%/90%). Versions not yet deployed are deployed first, so no
    request is dropped. A weight change updates the gateway in place; no replica restarts.
    """
    from serving import PolicyError, parse_weights

    try:
        parsed = parse_weights(weights)
    except PolicyError as exc:
        fail(str(exc))
    control = _control(home, address, tracking_uri, serving_config, overrides, allow_env_drift=allow_env_drift)
    _run(lambda: control.traffic(name, parsed), as_json)
    record_accepted(control)


def canary(name: NameArg, version: Annotated[int, typer.Argument(help="the version to try")],
           percent: Annotated[float, typer.Option("--percent", help="share of live traffic (0-100)")] = 10,
           home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
           serving_config: ServingConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False,
           allow_env_drift: AllowDriftOpt = False) -> None:
    """Give VERSION a share of live traffic; the other live versions keep their proportions."""
    control = _control(home, address, tracking_uri, serving_config, overrides, allow_env_drift=allow_env_drift)
    _run(lambda: control.canary(name, version, percent), as_json)
    record_accepted(control)


def shadow(name: NameArg, version: Annotated[int, typer.Argument(help="the version to mirror to")],
           percent: Annotated[float, typer.Option("--percent", help="percent of requests mirrored, more than 0 "
                                                  "and at most 100; 0 stops mirroring")] = 100,
           home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
           serving_config: ServingConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False,
           allow_env_drift: AllowDriftOpt = False) -> None:
    """Mirror requests to VERSION without returning its answers.

    The shadow's answers are recorded (live log rows with shadow=true, the agreement metric) and
    its failures never reach the caller."""
    from serving import PolicyError, TrafficPolicy

    try:
        TrafficPolicy.shadow_percent(percent)  # refused before the cluster is asked
    except PolicyError as exc:
        fail(str(exc))
    control = _control(home, address, tracking_uri, serving_config, overrides, allow_env_drift=allow_env_drift)
    _run(lambda: control.shadow(name, version, percent), as_json)
    record_accepted(control)


def promote(name: NameArg, version: Annotated[int, typer.Argument(help="the new champion")],
            home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
            serving_config: ServingConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False,
            allow_env_drift: AllowDriftOpt = False) -> None:
    """Make VERSION the champion: alias `champion` moves and all live traffic goes to it.

    The old champion stays deployed at weight 0, so `rollback` is instant."""
    control = _control(home, address, tracking_uri, serving_config, overrides, allow_env_drift=allow_env_drift)
    _run(lambda: control.promote(name, version), as_json)
    record_accepted(control)


def rollback(name: NameArg, home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
             serving_config: ServingConfigOpt = None, overrides: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Bring the previous champion back with all live traffic; the demoted version stops serving."""
    control = _control(home, address, tracking_uri, serving_config, overrides)
    _run(lambda: control.rollback(name), as_json)


def unserve(name: NameArg, home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
            serving_config: ServingConfigOpt = None, overrides: SetOpt = None) -> None:
    """Stop serving a model, and its monitor.

    The gateway writes its buffered live log first; the stored traffic policy and the monitor's
    state stay, so the next `serve` brings the same weights back and the monitor resumes. A model
    that is not served is refused (exit 2), naming those that are, unless its monitor still ran
    (an earlier `unserve` stopped before it): that monitor is stopped."""
    from monitoring import stop
    from serving import NotServed

    control = _control(home, address, tracking_uri, serving_config, overrides)

    def unserved() -> NotServed | None:
        try:
            control.unserve(name)
        except NotServed as exc:
            return exc
        return None

    not_served = _attempt(unserved)
    if not_served is not None:
        if not stop(name):
            fail(str(not_served))
        out.print(f"{name}: not served; its monitor, still running, is stopped (its state stays)")
        return
    if stop(name):
        out.print(f"{name}: monitor stopped (its state stays)")
    out.print(f"{name}: no longer served")


#: the columns every part of a split `handoff status` repeats, and the groups it keeps together
STATUS_KEYS = ("model", "ver")
STATUS_GROUPS = (("weight", "shadow", "replicas", "device", "status"),
                 ("requests", "errors", "p50 ≤ms", "p99 ≤ms", "shadow agree"), ("drift", "live acc"))


def _fitting_tables(cells: list[dict[str, str]], width: int) -> list[Table]:
    """One table of every column when it fits in `width` characters, else as few tables as fit, each
    the key columns and then whole groups of columns in order (a squeezed table would cut its cells
    short); a group wider than `width` alone still gets its own table."""
    def table_of(columns) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in cells:
            table.add_row(*(row[c] for c in columns))
        return table

    def fits(columns) -> bool:
        return Console(width=10_000).measure(table_of(columns)).maximum <= width

    grouped = {c for g in (STATUS_KEYS, *STATUS_GROUPS) for c in g}
    rest = tuple(c for c in cells[0] if c not in grouped)  # a column no group names is still shown
    parts, part = [], list(STATUS_KEYS)
    for group in (*STATUS_GROUPS, rest) if rest else STATUS_GROUPS:
        if len(part) > len(STATUS_KEYS) and not fits([*part, *group]):
            parts.append(part)
            part = list(STATUS_KEYS)
        part.extend(group)
    return [table_of(columns) for columns in [*parts, part]]


def _shadow_cell(row: dict) -> str:
    """How a shadow compares with the live answers: the share of rows whose class agrees, or for a
    regression model the mean absolute difference of the predictions (`Δ`, in the target's units)."""
    if row.get("shadow_mean_absolute_difference") is not None:
        return f"Δ {row['shadow_mean_absolute_difference']:.4g}"
    return f"{row['shadow_agreement']:.1%}" if row.get("shadow_agreement") is not None else "-"

def status(home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
           as_json: JsonOpt = False) -> None:
    """What is served: weights, replicas, requests, errors, latency, shadow agreement.

    Counters come from Ray's Prometheus metrics (recorded by the gateway every second; the node's
    agent exports them every few seconds)."""
    from handoff.monitor_commands import monitor_status, monitoring_config, verdict
    from rich.markup import escape

    from monitoring import StateCorrupt, stage_in_words
    from serving import TrafficPolicy, app_name, scrape, summarize

    control = _control(home, address, tracking_uri, None, [])
    state = control.describe()
    figures = summarize(scrape())
    settings, monitoring = command_settings(home, address, tracking_uri), monitoring_config(None, None)
    rows, monitors = [], {}
    for model, spec in ((state.get("gateway") or {}).get("models") or {}).items():
        try:
            monitors[model] = monitor_status(model, settings, monitoring)
        except StateCorrupt as exc:  # one model's cut-short state file: that model's cells say so, the rest shows
            err.print(f"{model}: {escape(str(exc))}", highlight=False)
            monitors[model] = {"corrupt": True}
        policy = TrafficPolicy.from_json(spec["policy"])
        shares = policy.shares()
        devices = {v: info.get("device", "?")
                   for v, info in control.version_signatures(model, policy.versions).items()}
        for v in policy.versions:
            app_state = state["applications"].get(app_name(model, v), {})
            replicas = sum(d["replicas"].get("RUNNING", 0) for d in app_state.get("deployments", {}).values())
            f = figures.get((model, v), {})
            rows.append({"model": model, "version": v, "weight": shares.get(v, 0.0), "shadow": policy.shadow.get(v),
                         "replicas": replicas, "device": devices[v], "status": app_state.get("status", "MISSING"),
                         "requests": f.get("requests", 0), "errors": f.get("errors", 0),
                         "p50_ms_at_most": f.get("p50_ms_at_most"), "p99_ms_at_most": f.get("p99_ms_at_most"),
                         "shadow_agreement": f.get("shadow_agreement"),
                         "shadow_mean_absolute_difference": f.get("shadow_mean_absolute_difference")})
            rows[-1]["drift"], rows[-1]["live_accuracy"] = verdict(monitors[model], v)
    if as_json:
        print_result({"versions": rows, "applications": state["applications"], "monitors": monitors}, default=str)
        return
    if not rows:
        out.print("nothing is served (start with `handoff serve NAME`)")
        return
    cells = [{"model": r["model"], "ver": str(r["version"]), "weight": f"{r['weight']:.0%}",
              "shadow": f"{r['shadow']:g}%" if r["shadow"] else "-", "replicas": str(r["replicas"]),
              "device": r["device"], "status": r["status"], "requests": str(r["requests"]), "errors": str(r["errors"]),
              "p50 ≤ms": f"{r['p50_ms_at_most']:g}" if r["p50_ms_at_most"] else "-",
              "p99 ≤ms": f"{r['p99_ms_at_most']:g}" if r["p99_ms_at_most"] else "-",
              "shadow agree": _shadow_cell(r),
              "drift": r["drift"], "live acc": r["live_accuracy"]} for r in rows]
    for table in _fitting_tables(cells, out.width):
        out.print(table)
    for model, status in monitors.items():
        if status is not None and not status.get("corrupt"):
            out.print(f"{model}: closed loop {stage_in_words(status.get('loop'))}")
