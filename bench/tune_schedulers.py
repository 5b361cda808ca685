"""ASHA against FIFO on the example dataset: same space, samples and seed, side by side in one run.

Not a test: it prints a table (and writes bench/results/tune_schedulers.json). Each search is the
production code path (`training.search.run_search`: Tune trials, per-epoch checkpoints, MLflow
logging of every trial into a scratch store). Tune's overhead is the search's wall time against
the ideal packing of the trials' own training time (LPT schedule over the trial slots);
`in_trial_s_total` is Tune's clock on the trial actors (training plus per-epoch report and
checkpoint), so the gap between it and `train_s_total` is the reporting cost, and the rest of the
overhead is actor start-up and scheduling.

    .venv/bin/python bench/tune_schedulers.py [--samples 16] [--epochs 12] [--cpus 2]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def lpt_makespan(durations: list[float], slots: int) -> float:
    """Longest-processing-time-first schedule length: the ideal packing of trials on `slots`."""
    loads = [0.0] * max(slots, 1)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


def run_one(scheduler: str, args, data, settings, tracking_uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    from training.config_loader import load_config
    from training.search import run_search
    from training.tracking import ensure_experiment

    cfg = load_config(REPO / "configs" / "shuttle.yaml", [
        f"search.scheduler.type={scheduler}", f"search.num_samples={args.samples}",
        f"search.epochs={args.epochs}", f"seed={args.seed}", f"name=bench-{scheduler}",
    ], environ={})
    client = MlflowClient(tracking_uri)
    exp = ensure_experiment(client, cfg.experiment_name, settings.artifacts_dir.as_uri())
    parent = client.create_run(exp, run_name=f"bench-{scheduler}").info.run_id
    outcome = run_search(cfg, data, storage_path=str(settings.tune_dir), run_name=f"bench-{scheduler}",
                         tracking_uri=tracking_uri, parent_run_id=parent)
    results = [r for r in outcome.results if r.error is None]
    train_seconds = [float(r.metrics["train_seconds"]) for r in results]
    # Tune's own clock on the trial actor: training plus reporting and checkpointing each epoch.
    trial_seconds = [float(r.metrics["time_total_s"]) for r in results]
    epochs = sum(int(r.metrics["epoch"]) for r in results)
    best = outcome.results.get_best_result(metric="val_loss", mode="min", scope="all")
    best_row = best.metrics_dataframe.sort_values("val_loss").iloc[0]
    slots = int(args.cpus // cfg.resources.cpu)
    ideal = lpt_makespan(train_seconds, slots)
    return {
        "scheduler": scheduler, "wall_s": outcome.wall_seconds, "trials": len(outcome.results),
        "errors": len(outcome.results) - len(results), "epochs_trained": epochs,
        "train_s_total": sum(train_seconds), "in_trial_s_total": sum(trial_seconds), "ideal_packing_s": ideal,
        "overhead_pct": 100 * (outcome.wall_seconds / ideal - 1),
        "best_val_loss": float(best_row["val_loss"]), "best_val_accuracy": float(best_row["val_accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--order", default="fifo,asha", help="which schedulers, in run order")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    from cluster.settings import Settings
    from training.config_loader import load_config
    from training.pipeline import load_data

    with tempfile.TemporaryDirectory(prefix="handoff-bench-") as home:
        settings = Settings.resolve(environ={}, home=Path(home))
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        data = load_data(load_config(REPO / "configs" / "shuttle.yaml", [f"seed={args.seed}"], environ={}),
                         settings)
        rows = [run_one(s, args, data, settings, settings.embedded_tracking_uri) for s in args.order.split(",")]
        ray.shutdown()

    by = {r["scheduler"]: r for r in rows}
    print(f"\nShuttle ({data.sizes}), {args.samples} samples, up to {args.epochs} epochs, seed {args.seed}, "
          f"{args.cpus} CPUs, 1 CPU per trial")
    cols = ["scheduler", "wall_s", "epochs_trained", "train_s_total", "in_trial_s_total", "ideal_packing_s", "overhead_pct",
            "best_val_loss", "best_val_accuracy", "errors"]
    print(" | ".join(f"{c:>17}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>17.4f}" if isinstance(r[c], float) else f"{r[c]:>17}" for c in cols))
    if {"asha", "fifo"} <= set(by):
        a, f = by["asha"], by["fifo"]
        summary = {
            "asha_loss_vs_fifo_pct": 100 * (a["best_val_loss"] / f["best_val_loss"] - 1),
            "asha_wall_vs_fifo_pct": 100 * a["wall_s"] / f["wall_s"],
        }
        print(f"\nASHA best val loss {summary['asha_loss_vs_fifo_pct']:+.1f}% vs FIFO (target within 10%); "
              f"ASHA wall time {summary['asha_wall_vs_fifo_pct']:.0f}% of FIFO's (target at most 40%); "
              f"overhead FIFO {f['overhead_pct']:.1f}%, ASHA {a['overhead_pct']:.1f}% (target at most 15%)")
        rows.append(summary)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "tune_schedulers.json").write_text(json.dumps({"args": vars(args), "rows": rows,
                                                          "when": time.strftime("%Y-%m-%d %H:%M")}, indent=2))


if __name__ == "__main__":
    main()
