"""`make demo`: the whole closed loop on the embedded default, by itself.

`handoff up` (a Ray head with its jobs API and an MLflow server, in HANDOFF_HOME) → tune and register
the Shuttle model → serve it with its monitor → replay its held-out test rows as live traffic with
labels → at a known request a sensor is recalibrated (f1 reads 20 higher, f3 10 lower; the labels
stay true) → the champion's live accuracy falls → the monitor declares drift → a retraining job
through the jobs API → the offline gate → a canary → promotion, with live progress, then a
summary. Everything that is not Handoff's progress (Ray, Tune, MLflow, warnings) goes to a log
file the summary names. The services keep running afterwards, so every command the demo prints
works when typed; `handoff down` stops them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from handoff.replay import LiveReplay, Recalibration

CHANGE = Recalibration({"f1": (1.0, 20.0), "f3": (1.0, -10.0)})
CHANGE_AT = 3_000          # the request at which the sensor is recalibrated
AFTER_PROMOTION = 3_000    # requests replayed after the promotion, to measure the new champion
LIMIT_S = 600              # the replay gives up after this long without a promotion
MONITORING = ["window_rows=500", "min_rows=100", "persistence=2", "poll_seconds=0.5", "loop.tick_seconds=1",
              "loop.retrain.cooldown_s=0", "loop.data.recent_rows=2000", "loop.canary.percent=25",
              "loop.canary.min_requests=300", "loop.canary.min_labels=200", "loop.canary.timeout_s=300"]
LOOP_KINDS = {"drift_declared", "retrain_submitted", "retrain_finished", "retrain_failed", "retrain_abandoned",
              "gate_passed", "gate_failed", "canary_started", "canary_ready", "promoted", "rolled_back"}


@contextlib.contextmanager
def quiet_into(log_path: Path):
    """Send this process's stdout and stderr (fd 1 and 2: Ray's and Tune's output, warnings) to
    `log_path`; yield a console on the terminal for the demo's own progress."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Console(file=terminal, force_terminal=terminal.isatty(), highlight=False)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


def _events(store) -> list[dict]:
    return [e for e in store.events() if e["kind"] in LOOP_KINDS]


