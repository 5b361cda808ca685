"""`handoff monitor …` and `handoff events`: the drift monitor of a served model.

    handoff monitor NAME start|stop|status      the model's monitor actor (needs the running cluster)
    handoff monitor profile NAME VERSION        compute and store a version's reference profile
    handoff events NAME [--kind K] [--json]     what the monitor recorded, oldest first
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from handoff.common import command_settings, command_tracking_uri, err, fail, layered_config, out, print_result
from handoff.options import (DEFAULT_SERVING_CONFIG, AddressOpt, HomeOpt, JsonOpt, MonitoringConfigOpt, MonitorSetOpt,
                             TrackingOpt)
from monitoring import EVENT_KINDS, LOOP_EVENT_KINDS, MONITOR_EVENT_KINDS

DEFAULT_MONITORING_CONFIG = Path("configs/monitoring.yaml")


def monitoring_config(path: Path | None, sets: list[str] | None):
    """The typed monitoring config (file, then environment, then flags), or a clear error."""
    from monitoring import load_monitoring_config

    return layered_config(load_monitoring_config, path, DEFAULT_MONITORING_CONFIG, sets)


def state_root(settings, cfg) -> str:
    return cfg.state_root or str(settings.monitor_dir)


def loop_port(tracking_uri: str, live_root: str, cfg):
    """The closed loop's hands for a monitor on the connected cluster (its jobs API: the dashboard).
    They carry no serving config: each traffic change reads the one in force on the cluster."""
    import ray._private.worker

    from handoff.loop_port import HandoffLoopPort

    dashboard = ray._private.worker.get_dashboard_url()
    if not dashboard:
        return None
    sets = [f"loop.{part}.{k}={v}" for part in ("data", "gate")
            for k, v in getattr(cfg.loop, part).model_dump().items() if v is not None]  # None: the default
    return HandoffLoopPort(tracking_uri, dashboard if "://" in dashboard else f"http://{dashboard}", live_root, sets,
                           dict(cfg.loop.retrain.job_resources))


def start_monitor(name: str, settings, tracking_uri: str, live_root: str, cfg) -> None:
    """Start (or find) the model's monitor actor on the connected cluster, with the loop's hands."""
    from monitoring import start

    port = loop_port(tracking_uri, live_root, cfg) if cfg.loop.enabled else None
    start(name, live_root, state_root(settings, cfg), tracking_uri, cfg, port)
    loop = ("closed loop on: drift → retrain → gate → canary → " + ("promote" if cfg.loop.promotion == "auto"
            else "manual promotion")) if port is not None else "closed loop off"
    err.print(f"[dim]monitor of {name} running (windows of {cfg.window_rows} rows or {cfg.window_seconds:g} s, "
              f"drift after {cfg.persistence} drifted window(s); {loop}); `handoff monitor {name} status`[/dim]",
              highlight=False)


def record_profile(registry, view) -> None:
    """Profile what a version was trained on and store it with the version (the registration hook)."""
    from dataclasses import replace

    from monitoring import calibration, profile_from_training, save_profile

    regression = view.task == "regression"
    profile = profile_from_training(view.x_train, view.features, view.proba_train, view.classes, view.fingerprint,
                                    view.seed, view.categories, view.task, view.proba_val if regression else None)
    # calibration, checked on the validation split (a classifier's: a regression model gives no probabilities)
    if not regression and view.proba_val is not None and len(view.y_val):
        found = calibration(view.proba_val, view.y_val)
        profile = replace(profile, temperature=found["temperature"])
        registry.set_version_tags(view.name, view.version, {
            "ece": f"{found['ece']:.5f}", "ece_with_temperature": f"{found['ece_with_temperature']:.5f}",
            "temperature": f"{found['temperature']:.4f}"})
    save_profile(registry, view.name, view.version, profile)


def profile_hook(tracking_uri: str, registry_uri: str | None):
    """The registration hook: store the new version's reference profile (monitoring scores against it).
    A failure leaves the version registered, says so, and names the command that makes the profile."""
    def record(view) -> None:
        from training import Registry

        try:
            record_profile(Registry(tracking_uri, registry_uri), view)
            err.log(f"reference profile of {view.name} v{view.version} stored ({view.x_train.shape[0]} training rows)")
        except Exception as exc:  # noqa: BLE001 - the version is registered; its profile can be made later
            err.print(f"[yellow]warning:[/yellow] {view.name} v{view.version} has no reference profile ({escape(str(exc))}); "
                      f"make it with `handoff monitor profile {view.name} {view.version}`")
    return record


def monitor_command(
    args: Annotated[list[str], typer.Argument(help="NAME start|stop|status, or: profile NAME VERSION")],
    home: HomeOpt = None, address: AddressOpt = None, tracking_uri: TrackingOpt = None,
    monitoring_config_path: MonitoringConfigOpt = None, overrides: MonitorSetOpt = None,
    serving_overrides: Annotated[list[str] | None, typer.Option(
        "--serving-set", help="where the live log is, on a cluster where nothing is served yet: "
        "--serving-set live_log.root=s3://… (otherwise the serving config in force says)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The drift monitor of a served model: one Ray actor per model that scores the live log.

    `handoff monitor NAME start` starts it (`handoff serve` does too, unless monitoring.enabled is
    false), `stop` stops it (its state stays; `start` resumes where it stopped), `status` shows what
    it has scored. `handoff monitor profile NAME VERSION` computes the reference profile of a
    version registered before profiles existed (versions registered now get theirs at registration).
    """
    if len(args) == 3 and args[0] == "profile":
        _profile(args[1], args[2], home, tracking_uri, as_json)
        return
    if len(args) != 2 or args[1] not in ("start", "stop", "status"):
        fail("usage: handoff monitor NAME start|stop|status, or handoff monitor profile NAME VERSION")
    name, action = args
    cfg = monitoring_config(monitoring_config_path, overrides)
    settings = command_settings(home, address, tracking_uri)
    if action == "status" and not _connect(settings, required=False):
        _print_status(_stored_status(name, settings, cfg), as_json)
        return
    _connect(settings, required=True)
    from monitoring import stop

    if action == "start":
        from cluster.services import read_services
        from serving import load_serving_config, stored_config

        in_force = stored_config()
        serving_cfg = in_force or layered_config(load_serving_config, None, DEFAULT_SERVING_CONFIG, serving_overrides)
        live_root = serving_cfg.live_log.root or str(settings.live_log_dir)
        start_monitor(name, settings, command_tracking_uri(None, settings, read_services(settings)), live_root, cfg)
    elif action == "stop":
        out.print(f"monitor of {name} stopped" if stop(name) else f"no monitor of {name} was running")
    else:
        from monitoring import StateCorrupt

        try:
            status = monitor_status(name, settings, cfg)
        except StateCorrupt as exc:
            fail(str(exc))
        if status is None:
            fail(f"no monitor of {name!r} has run here (no state under {state_root(settings, cfg)})")
        _print_status(status, as_json)


