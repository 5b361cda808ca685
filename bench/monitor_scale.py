"""How one model's monitor scales with the gateways writing its live log, on a disk and on S3. Not a test.

`--writers` gateways' live-log writers (the gateway's own `LiveLog`) each flush one file of
`--rows` one-row requests per pass (20 numeric features, a two-class model's answers); the
monitor's core (what the actor runs: list, read, window, score, commit, compact) makes one pass.
Per setting it reports the rows a second one monitor keeps up with (rows of a pass over the pass's
time), a pass's time, the files a pass reads and the process's RSS. The S3 runs go to a real S3 API
(moto's server on 127.0.0.1, started here): its figures carry a local server's latency, not a
region's (tens of milliseconds a request more there).

    .venv/bin/python bench/monitor_scale.py [--writers 1,4,16] [--passes 30] [--rows 500]
Writes bench/results/monitor_scale.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.drift import FEATURES, REF_ROWS, proba_of, rows  # noqa: E402
from bench.soak_monitor import rss_mib  # noqa: E402


def run(live: str, state: str, writers: int, passes: int, rows_per_file: int) -> dict:
    from monitoring.compaction import CompactionSpec
    from monitoring.core import MonitorCore
    from monitoring.reference import build_profile
    from monitoring.state_store import StateStore
    from monitoring.windows import WindowSpec
    from serving.live_log import LiveLog

    rng = np.random.default_rng(3)
    reference = rows(rng, REF_ROWS)
    profile = build_profile(reference, FEATURES, proba_of(reference), [0, 1], "scale")
    logs = [LiveLog(live, flush_seconds=3600, max_rows=10**9, max_requests=10**9) for _ in range(writers)]
    core = MonitorCore("scale", live, StateStore(state, "scale"), lambda v: profile,
                       WindowSpec(rows=5_000, seconds=3600, min_rows=1_000), clock=lambda: time.time() + 60,
                       compaction=CompactionSpec())
    times, read = [], []
    for p in range(passes):
        for w, log in enumerate(logs):
            x = rows(rng, rows_per_file).astype(np.float32)
            proba = proba_of(x)
            for r in range(rows_per_file):
                log.append("scale", tuple(FEATURES), f"w{w}-p{p}-r{r}", 1, None, x[r:r + 1],
                           proba[r:r + 1].argmax(axis=1), 1.0, proba=proba[r:r + 1])
            log.flush()
        before = core.state["files_base"] + len(core.state["files"])
        tick = time.perf_counter()
        core.step()
        times.append(time.perf_counter() - tick)
        read.append(core.state["files_base"] + len(core.state["files"]) - before)
    for log in logs:
        log.close()
    steady = times[len(times) // 3:]  # past the first passes' warm-up (profile calibration, imports)
    pass_s = float(np.mean(steady))  # a mean: the passes that cut a window carry its scoring
    return {"writers": writers, "rows_per_pass": writers * rows_per_file, "pass_s": round(pass_s, 4),
            "rows_per_s": round(writers * rows_per_file / pass_s), "files_per_pass": float(np.median(read)),
            "rows_scored": core.state["rows_scored"].get("1", 0), "rss_mib": round(rss_mib(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="1,4,16", help="gateways writing the model's live log, comma-separated")
    parser.add_argument("--passes", type=int, default=30, help="monitor passes per setting")
    parser.add_argument("--rows", type=int, default=500, help="one-row requests per writer's file (one flush)")
    parser.add_argument("--no-s3", action="store_true", help="only the local disk")
    args = parser.parse_args()
    counts = [int(w) for w in args.writers.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for writers in counts:
            result = {"storage": "local disk", **run(f"{tmp}/live-{writers}", f"{tmp}/state-{writers}", writers,
                                                     args.passes, args.rows)}
            print(result, flush=True)
            results.append(result)
        if not args.no_s3:
            from tests.integration.s3_server import s3_server

            with s3_server(Path(tmp)) as s3:
                for writers in counts:
                    result = {"storage": "S3 (moto, 127.0.0.1)",
                              **run(s3.uri(f"scale-{writers}", "live"), s3.uri(f"scale-{writers}", "monitor"), writers,
                                    args.passes, args.rows)}
                    print(result, flush=True)
                    results.append(result)
    print(f"\n{'storage':<22} {'writers':>7} {'rows/pass':>9} {'pass s':>8} {'rows/s':>9} {'files/pass':>10} {'RSS MiB':>8}")
    for r in results:
        print(f"{r['storage']:<22} {r['writers']:>7} {r['rows_per_pass']:>9} {r['pass_s']:>8.3f} {r['rows_per_s']:>9,} "
              f"{r['files_per_pass']:>10.0f} {r['rss_mib']:>8.0f}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "monitor_scale.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