def run_loop_demo(settings, config: Path, cfg, port: int, say: Console) -> dict:
    """The demo's steps; returns the summary (also printed). `cfg`: the experiment config of the file
    `config`, loaded and validated by the caller before anything is started."""
    from cluster.connect import connect_ray
    from cluster.services import up
    from handoff.monitor_commands import monitoring_config, start_monitor, state_root
    from handoff.training_commands import run_tune
    from monitoring import StateStore
    from serving import ServingControl, load_serving_config
    from training import CHAMPION, Registry, load_data

    started = time.monotonic()
    say.print("[bold]1/5[/bold] starting the embedded cluster: a Ray head with its jobs API, an MLflow server …")
    services = up(settings)
    say.print(f"      Ray {services.ray_address} (jobs API {services.dashboard_url}), MLflow {services.mlflow_uri}")
    name = cfg.name
    registry = Registry(services.mlflow_uri)
    say.print(f"[bold]2/5[/bold] tuning {name} ({cfg.search.num_samples} trials, ASHA) and registering the best …")
    run_tune(config, [], settings.home, None, services.mlflow_uri, False, None, True)
    # the version this search registered is the demo's champion, also when an earlier demo left a
    # retrained one (trained on the recalibrated sensor: the replay's first rows would look drifted to it)
    champion = registry.versions(name)[0].version
    if registry.aliases(name).get(CHAMPION) != champion:
        registry.set_alias(name, CHAMPION, champion)
    info = registry.version(name, champion)
    say.print(f"      v{champion} is the champion (test accuracy {info.metrics.get('test_accuracy', 0):.2%})")
    say.print(f"[bold]3/5[/bold] serving v{champion} on http://127.0.0.1:{port} with its monitor and the closed loop …")
    connect_ray(services.ray_address)
    serving_cfg = load_serving_config(None, [f"gateway.port={port}", "live_log.flush_seconds=0.5",
                                             "version_defaults.cpus=0.25", "gateway.cpus=0.25"])
    control = ServingControl(registry, serving_cfg, str(settings.live_log_dir))
    control.traffic(name, {champion: 100})
    mon = monitoring_config(None, MONITORING)
    start_monitor(name, settings, services.mlflow_uri, str(settings.live_log_dir), mon)
    store = StateStore(state_root(settings, mon), name)
    seen = len(_events(store))
    data = load_data(cfg, settings)  # the champion's split: its test rows were never trained on
    labels = [data.classes[i] for i in data.y_test]
    replay = LiveReplay(port, name, list(data.features), data.x_test, labels, CHANGE, CHANGE_AT,
                        prefix=f"demo-{int(time.time())}")
    say.print(f"[bold]4/5[/bold] replaying {len(data.y_test)} held-out rows as live traffic with labels; at request "
              f"{CHANGE_AT} a sensor is recalibrated ({CHANGE.describe()}) …")
    marks: dict[str, tuple[int, float]] = {}
    promoted_at: list[int] = []

    def progress(window) -> None:
        nonlocal seen
        new = _events(store)[seen:]
        seen += len(new)
        for e in new:
            marks.setdefault(e["kind"], (replay.sent, time.time()))
            say.print(f"      [cyan]{e['kind']:17}[/cyan] {_event_line(e)[:58]}")
            if e["kind"] == "promoted":
                promoted_at.append(replay.sent)
        if not new and replay.sent % 2000:
            return  # a line every 2,000 requests, and at every step of the loop
        shares = " ".join(f"v{v} {n / window.requests:.0%}" for v, (n, *_) in sorted(window.by_version.items()))
        phase = "changed" if replay.sent > CHANGE_AT else "original"
        accuracy = f"{window.accuracy:.1%}" if window.accuracy is not None else "-"
        say.print(f"      {replay.sent:6d} requests  accuracy {accuracy:>6}  {shares:14} {phase} data"
                  + (f"  [red]{window.failed} failed[/red]" if window.failed else ""))

    def finished() -> bool:
        if promoted_at:
            return replay.sent >= promoted_at[0] + AFTER_PROMOTION
        return any(k in marks for k in ("rolled_back", "retrain_abandoned", "gate_failed"))

    after_promotion = None
    replay.run(seconds=LIMIT_S, until=finished, window=500, on_window=progress)
    if promoted_at:
        # the rows answered after the promotion, all by the new champion: its live accuracy
        answered = [w for w in replay.windows][(promoted_at[0] // 500) + 1:]
        total = sum(w.requests - w.failed for w in answered)
        after_promotion = sum(w.right for w in answered) / total if total else None
    before = replay.before.accuracy
    after_change = [w for w in replay.windows][CHANGE_AT // 500: (promoted_at[0] // 500 if promoted_at else None)]
    changed_total = sum(w.requests - w.failed for w in after_change)
    summary = {
        "model": name, "champion_before": champion,
        "new_champion": registry.aliases(name)[CHAMPION],
        "detection_delay_requests": marks["drift_declared"][0] - CHANGE_AT if "drift_declared" in marks else None,
        "accuracy_before_change": before,
        "accuracy_after_change": sum(w.right for w in after_change) / changed_total if changed_total else None,
        "accuracy_after_promotion": after_promotion,
        "seconds_change_to_new_champion": (marks["promoted"][1] - replay.changed_at_time)
        if "promoted" in marks and replay.changed_at_time else None,
        "requests": replay.sent, "failed_requests": replay.before.failed + replay.after.failed,
        "failures": list(replay.errors),
        "outcome": next((k for k in ("promoted", "rolled_back", "gate_failed", "retrain_abandoned") if k in marks),
                        "no decision in time"),
        "demo_seconds": time.monotonic() - started,
    }
    return summary


def _event_line(e: dict) -> str:
    if e["kind"] == "drift_declared":
        return f"v{e['version']}: {', '.join(list(e['features'])[:4])} moved ({e['event_id']})"
    return e.get("reason") or e.get("job_id") or ""


def print_summary(say: Console, s: dict, log_path: Path, port: int) -> None:
    pct = lambda v: f"{v:.2%}" if v is not None else "-"  # noqa: E731
    say.print("\n[bold]5/5 summary[/bold]")
    say.print(f"  outcome                        {s['outcome']}: v{s['champion_before']} → v{s['new_champion']}")
    say.print(f"  detection delay                {s['detection_delay_requests']} requests after the change")
    say.print(f"  live accuracy before change    {pct(s['accuracy_before_change'])}")
    say.print(f"  live accuracy after change     {pct(s['accuracy_after_change'])}  (the old champion, recalibrated sensor)")
    say.print(f"  live accuracy after promotion  {pct(s['accuracy_after_promotion'])}  (the retrained champion)")
    seconds = s["seconds_change_to_new_champion"]
    say.print(f"  change → new champion at 100%  {seconds:.0f} s" if seconds is not None else
              "  change → new champion at 100%  -")
    say.print(f"  requests                       {s['requests']}, [bold]failed requests: {s['failed_requests']}[/bold]")
    print_failures(say, s["failures"], log_path)
    say.print(f"  demo took                      {s['demo_seconds']:.0f} s; Ray, Tune and MLflow output in {log_path}")
    say.print("\nThe cluster keeps running. Try:")
    say.print(f"  curl -s -H 'content-type: application/json' -d '{json.dumps(_example())}' "
              f"http://127.0.0.1:{port}/v2/models/{s['model']}/infer")
    say.print(f"  .venv/bin/handoff status        .venv/bin/handoff events {s['model']}")
    say.print(f"  .venv/bin/handoff models {s['model']}    .venv/bin/handoff report {s['model']} --open")
    say.print("  MLflow UI: http://127.0.0.1:5000        stop everything: .venv/bin/handoff down")


def print_failures(say: Console, failures: list[str], log_path: Path, shown: int = 5) -> None:
    """The first failed requests' causes under the summary, a count per status, and every one of them
    in the demo log (this process's stdout goes there)."""
    if not failures:
        return
    by_status: dict[str, int] = {}
    for line in failures:
        status = line.split(": ", 1)[1].split(" ", 1)[0] if ": " in line else "?"
        by_status[status] = by_status.get(status, 0) + 1
    counts = ", ".join(f"{n} × {status}" for status, n in sorted(by_status.items(), key=lambda kv: -kv[1]))
    say.print(f"  [red]failures by status[/red]             {counts} (599: no HTTP answer)")
    for line in failures[:shown]:
        say.print(f"    {line[:76]}")
    print(f"failed requests of the demo ({len(failures)}):", *failures, sep="\n", flush=True)
    say.print(f"    … all {len(failures)} in {log_path}" if len(failures) > shown else f"    (also in {log_path})")


ROW = [50.0, 0.0, 80.0, 0.0, 20.0, 0.0, 30.0, 60.0, 30.0]  # a Shuttle reading


def _example() -> dict:
    return {"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": ROW}]}