def _connect(settings, required: bool) -> bool:
    """Join the running cluster; False (when not required) if there is none."""
    from cluster.connect import ClusterUnavailable, connect_ray, inside_ray_job, ray_address
    from cluster.services import read_services

    where = ray_address(settings, read_services(settings))
    if where is None and not inside_ray_job():
        if required:
            fail("the monitor runs on a cluster that outlives this command: start the local one with "
                 "`handoff up`, or pass --address of a running cluster")
        return False
    try:
        connect_ray(where)
    except ClusterUnavailable as exc:
        if required:
            fail(str(exc))
        return False
    return True


def monitor_status(name: str, settings, cfg) -> dict | None:
    """The model's monitor as the running actor reports it, else as its saved state says; None when
    no monitor of it has run (needs a connected Ray)."""
    import ray

    from monitoring import StateStore, find, status_of

    actor = find(name)
    if actor is not None:
        try:
            return ray.get(actor.status.remote(), timeout=15)
        except Exception:  # noqa: BLE001 - a busy or restarting actor: its saved state is the answer
            pass
    state = StateStore(state_root(settings, cfg), name).read_state()  # StateCorrupt names a file cut short
    if state is None:
        return None
    return {**status_of(name, state, running=actor is not None), "from_saved_state": True}


def verdict(status: dict | None, version: int) -> tuple[str, str]:
    """(drift, live accuracy, or a regression model's live RMSE) of one version for the status table."""
    if status is None:
        return "no monitor", "-"
    if status.get("corrupt"):
        return "state corrupt", "-"
    v = str(version)
    live = status.get("live", {}).get(v) or {}
    accuracy = f"{live['accuracy']:.1%} of {live['labelled']}" if live.get("accuracy") is not None else \
        f"RMSE {live['rmse']:.4g} of {live['labelled']}" if live.get("rmse") is not None else "-"
    last = status.get("last_window")
    mine = last if last and str(last["version"]) == v else None
    moved = f" ({', '.join(mine['drifted_features'][:4])})" if mine and mine["drifted_features"] else ""
    if status["drift"].get(v, {}).get("declared"):
        return f"DRIFT{moved}", accuracy
    if mine:
        return (f"window {mine['window']}: drifted{moved}" if mine["drifted"] else f"window {mine['window']}: ok"), accuracy
    if v in status["windows"]:
        return f"{status['windows'][v]} window(s) ok", accuracy
    if v in status["rows_unprofiled"]:
        return "no profile", accuracy
    return "no window yet", accuracy


