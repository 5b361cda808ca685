"""The monitor's core over a long run of steady traffic with labels: what grows. Not a test.

Pass after pass, the gateway's own writer flushes one live-log file of `--requests` one-row requests
(20 numeric features, a two-class model's answers), the gateway's feedback writer stores labels for
`--labelled` of the previous pass's requests as one label file, and the monitor's core (what the
actor runs: read, window, score, decide, join labels, commit after every window, compact) makes
one pass. Every `--every` passes it prints and records: the process's RSS, the state file's and
the event log's size, the entries of the state's file lists, the labels held in memory, the
pass's time, and what the loop's reads cost there: a retraining's read of the last `--recent`
labelled rows, and a canary's tick (its reader, kept from the sample before, reads what came since).

A pass stands for `--pass-seconds` of traffic (default a minute): the writers' clock (the rows'
answer times, the files' names and modification times) and the monitor's run that far ahead each
pass, so 1,500 passes are a day of a model's life, as the monitor's floors and horizons see it. A bounded monitor keeps all of them flat; what grows with the passes is what is not
bounded yet (docs/failure-modes.md).

    .venv/bin/python bench/soak_monitor.py [--passes 600] [--requests 1000] [--labelled 0.5]
Writes bench/results/soak_monitor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.drift import FEATURES, REF_ROWS, proba_of, rows  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


class SimulatedClock:
    """The soak's time: starts now, moved on by the bench; what the writers and the monitor read."""

    def __init__(self):
        self.t = time.time()

    def time(self) -> float:
        return self.t

    def install(self) -> None:
        """The gateway's writers take their time from this clock (their module's `time` and `datetime`)."""
        import types
        from datetime import datetime, timezone

        import serving.feedback
        import serving.live_log

        clock = self

        class Now(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.fromtimestamp(clock.t, tz or timezone.utc)

        for module in (serving.live_log, serving.feedback):
            module.time = types.SimpleNamespace(time=self.time, monotonic=time.monotonic, sleep=time.sleep)
            module.datetime = Now

    def stamp(self, root: Path, seen: set) -> None:
        """Files written since the last call get the clock's time as their modification time."""
        for path in root.rglob("*.parquet"):
            if path not in seen:
                seen.add(path)
                os.utime(path, (self.t, self.t))


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def soak(passes: int, requests: int, labelled: float, every: int, recent: int, pass_seconds: float) -> list[dict]:
    from monitoring.compaction import CompactionSpec
    from monitoring.core import LabelJoin, MonitorCore
    from monitoring.labelled import LabelledReader, labelled_rows
    from monitoring.labels import Feedback, WindowRows
    from monitoring.reference import build_profile
    from monitoring.state_store import StateStore
    from monitoring.windows import WindowSpec
    from serving.feedback import FeedbackLog, Labels
    from serving.live_log import LiveLog

    rng = np.random.default_rng(11)
    reference = rows(rng, REF_ROWS)
    profile = build_profile(reference, FEATURES, proba_of(reference), [0, 1], "soak")
    samples, clock, seen = [], SimulatedClock(), set()
    clock.install()
    with tempfile.TemporaryDirectory() as tmp:
        live, state = f"{tmp}/live", f"{tmp}/state"
        log = LiveLog(live, flush_seconds=3600, max_rows=10**9, max_requests=10**9)
        feedback_log = FeedbackLog(live)
        core = MonitorCore("soak", live, StateStore(state, "soak"), lambda v: profile,
                           WindowSpec(rows=requests, seconds=3600, min_rows=requests // 2),
                           clock=lambda: clock.t + 5,
                           labels=LabelJoin(Feedback(live, "soak"), WindowRows(state, "soak")),
                           compaction=CompactionSpec())
        state_dir = Path(state) / "model=soak"
        started, canary = time.perf_counter(), None
        for p in range(passes):
            clock.t += pass_seconds
            x = rows(rng, requests).astype(np.float32)
            proba = proba_of(x)
            for r in range(requests):
                log.append("soak", tuple(FEATURES), f"p{p}-r{r}", 1, None, x[r:r + 1], proba[r:r + 1].argmax(axis=1),
                           1.0, proba=proba[r:r + 1])
            log.flush()
            if p:
                ids = [f"p{p - 1}-r{r}" for r in range(int(requests * labelled))]
                classes = rng.integers(0, 2, len(ids)).tolist()
                feedback_log.write("soak", Labels(ids, [str(c) for c in classes], classes))
            clock.stamp(Path(live), seen)
            tick = time.perf_counter()
            core.step()
            clock.stamp(Path(live), seen)  # its merges
            pass_s = time.perf_counter() - tick
            if p % every == 0 or p == passes - 1:
                rss = rss_mib()  # the monitor's own: before the loop's reads below (a retraining job reads in its own process)
                tick = time.perf_counter()
                retrain = len(labelled_rows(live, "soak", last=recent))
                retrain_s = time.perf_counter() - tick
                tick = time.perf_counter()
                canary_rows = len(canary.rows()) if canary is not None else 0
                canary_s = time.perf_counter() - tick
                canary = LabelledReader(live, "soak", since=clock.t, versions={1}, with_features=False)
                sample = {"pass": p, "rows": (p + 1) * requests, "rss_mib": round(rss, 1),
                          "state_bytes": size(state_dir / "state.json"), "events_bytes": sum(size(p) for p in state_dir.glob("events/seg-*.jsonl")),
                          "event_segments": len(list(state_dir.glob("events/seg-*.jsonl"))),
                          "files": len(core.state["files"]), "consumed": len(core.state["consumed"]),
                          "feedback_files": len(core.state["feedback_files"]),
                          "labels_in_memory": len(core.labels.feedback.labels), "pass_s": round(pass_s, 3),
                          "retrain_rows": retrain, "retrain_read_s": round(retrain_s, 3),
                          "canary_rows": canary_rows, "canary_tick_s": round(canary_s, 3),
                          "elapsed_s": round(time.perf_counter() - started, 1)}
                samples.append(sample)
                print("  ".join(f"{k} {v}" for k, v in sample.items()), flush=True)
        log.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=600, help="monitor passes (one live-log file and one label file each)")
    parser.add_argument("--requests", type=int, default=1_000, help="one-row requests per pass (one window)")
    parser.add_argument("--labelled", type=float, default=0.5, help="share of a pass's requests labelled the pass after")
    parser.add_argument("--every", type=int, default=50, help="passes between samples")
    parser.add_argument("--recent", type=int, default=20_000, help="labelled rows a retraining reads")
    parser.add_argument("--pass-seconds", type=float, default=60.0, help="the traffic time a pass stands for")
    args = parser.parse_args()
    samples = soak(args.passes, args.requests, args.labelled, args.every, args.recent, args.pass_seconds)
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    growth = {k: (last[k] - first[k]) / max(last["pass"] - first["pass"], 1)
              for k in ("rss_mib", "state_bytes", "events_bytes", "consumed", "feedback_files", "labels_in_memory")}
    print("per pass, from the second sample on: " + ", ".join(f"{k} {v:+.3g}" for k, v in growth.items()))
    out = REPO / "bench" / "results" / "soak_monitor.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "samples": samples, "growth_per_pass": growth}, indent=1))


if __name__ == "__main__":
    main()
