"""The gateway under steady traffic with labels: does its memory stay flat? Not a test.

Registers two versions of the serving bench's model (a short search) in a scratch store, serves
them 90/10 with the live log on (bench/serving.py's shape (d)), then for `--rounds` rounds drives
`--seconds` of one-row requests with `wrk` at `--concurrency` (127.0.0.1 only) while a thread sends
labels for answered ids (`--labels-per-s`, through the feedback route). After each round it samples
the resident memory of the gateway's processes (those listening on its port) and of the version
replicas, the live log's and the label files' count on disk. Flat RSS after the first rounds is
the bound docs/failure-modes.md states; a leak grows round after round.

    .venv/bin/python bench/soak_gateway.py [--rounds 12] [--seconds 20] [--concurrency 16]
Writes bench/results/soak_gateway.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.serving import BODY, first_answer, start_with_two_versions, wait_http, wrk  # noqa: E402

GATEWAY_PORT = 8000


def listening_pids(port: int) -> set[int]:
    import ray  # noqa: F401 - puts Ray's own psutil (ray/thirdparty_files) on the path
    import psutil

    return {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
            and c.status == psutil.CONN_LISTEN and c.pid}


def rss_mib(pids) -> float:
    import ray  # noqa: F401 - Ray's own psutil
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return round(total / 2**20, 1)


def replica_pids() -> set[int]:
    """The processes of the version replicas: Serve replicas (by their process title) not the gateway's."""
    import ray  # noqa: F401 - Ray's own psutil
    import psutil

    pids = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(p.info["cmdline"] or [])
        if title.startswith("ray::ServeReplica:") and "gateway" not in title.lower():
            pids.add(p.info["pid"])
    return pids


def send_labels(url: str, label, per_s: float, stop: threading.Event, sent: list) -> None:
    """Labels for ids the gateway gave (one-row requests answered by this thread), `per_s` a second."""
    while not stop.is_set():
        tick = time.monotonic()
        ids = []
        for _ in range(10):
            req = urllib.request.Request(f"{url}/infer", BODY.encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                ids.append(json.loads(r.read())["id"])
        body = json.dumps({"labels": [{"request_id": i, "label": label} for i in ids]}).encode()
        req = urllib.request.Request(f"{url}/feedback", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        sent[0] += len(ids)
        stop.wait(max(0.0, len(ids) / per_s - (time.monotonic() - tick)))


def count_files(root: Path) -> tuple[int, int]:
    live = sum(1 for p in root.rglob("*.parquet") if "_feedback" not in p.parts)
    return live, sum(1 for _ in (root / "_feedback").rglob("*.parquet")) if (root / "_feedback").exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="load rounds (a sample after each)")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of load per round")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    parser.add_argument("--labels-per-s", type=float, default=100.0, help="labels sent a second beside the load")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray
    from ray import serve

    from serving.config import load_serving_config
    from serving.control import ServingControl
    from training import Registry

    samples = []
    with tempfile.TemporaryDirectory(prefix="handoff-bench-soak-") as home:
        try:
            script, uri = start_with_two_versions(Path(home))
            live = Path(home) / "live"
            control = ServingControl(Registry(uri), load_serving_config(None, [], environ={}), str(live), say=print)
            control.traffic("bench", {1: 90, 2: 10})
            wait_http(f"http://127.0.0.1:{GATEWAY_PORT}/v2/health/ready")
            url = f"http://127.0.0.1:{GATEWAY_PORT}/v2/models/bench"
            first_answer(f"{url}/infer")
            req = urllib.request.Request(f"{url}/infer", BODY.encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                label = next(o for o in json.loads(r.read())["outputs"] if o["name"] == "label")["data"][0]
            gateway, replicas = listening_pids(GATEWAY_PORT), replica_pids()
            print(f"gateway pids {sorted(gateway)}, version replica pids {sorted(replicas)}", flush=True)
            stop, sent, total = threading.Event(), [0], 0
            sender = threading.Thread(target=send_labels, args=(url, label, args.labels_per_s, stop, sent), daemon=True)
            sender.start()
            started = time.monotonic()
            try:
                for r in range(args.rounds):
                    run = wrk(f"{url}/infer", args.concurrency, args.seconds, script)
                    total += int(run["rps"] * args.seconds)
                    live_files, label_files = count_files(live)
                    sample = {"round": r, "elapsed_s": round(time.monotonic() - started), "requests": total,
                              "rps": round(run["rps"]), "p99_ms": run["p99_ms"], "non_2xx": run["non_2xx"],
                              "gateway_rss_mib": rss_mib(gateway), "replicas_rss_mib": rss_mib(replicas),
                              "labels_sent": sent[0], "live_files": live_files, "label_files": label_files}
                    samples.append(sample)
                    print("  ".join(f"{k} {v}" for k, v in sample.items()), flush=True)
            finally:
                stop.set()
                sender.join(30)
            control.unserve("bench")
            serve.shutdown()
        finally:
            ray.shutdown()
    first, last = samples[min(1, len(samples) - 1)], samples[-1]
    print(f"gateway RSS from round {first['round']} to {last['round']}: {first['gateway_rss_mib']} → "
          f"{last['gateway_rss_mib']} MiB over {last['requests'] - first['requests']:,} requests")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "soak_gateway.json").write_text(json.dumps({"args": vars(args), "samples": samples}, indent=1))


if __name__ == "__main__":
    main()