def _stored_status(name: str, settings, cfg) -> dict:
    from monitoring import StateCorrupt, StateStore, status_of

    try:
        state = StateStore(state_root(settings, cfg), name).read_state()
    except StateCorrupt as exc:
        fail(str(exc))
    if state is None:
        fail(f"no monitor of {name!r} has run here (no state under {state_root(settings, cfg)})")
    return status_of(name, state, running=False)


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        print_result(status)
        return
    out.print(f"monitor of {status['model']}: {'running' if status['running'] else 'stopped'}"
              + (" (busy: shown from its saved state)" if status.get("from_saved_state") and status["running"] else "")
              + (f", last error: {status['last_error']}" if status.get("last_error") else ""))
    for version, windows in sorted(status["windows"].items()):
        drift = status["drift"].get(version, {})
        out.print(f"  v{version}: {windows} window(s), {status['rows_scored'].get(version, 0)} row(s) scored; "
                  f"{'DRIFT declared' if drift.get('declared') else 'no drift declared'}"
                  f" ({drift.get('consecutive', 0)} drifted window(s) in a row)")
    for version, estimate in sorted(status.get("estimated", {}).items()):
        out.print(f"  v{version}: estimated accuracy {estimate:.1%} (last window, from its calibrated probabilities)")
    for version, task in sorted(status.get("tasks", {}).items()):
        if task == "regression":
            out.print(f"  v{version}: regression: no label-free estimate of its error (prediction drift is scored "
                      "each window; live RMSE and MAE need labels)")
    for version, live in sorted(status.get("live", {}).items()):
        if live.get("rmse") is not None:
            out.print(f"  v{version}: live RMSE {live['rmse']:.5g}, MAE {live['mae']:.5g} on {live['labelled']} "
                      f"labelled row(s) of the last {live['windows']} window(s)")
        if live.get("accuracy") is not None:
            loss = f", log loss {live['log_loss']:.3f}" if live.get("log_loss") is not None else ""
            out.print(f"  v{version}: live accuracy {live['accuracy']:.1%} on {live['labelled']} labelled row(s) "
                      f"of the last {live['windows']} window(s){loss}")
    for version, rows in sorted(status["rows_unprofiled"].items()):
        out.print(f"  v{version}: {rows} row(s) not scored: no reference profile (`handoff monitor profile`)")
    last = status.get("last_window")
    if last:
        verdict = f"drifted: {', '.join(last['drifted_features'])}" if last["drifted"] else "no drift"
        out.print(f"  last window: v{last['version']} #{last['window']} ({last['rows']} rows): {verdict}")
    for column, figure in sorted(status.get("columns", {}).items()):
        if figure.get("share") is not None:  # unseen values and gaps: a share of rows, beside training's
            what = f"{figure['share']:.1%} of rows (training {figure['reference_share'] or 0:.1%})"
        else:  # a categorical column's shares: how far they moved
            what = f"shares moved {figure['effect']:.3f} (Jensen–Shannon; tolerance {figure['tolerance']:.3f})"
        flag = "  DRIFTED" if figure.get("drifted") else ""
        out.print(f"    {column}: {what}{flag}" + (f" · {figure['detail']}" if figure.get("drifted") else ""))
    if status["files_skipped"]:
        out.print(f"  files skipped (unreadable): {len(status['files_skipped'])}")
    loop = status.get("loop") or {}
    if loop:
        from monitoring import stage_in_words

        out.print(f"  closed loop: {stage_in_words(loop)}")


