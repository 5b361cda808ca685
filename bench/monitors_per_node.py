"""How many models' monitors one node holds: memory and CPU of N monitor actors side by side. Not a test.

A local Ray (this machine's CPUs), a scratch MLflow store, one small Shuttle model tuned and
registered, then registered again under `--monitors` names (the same run: each name's version has
the reference profile the monitor reads). For each count in `--monitors` it starts that many real
monitor actors (`monitoring.monitor.start`, the closed loop off, MLflow logging off) and one writer
per model (the gateway's own `LiveLog`) sending `--rows-per-s` one-row requests a second in files
flushed every second; after `--warmup` s it measures over `--seconds` s each monitor process's RSS
and CPU time (psutil), and the rows they scored.

    .venv/bin/python bench/monitors_per_node.py [--monitors 1,4,8] [--rows-per-s 200] [--seconds 30]
Writes bench/results/monitors_per_node.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FEATURES = tuple(f"f{i}" for i in range(1, 10))


def register_models(home: Path, tracking_uri: str, names: list[str]) -> list[str]:
    """One tuned model, registered under each of `names` (the same run), with its reference profile."""
    from mlflow import MlflowClient

    from cluster.settings import Settings
    from handoff.monitor_commands import record_profile
    from tests.integration.conftest import SMALL
    from training import Registry, load_config, tune_and_register

    cfg = load_config(REPO / "configs" / "shuttle.yaml", [*SMALL, f"name={names[0]}", "search.num_samples=1",
                                                          "dataset.max_rows=6000", f"storage_path={home / 'tune'}"],
                      environ={})
    # the reference profile the monitors score against, stored as `handoff tune` stores it (without one a
    # monitor counts every row as unprofiled and scores none: this bench's first runs measured idle monitors)
    registered = tune_and_register(cfg, Settings.resolve(environ={}, home=home), tracking_uri,
                                   on_registered=lambda view: record_profile(Registry(tracking_uri), view))
    client = MlflowClient(tracking_uri)
    source = client.get_model_version(names[0], str(registered.version))
    for name in names[1:]:
        client.create_registered_model(name)
        copy = client.create_model_version(name, source.source, run_id=source.run_id, tags=source.tags)
        assert int(copy.version) == 1
        client.set_registered_model_alias(name, "champion", "1")
    return names


class Writers:
    """One live-log writer per model, each `rate` one-row requests a second (drawn from Shuttle rows)."""

    def __init__(self, live: str, models: list[str], rate: int):
        from serving.live_log import LiveLog
        from training.datasets import BUILTIN_DATASETS

        frame = BUILTIN_DATASETS["shuttle"][0]().to_pandas()
        self.x = frame[list(FEATURES)].to_numpy(np.float32)
        self.models, self.rate = models, rate
        self.log = LiveLog(live, flush_seconds=1.0)
        self.sent, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng, tick = np.random.default_rng(1), time.monotonic()
        while not self._stop.is_set():
            for model in self.models:
                rows = self.x[rng.integers(0, len(self.x), self.rate)]
                for r in range(self.rate):
                    self.log.append(model, FEATURES, f"{model}-{self.sent}-{r}", 1, None, rows[r:r + 1],
                                    np.zeros(1, np.int64), 1.0, proba=np.array([[0.9, 0.1]], np.float32))
            self.sent += self.rate
            tick += 1.0
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        self.log.close()


def measure(models: list[str], live: str, state: str, tracking_uri: str, rate: int, warmup: float,
            seconds: float) -> dict:
    import ray  # noqa: F401 - Ray's own psutil
    import psutil

    from monitoring import MonitoringConfig, find, start, stop

    cfg = MonitoringConfig.model_validate({"mlflow": False, "loop": {"enabled": False}, "poll_seconds": 2.0,
                                        "window_rows": 1_000, "min_rows": 200})
    for model in models:
        start(model, live, state, tracking_uri, cfg)
    try:
        with Writers(live, models, rate):
            time.sleep(warmup)
            processes = {m: psutil.Process(ray.get(find(m).status.remote(), timeout=60)["pid"]) for m in models}
            cpu0 = {m: sum(p.cpu_times()[:2]) for m, p in processes.items()}
            rows0 = {m: sum(ray.get(find(m).status.remote())["rows_scored"].values()) for m in models}
            time.sleep(seconds)
            cpu = {m: sum(p.cpu_times()[:2]) - cpu0[m] for m, p in processes.items()}
            rss = {m: p.memory_info().rss / 2**20 for m, p in processes.items()}
            statuses = {m: ray.get(find(m).status.remote()) for m in models}
            rows = {m: sum(statuses[m]["rows_scored"].values()) - rows0[m] for m in models}
    finally:
        for model in models:
            stop(model)
    unprofiled = sum(sum(s["rows_unprofiled"].values()) for s in statuses.values())
    if not all(rows.values()) or unprofiled:
        sys.exit(f"a monitor scored nothing in {seconds:.0f} s (rows scored {rows}, unprofiled {unprofiled}, "
                 f"errors {[s['last_error'] for s in statuses.values()]}): the figures would be an idle monitor's")
    return {"monitors": len(models), "rows_per_s_each": rate,
            "rss_mib_each": round(float(np.mean(list(rss.values()))), 1),
            "rss_mib_total": round(float(sum(rss.values())), 1),
            "cpu_percent_each": round(100 * float(np.mean(list(cpu.values()))) / seconds, 2),
            "rows_scored_per_s_each": round(float(np.mean(list(rows.values()))) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--monitors", default="1,4,8", help="monitor counts to measure, comma-separated")
    parser.add_argument("--rows-per-s", type=int, default=200, help="one-row requests a second to each model")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured")
    args = parser.parse_args()
    counts = [int(c) for c in args.monitors.split(",")]
    import ray

    results = []
    with tempfile.TemporaryDirectory(prefix="handoff-bench-monitors-") as tmp:
        home = Path(tmp) / "home"
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        try:
            names = register_models(home, tracking_uri, [f"scale-{i}" for i in range(max(counts))])
            for n in counts:
                result = measure(names[:n], f"{tmp}/live-{n}", f"{tmp}/monitor-{n}", tracking_uri, args.rows_per_s,
                                 args.warmup, args.seconds)
                print(result, flush=True)
                results.append(result)
        finally:
            ray.shutdown()
    print(f"\n{'monitors':>8} {'RSS MiB each':>12} {'RSS MiB total':>13} {'CPU % each':>10} {'rows/s each':>11}")
    for r in results:
        print(f"{r['monitors']:>8} {r['rss_mib_each']:>12.0f} {r['rss_mib_total']:>13.0f} {r['cpu_percent_each']:>10.1f}"
              f" {r['rows_scored_per_s_each']:>11.0f}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "monitors_per_node.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
