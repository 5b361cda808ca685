"""The whole closed loop for minutes on `handoff up`: do the gateway's and the monitor's memory stay flat? Not a test.

Starts `handoff up` in a scratch home (127.0.0.1 only), tunes and serves the Shuttle model with the
demo's fast loop settings, then replays its held-out rows (cycled) with labels for `--minutes`
from one client; at request 3,000 a sensor is recalibrated, so the monitor declares drift and the
loop retrains, gates, canaries and promotes while the traffic goes on. Every `--every` seconds it
samples: the gateway's and the monitor actor's RSS, the monitor's state file, the label files it
lists and its label floor, the requests sent and failed, and the loop's last step.

    .venv/bin/python bench/soak_loop.py [--minutes 8] [--every 20]
Writes bench/results/soak_loop.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.soak_gateway import listening_pids, rss_mib  # noqa: E402

HANDOFF = str(Path(sys.executable).with_name("handoff"))
LOOP_KINDS = ("drift_declared", "retrain_submitted", "gate_passed", "gate_failed", "canary_started", "promoted",
              "rolled_back", "retrain_abandoned")


def handoff(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([HANDOFF, *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="minutes of traffic")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between samples")
    parser.add_argument("--gate", choices=["open", "default"], default="open", help=(
        "open: the offline gate lets any candidate through (loop.gate.min_gain_recent=-1), so every retraining "
        "reaches a canary (a champion of 6,000 rows barely loses accuracy to the recalibration: the default "
        "gate stops its retrained twin); default: the gate as configured"))
    args = parser.parse_args()
    from cluster.head_services import free_port
    from handoff.demo_loop import CHANGE, CHANGE_AT, MONITORING
    from handoff.replay import LiveReplay
    from training.datasets import BUILTIN_DATASETS

    frame = BUILTIN_DATASETS["shuttle"][0]().to_pandas()
    features = [f"f{i}" for i in range(1, 10)]
    samples, steps = [], []
    with tempfile.TemporaryDirectory(prefix="handoff-bench-soak-loop-") as tmp:
        home, gateway = Path(tmp) / "home", free_port()
        ports = [f"--mlflow-port={free_port()}", f"--ray-port={free_port()}", f"--dashboard-port={free_port()}"]
        started = handoff(home, "up", "--num-cpus=2", *ports, timeout=300)
        if started.returncode:
            sys.exit(started.stdout + started.stderr)
        try:
            data = Path(tmp) / "train.parquet"
            frame.iloc[:6000].to_parquet(data)
            sets = ["search.num_samples=1", "search.epochs=2", "search.scheduler.type=fifo", "name=soak",
                    f"dataset.uri={data}"]
            tuned = handoff(home, "tune", "configs/shuttle.yaml", *[a for s in sets for a in ("--set", s)])
            if tuned.returncode:
                sys.exit(tuned.stderr[-3000:])
            served = handoff(home, "serve", "soak", "--set", f"gateway.port={gateway}", "--set", "gateway.cpus=0.2",
                             "--set", "version_defaults.cpus=0.2", "--set", "live_log.flush_seconds=0.5",
                             *[a for s in [*MONITORING, *(["loop.gate.min_gain_recent=-1"] if args.gate == "open" else [])]
                               for a in ("--monitoring-set", s)])
            if served.returncode:
                sys.exit(served.stderr[-3000:])
            held = frame.iloc[20000:32000]
            replay = LiveReplay(gateway, "soak", features, held[features].to_numpy(), held["anomaly"].astype(int).tolist(),
                                CHANGE, change_at=CHANGE_AT, prefix="soak")
            sender = threading.Thread(target=replay.run, kwargs={"seconds": args.minutes * 60}, daemon=True)
            started_at = time.monotonic()
            sender.start()
            gateway_pids = listening_pids(gateway)
            state = home / "monitor" / "model=soak" / "state.json"
            while sender.is_alive():
                sender.join(args.every)
                status = json.loads(handoff(home, "monitor", "soak", "status", "--json").stdout or "{}")
                found = json.loads(handoff(home, "events", "soak", "--json").stdout or "[]")
                steps = [e["kind"] for e in found if e["kind"] in LOOP_KINDS]
                sample = {"s": round(time.monotonic() - started_at), "requests": replay.sent,
                          "failed": replay.before.failed + replay.after.failed,
                          "gateway_rss_mib": rss_mib(gateway_pids), "monitor_rss_mib": rss_mib([status.get("pid", 0)]),
                          "state_bytes": state.stat().st_size if state.exists() else 0,
                          "label_files_listed": status.get("label_files_listed"),
                          "label_floor_age_s": round(time.time() - status["label_floor"]) if status.get("label_floor") else None,
                          "loop": steps[-1] if steps else None}
                samples.append(sample)
                print("  ".join(f"{k} {v}" for k, v in sample.items()), flush=True)
            handoff(home, "unserve", "soak")
        finally:
            handoff(home, "down", timeout=180)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak_loop.json").write_text(json.dumps({"args": vars(args), "samples": samples, "loop_steps": steps},
                                                   indent=1))
    print("loop steps:", " → ".join(steps))


if __name__ == "__main__":
    main()