def _profile(name: str, version_text: str, home, tracking_uri, as_json: bool) -> None:
    from cluster.services import read_services
    from training import DataChanged, Registry, RegistryError, training_view

    if not version_text.isdigit():
        fail(f"version {version_text!r} is not a version number")
    settings = command_settings(home, tracking_uri=tracking_uri)
    registry = Registry(command_tracking_uri(None, settings, read_services(settings)))
    try:
        with err.status(f"profiling {name}/{version_text} from its training data …"):
            view = training_view(name, int(version_text), settings, registry)
            record_profile(registry, view)
    except (RegistryError, DataChanged, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_result({"name": name, "version": int(version_text), "rows": int(view.x_train.shape[0])})
    else:
        out.print(f"reference profile of {name}/{version_text} stored ({view.x_train.shape[0]} training rows, "
                  f"{len(view.features)} feature(s))")


def _unknown_kind(kind: str) -> str:
    """The refusal of a `--kind` no recorder writes (it would match nothing and look like "no events"):
    the nearest known kind when one is close (drift-declared → drift_declared), then all of them."""
    from difflib import get_close_matches

    near = get_close_matches(kind, EVENT_KINDS, n=1)
    return (f"--kind {kind!r} is not a kind of event" + (f" (did you mean {near[0]}?)" if near else "")
            + f"; known: {', '.join(EVENT_KINDS)}")


def events(name: Annotated[str, typer.Argument(help="registered model name")],
           kind: Annotated[str | None, typer.Option(help=f"only this kind: {', '.join(MONITOR_EVENT_KINDS)}; the "
                                                     f"loop's {', '.join(LOOP_EVENT_KINDS)}")] = None,
           last: Annotated[int | None, typer.Option(min=1, help="only the last N (N ≥ 1)")] = None,
           home: HomeOpt = None, monitoring_config_path: MonitoringConfigOpt = None,
           overrides: MonitorSetOpt = None, as_json: JsonOpt = False) -> None:
    """What the monitor of NAME recorded (windows scored, drift declared, files skipped), oldest first."""
    from monitoring import StateStore

    if kind is not None and kind not in EVENT_KINDS:
        fail(_unknown_kind(kind))
    cfg = monitoring_config(monitoring_config_path, overrides)
    settings = command_settings(home)
    found = [e for e in StateStore(state_root(settings, cfg), name).events() if kind is None or e["kind"] == kind]
    if last is not None:
        found = found[-last:]
    if as_json:
        print_result(found)
        return
    if not found:
        out.print(f"no events of {name} under {state_root(settings, cfg)}")
    for e in found:
        detail = {"window_scored": lambda: f"v{e['version']} window {e['window']}: {e['rows']} rows, "
                                           + (f"drifted: {', '.join(e['drifted_features'])}" if e["drifted"] else "no drift"),
                  "drift_declared": lambda: f"v{e['version']} DRIFT {e['event_id']} (windows {e['first_window']}-"
                                            f"{e['last_window']}): {', '.join(e['features'])}",
                  "window_labels": lambda: f"v{e['version']} window {e['window']}: {e['correct']}/{e['labelled']} "
                                           f"labelled row(s) right",
                  "concept_drift_suspected": lambda: e["reason"],
                  "retrain_submitted": lambda: f"job {e.get('job_id', '?')} for {e['event_id']} (attempt "
                                               f"{e.get('attempt', 0) + 1}): {e.get('reason', '')}",
                  "retrain_finished": lambda: f"job {e.get('job_id')} registered v{e.get('version')}",
                  "gate_passed": lambda: f"v{e['version']}: {e.get('reason', '')}",
                  "gate_failed": lambda: f"v{e['version']}: {e.get('reason', '')}",
                  "canary_started": lambda: f"v{e['version']} at {e.get('reason', '')}",
                  "promoted": lambda: f"v{e['version']} champion: {e.get('reason', '')}",
                  "rolled_back": lambda: f"v{e['version']} out, v{e.get('champion')} back: {e.get('reason', '')}",
                  }.get(e["kind"], lambda: e.get("reason", ""))()
        out.print(f"{e['time']}  {e['kind']:18} {detail}", highlight=False)


def report(name: Annotated[str, typer.Argument(help="served model name")],
           event: Annotated[str | None, typer.Argument(help="drift event id (default: the latest)")] = None,
           out_dir: Annotated[Path | None, typer.Option("--out", help="directory to write into "
                                                        "(default ./handoff-reports/NAME/EVENT)")] = None,
           open_it: Annotated[bool, typer.Option("--open", help="open the page in a browser")] = False,
           home: HomeOpt = None, monitoring_config_path: MonitoringConfigOpt = None,
           overrides: MonitorSetOpt = None, as_json: JsonOpt = False) -> None:
    """Write the drift report of a drift event of NAME: report.png and a self-contained report.html.

    For each feature that moved: its histogram against the reference (training) and its corrected
    p-value over recent windows with the threshold; above them, how far every feature moved. The
    monitor also logs each report to MLflow (run monitor-NAME-vVERSION, artifacts drift-reports/EVENT)."""
    from monitoring import StateStore, write_report

    cfg = monitoring_config(monitoring_config_path, overrides)
    settings = command_settings(home)
    events = StateStore(state_root(settings, cfg), name).events()
    declared = [e for e in events if e["kind"] == "drift_declared"]
    if not declared:
        fail(f"no drift event of {name} under {state_root(settings, cfg)} (`handoff events {name}` lists what "
             "the monitor recorded)")
    chosen = declared[-1] if event is None else next((e for e in declared if e["event_id"] == event), None)
    if chosen is None:
        fail(f"no drift event {event!r} of {name}; known: {', '.join(e['event_id'] for e in declared[-10:])}")
    target = out_dir or Path("handoff-reports") / name / chosen["event_id"]
    from cluster.local_paths import file_in_the_way

    blocked = file_in_the_way(target)
    if blocked is not None:
        fail(f"cannot write the report into {target}: {blocked} is a file, not a directory")
    try:
        page = write_report(chosen, events, target)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the report into {target} ({exc.strerror or exc}"
             + (f": {exc.filename}" if exc.filename else "") + ")")
    if open_it:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    if as_json:
        print_result({"event_id": chosen["event_id"], "html": str(page), "png": str(page.with_name("report.png"))})
    else:
        out.print(f"drift report of {name} {chosen['event_id']} (v{chosen['version']}, features "
                  f"{', '.join(chosen['features'])}): {page}")
