"""Drift monitoring, side by side in one run on the same windows. Not a test.

20 numeric features (each its own mean and scale), a reference of 20,000 rows, windows of 5,000,
a 0.3σ mean shift in 3 features:

  throughput   time per window and rows/s of Handoff's scorer (`monitoring.scoring.score_window`:
               KS with p-values corrected across features, PSI, Wasserstein, Jensen–Shannon), of a
               plain per-feature `scipy.stats.ks_2samp` loop, and of Evidently's DataDriftPreset
               (in its own virtualenv, bench/.venv-evidently: Evidently 0.7 needs pandas < 3),
               alternated over rounds on the same windows; and the features each flags
  delay        windows from the onset of a shift (0.1σ to 1σ) to the declaration (persistence N)
  false alarm  declarations over 1,000 windows without drift (after correction and persistence),
               against the uncorrected per-feature KS
  end to end   the monitor's core (what the actor runs: read, window, score, decide, commit the
               state after every window, keep rows for labels, compact) over live-log files written
               by the gateway's own writer, on one core; pyarrow alone reading the same files

    .venv/bin/python bench/drift.py [--rounds 5] [--alarm-windows 1000] [--no-evidently]
Writes bench/results/drift.json and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monitoring.decision import DriftState, decide  # noqa: E402
from monitoring.reference import build_profile  # noqa: E402
from monitoring.scoring import score_window  # noqa: E402

FEATURES = [f"f{i}" for i in range(20)]
LOC = np.arange(20, dtype=float) - 10
SCALE = 1 + np.arange(20) / 10
REF_ROWS, WINDOW_ROWS, SHIFTED = 20_000, 5_000, [0, 1, 2]
EVIDENTLY_VENV = REPO / "bench" / ".venv-evidently"
EVIDENTLY_PINS = ["evidently==0.7.23", "pandas<3"]


def rows(rng, n: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(LOC, SCALE, size=(n, len(FEATURES)))
    x[:, SHIFTED] += shift * SCALE[SHIFTED]
    return x


def proba_of(x: np.ndarray) -> np.ndarray:
    """A fixed two-class model of the rows (what the live log's probabilities come from)."""
    p = 1 / (1 + np.exp(-(x[:, 0] - LOC[0]) / SCALE[0]))
    return np.column_stack([1 - p, p]).astype(np.float32)


def scipy_loop(reference: np.ndarray, window: np.ndarray) -> list[str]:
    from scipy import stats

    return [f for j, f in enumerate(FEATURES) if stats.ks_2samp(reference[:, j], window[:, j]).pvalue < 0.05]


def evidently(reference: np.ndarray, windows: list[np.ndarray]) -> dict | None:
    """Evidently on `windows`, in its own virtualenv (made on first use); None if it cannot be made."""
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {EVIDENTLY_VENV} ({', '.join(EVIDENTLY_PINS)}) …", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)]).returncode == 0 and \
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY_PINS]).returncode == 0
        if not made:
            print("could not install Evidently: its column is left out", file=sys.stderr)
            return None
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/w.npz", reference=reference, windows=np.stack(windows))
        done = subprocess.run([str(python), str(REPO / "bench" / "evidently_side.py"), f"{tmp}/w.npz",
                               f"{tmp}/out.json"], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return None
        return json.loads(Path(f"{tmp}/out.json").read_text())


def throughput(rounds: int, use_evidently: bool) -> dict:
    rng = np.random.default_rng(1)
    reference = rows(rng, REF_ROWS)
    profile = build_profile(reference, FEATURES, proba_of(reference), [0, 1], "bench")
    windows = [rows(rng, WINDOW_ROWS, 0.3) for _ in range(10)]
    score_window(profile, FEATURES, windows[0])  # warm caches
    ours, plain = [], []
    for _ in range(rounds):  # alternated: the machine is noisy
        start = time.perf_counter()
        flagged_ours = [score_window(profile, FEATURES, w).drifted_features for w in windows]
        ours.append((time.perf_counter() - start) / len(windows))
        start = time.perf_counter()
        flagged_scipy = [scipy_loop(reference, w) for w in windows]
        plain.append((time.perf_counter() - start) / len(windows))
    out = {"handoff_s": statistics.median(ours), "scipy_s": statistics.median(plain),
           "handoff_flagged": flagged_ours[0], "scipy_flagged": flagged_scipy[0],
           "handoff_same_flags_in_all": all(f == [FEATURES[j] for j in SHIFTED] for f in flagged_ours)}
    if use_evidently:
        ev = evidently(reference, windows[:3])
        if ev is not None:
            out.update(evidently_s=statistics.median(ev["seconds"]), evidently_flagged=ev["flagged"][0],
                       evidently_agrees=all(f == g for f, g in zip(ev["flagged"], flagged_ours)))
    return out


def detection_delay(persistence: int, seeds: int = 5) -> dict:
    """Per shift size: windows from the onset (the first shifted window is 1) to the declaration."""
    out = {}
    for shift in (0.1, 0.2, 0.3, 0.5, 1.0):
        delays = []
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            profile = build_profile(rows(rng, REF_ROWS), FEATURES, proba_of(rows(rng, REF_ROWS)), [0, 1], "bench")
            state, found = DriftState(), None
            for index in range(3 + 20):
                onset = index >= 3
                scores = score_window(profile, FEATURES, rows(rng, WINDOW_ROWS, shift if onset else 0.0))
                state, event = decide(state, scores, index, "bench", 1, persistence)
                if event is not None:
                    found = index - 3 + 1 if onset else -1  # -1: declared before the shift (a false alarm)
                    break
            delays.append(found)
        out[f"{shift}σ"] = delays
    return out


def false_alarms(windows: int, persistence: int) -> dict:
    rng = np.random.default_rng(7)
    profile = build_profile(rows(rng, REF_ROWS), FEATURES, proba_of(rows(rng, REF_ROWS)), [0, 1], "bench")
    state, declared, drifted, raw_flags, raw_windows = DriftState(), 0, 0, 0, 0
    for index in range(windows):
        scores = score_window(profile, FEATURES, rows(rng, WINDOW_ROWS))
        state, event = decide(state, scores, index, "bench", 1, persistence)
        declared += event is not None
        drifted += scores.drifted
        raw = sum(s.p_value < 0.05 for s in scores.features)
        raw_flags += raw
        raw_windows += raw > 0
    return {"windows": windows, "declared": declared, "drifted_windows_after_correction": drifted,
            "uncorrected_ks_flags_per_window": raw_flags / windows, "uncorrected_windows_with_a_flag": raw_windows}


MIXED_NUMERIC = [f"n{i}" for i in range(5)]
MIXED_CATEGORICAL = {"plan": ["basic", "plus", "pro", "team"], "region": [f"r{i}" for i in range(12)],
                     "paperless": [True, False]}


def mixed_rows(rng, n: int, shift: float = 0.0) -> dict:
    """Rows of a mixed-type model as clients send them: 5 numbers (one with 5% gaps), 3 categories;
    `shift` moves the numbers and brings a value training never held into `plan`."""
    x = rng.normal(size=(n, len(MIXED_NUMERIC))) + shift
    out = {f: x[:, j].tolist() for j, f in enumerate(MIXED_NUMERIC)}
    out["n0"] = [None if g else v for v, g in zip(out["n0"], rng.random(n) < 0.05)]
    for name, values in MIXED_CATEGORICAL.items():
        out[name] = [values[k] for k in rng.integers(0, len(values), n)]
    if shift:
        out["plan"] = ["enterprise" if u < shift else v for v, u in zip(out["plan"], rng.random(n))]
    return out


def mixed_profile(rng):
    ref = mixed_rows(rng, REF_ROWS)
    x = np.array([[np.nan if v is None else v for v in ref[f]] for f in MIXED_NUMERIC]).T
    return build_profile(x, MIXED_NUMERIC, proba_of(np.nan_to_num(x)), [0, 1], "bench",
                         categories={c: ref[c] for c in MIXED_CATEGORICAL})


def end_to_end(files: int, rows_per_file: int, rows_per_request: int, mixed: bool = False) -> dict:
    """The monitor core over live-log files the gateway's writer made, pinned to one core; `mixed`:
    a mixed-type model's files (5 numeric columns, one with gaps, 3 dictionary-encoded categorical)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from monitoring.compaction import CompactionSpec
    from monitoring.core import LabelJoin, MonitorCore
    from monitoring.labels import Feedback, WindowRows
    from monitoring.live_reader import NEEDED
    from monitoring.state_store import StateStore
    from monitoring.windows import WindowSpec
    from serving.live_log import LiveLog

    rng = np.random.default_rng(3)
    columns = [*MIXED_NUMERIC, *MIXED_CATEGORICAL] if mixed else FEATURES
    if mixed:
        profile = mixed_profile(rng)
    else:
        reference = rows(rng, REF_ROWS)
        profile = build_profile(reference, FEATURES, proba_of(reference), [0, 1], "bench")
    value_types = (None,) * len(MIXED_NUMERIC) + ("string", "string", "bool") if mixed else None
    with tempfile.TemporaryDirectory() as tmp:
        log = LiveLog(f"{tmp}/live", flush_seconds=3600, max_rows=10**9, max_requests=10**9)
        requests = rows_per_file // rows_per_request
        for i in range(files):
            shift = 0.3 if i >= files // 2 else 0.0
            if mixed:
                x = mixed_rows(rng, rows_per_file, shift)
                proba = proba_of(np.array([[0.0 if v is None else v for v in x[f]] for f in MIXED_NUMERIC]).T)
            else:
                x = rows(rng, rows_per_file, shift).astype(np.float32)
                proba = proba_of(x)
            prediction = proba.argmax(axis=1)
            for r in range(requests):
                part = slice(r * rows_per_request, (r + 1) * rows_per_request)
                rows_part = {c: v[part] for c, v in x.items()} if mixed else x[part]
                log.append("bench", tuple(columns), f"r{i}-{r}", 1, None, rows_part, prediction[part], 1.0,
                           proba=proba[part], value_types=value_types)
            log.flush()
        log.close()
        total = files * rows_per_file
        paths = sorted(Path(f"{tmp}/live").rglob("*.parquet"))
        os.sched_setaffinity(0, {0})  # one core
        pa.set_cpu_count(1)
        pa.set_io_thread_count(1)
        start = time.perf_counter()
        read = sum(pq.read_table(p, columns=[*NEEDED, *columns, "probabilities"], use_threads=False).num_rows
                   for p in paths)
        pyarrow_s = time.perf_counter() - start
        core = MonitorCore("bench", f"{tmp}/live", StateStore(f"{tmp}/state", "bench"), lambda v: profile,
                           WindowSpec(rows=WINDOW_ROWS, seconds=300, min_rows=200), clock=lambda: time.time() + 60,
                           labels=LabelJoin(Feedback(f"{tmp}/live", "bench"), WindowRows(f"{tmp}/state", "bench")),
                           compaction=CompactionSpec())
        start = time.perf_counter()
        events = core.step()
        monitor_s = time.perf_counter() - start
        scored = core.state["rows_scored"].get("1", 0) + sum(b.rows for b in core.windower.buffers.values())
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        return {"mixed": mixed, "files": files, "rows": total, "rows_per_file": rows_per_file,
                "rows_per_request": rows_per_request,
                "pyarrow_read_rows_per_s": read / pyarrow_s, "monitor_rows_per_s": total / monitor_s,
                "monitor_s": monitor_s, "every_row_once": scored == total,
                "windows": core.state["windows"].get("1", 0),
                "declared": sum(e["kind"] == "drift_declared" for e in events),
                "compacted_files": sum(e["files"] for e in events if e["kind"] == "files_compacted")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternated timing rounds of 10 windows each")
    parser.add_argument("--alarm-windows", type=int, default=1_000, help="windows without drift")
    parser.add_argument("--persistence", type=int, default=3, help="drifted windows in a row that declare drift")
    parser.add_argument("--files", type=int, default=40, help="live-log files for the end-to-end run")
    parser.add_argument("--rows-per-file", type=int, default=50_000)
    parser.add_argument("--small-files", type=int, default=100, help="files of 5,000 one-row requests (a "
                        "gateway's flush at ~2,800 requests/s) for a second end-to-end run; 0 skips it")
    parser.add_argument("--no-evidently", action="store_true", help="leave Evidently's column out")
    parser.add_argument("--mixed-files", type=int, default=20, help="files of a mixed-type model (5 numeric "
                        "columns, one with gaps, 3 categorical) for a third end-to-end run; 0 skips it")
    parser.add_argument("--only-end-to-end", action="store_true", help="skip the per-window, delay and alarm runs")
    args = parser.parse_args()

    results = {}
    if not args.only_end_to_end:
        windows(args, results)
    end_to_end_runs(args, results)
    out = REPO / "bench" / "results" / "drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"written {out}")


def windows(args, results: dict) -> None:
    results["throughput"] = t = throughput(args.rounds, not args.no_evidently)
    print(f"per window of {WINDOW_ROWS} rows x {len(FEATURES)} features (median of {args.rounds} rounds):")
    print(f"  handoff scorer   {t['handoff_s'] * 1e3:8.2f} ms  {WINDOW_ROWS / t['handoff_s']:>12,.0f} rows/s  "
          f"flags {t['handoff_flagged']}")
    print(f"  scipy ks loop    {t['scipy_s'] * 1e3:8.2f} ms  {WINDOW_ROWS / t['scipy_s']:>12,.0f} rows/s  "
          f"flags {t['scipy_flagged']} (uncorrected)   handoff is {t['scipy_s'] / t['handoff_s']:.1f}x")
    if "evidently_s" in t:
        print(f"  evidently preset {t['evidently_s'] * 1e3:8.0f} ms  {WINDOW_ROWS / t['evidently_s']:>12,.0f} rows/s  "
              f"flags {t['evidently_flagged']}   handoff is {t['evidently_s'] / t['handoff_s']:.0f}x, "
              f"same features flagged: {t['evidently_agrees']}")
    results["delay"] = detection_delay(args.persistence)
    print(f"windows from onset to declaration (persistence {args.persistence}, 5 seeds): {results['delay']}")
    results["false_alarms"] = fa = false_alarms(args.alarm_windows, args.persistence)
    print(f"no drift, {fa['windows']} windows: {fa['declared']} declared, {fa['drifted_windows_after_correction']} "
          f"window(s) drifted after correction; uncorrected KS: {fa['uncorrected_ks_flags_per_window']:.2f} "
          f"flags a window, {fa['uncorrected_windows_with_a_flag']} windows with one")


def end_to_end_runs(args, results: dict) -> None:
    runs = [(args.files, args.rows_per_file, 10, False)] + (
        [(args.small_files, 5_000, 1, False)] if args.small_files else []) + (
        [(args.mixed_files, args.rows_per_file, 10, True)] if args.mixed_files else [])
    results["end_to_end"] = []
    for files, per_file, per_request, mixed in runs:
        e = end_to_end(files, per_file, per_request, mixed)
        results["end_to_end"].append(e)
        print(f"end to end, one core, {e['files']} {'mixed-type ' if mixed else ''}files x {e['rows_per_file']} rows "
              f"({per_request}-row requests): "
              f"monitor {e['monitor_rows_per_s']:,.0f} rows/s ({e['windows']} windows, every row once: "
              f"{e['every_row_once']}, {e['compacted_files']} files compacted); pyarrow reading alone "
              f"{e['pyarrow_read_rows_per_s']:,.0f} rows/s")


if __name__ == "__main__":
    main()
