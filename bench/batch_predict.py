"""Batch inference throughput: `handoff predict` (serving.predict_table on Ray Data) against the
in-process forward pass and a hand-written pandas + pyfunc loop, side by side in one run. Not a test.

Trains the example Shuttle model (a short search, in-process Ray, a scratch store), writes a table
of `--rows` rows (Shuttle's features resampled, a `row` id) in `--files` Parquet files, then times:

  limit        the version's forward pass in this process at batch size 1,024 on every core (the
               rows already in memory as one float32 matrix): what no pipeline can beat
  in-process   read each file, score it 1,024 rows per model call, write its output, one process,
               no Ray: the same work as `handoff predict`'s actors without distribution (where the
               I/O bounds it)
  pandas loop  what a user writes by hand: `mlflow.pyfunc.load_model`, then per file
               `pd.read_parquet` → `model.predict(frame)` → `to_parquet` (and per 1,024-row chunk)
  handoff      `predict_table` on the local Ray (started before timing, as `handoff up` leaves it),
               end to end: load and check the version, fingerprint the input, the actor pool's start,
               the scoring, the write and the move into place; and its fixed cost (the same call on
               1,024 rows) and marginal rate ((rows - 1,024) / (time - fixed))

    .venv/bin/python bench/batch_predict.py [--rows 1000000] [--files 8]
Writes bench/results/batch_predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BATCH = 1024


def make_table(features: list[str], source, rows: int, files: int, where: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    pick = rng.integers(0, len(source), rows)
    table = {"row": np.arange(rows, dtype=np.int64)}
    table.update({f: source[f].to_numpy()[pick] for f in features})
    full = pa.table(table)
    where.mkdir(parents=True)
    for k, part in enumerate(np.array_split(np.arange(rows), files)):
        pq.write_table(full.slice(int(part[0]), len(part)), where / f"part-{k:03d}.parquet")
    return where


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def forward_limit(model, x: np.ndarray) -> float:
    """Rows/s of the forward pass alone, batch 1,024, every core (best of three passes)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    best = float("inf")
    for _ in range(3):
        seconds, _ = timed(lambda: [model.outputs(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
        best = min(best, seconds)
    return len(x) / best


def in_process(model, source: Path, out: Path) -> float:
    """Read, score per batch, write: one process, no Ray (the work without distribution)."""
    import pyarrow.parquet as pq

    from serving.batch.predictor import predict_in_batches
    from serving.batch.schema import feature_matrix, output_table

    def run():  # what each actor does with a block, here with each whole file
        out.mkdir()
        for k, path in enumerate(sorted(source.glob("*.parquet"))):
            table = pq.read_table(path)
            proba = predict_in_batches(model.outputs, feature_matrix(table, model.features), BATCH,
                                       model.num_classes)
            pq.write_table(output_table(table.select(["row"]), proba, model.classes, model.version, {}),
                           out / f"part-{k:03d}.parquet")
    seconds, _ = timed(run)
    return seconds


def pandas_loop(model_uri: str, features: list[str], source: Path, out: Path, chunk: int | None) -> float:
    """What a user writes by hand with MLflow: load the pyfunc, then per file (or per chunk) predict."""
    import mlflow.pyfunc
    import pandas as pd

    def run():
        model = mlflow.pyfunc.load_model(model_uri)
        out.mkdir()
        for k, path in enumerate(sorted(source.glob("*.parquet"))):
            frame = pd.read_parquet(path)
            x = frame[features]  # the signature holds the columns' real types (Shuttle: integers)
            if chunk is None:
                scored = model.predict(x)
            else:
                scored = pd.concat([model.predict(x.iloc[i:i + chunk]) for i in range(0, len(x), chunk)],
                                   ignore_index=True)
            scored.insert(0, "row", frame["row"].to_numpy())
            scored.to_parquet(out / f"part-{k:03d}.parquet", index=False)
    seconds, _ = timed(run)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()

    import pandas as pd
    import ray

    from cluster.settings import Settings
    from serving import BatchConfig, predict_table
    from training import Registry, load_version
    from training.config_loader import load_config
    from training.datasets import BUILTIN_DATASETS
    from training.pipeline import tune_and_register

    scratch = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        settings = Settings.resolve(environ={}, home=scratch / "home")
        uri = settings.embedded_tracking_uri
        cfg = load_config(REPO / "configs" / "shuttle.yaml", ["search.num_samples=1", "search.epochs=2",
                                                               "name=batch-bench"], environ={})
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        registered = tune_and_register(cfg, settings, uri)
        model = load_version(cfg.name, registered.version, uri)
        features = list(model.features)
        source = BUILTIN_DATASETS["shuttle"][0]().to_pandas()
        table = make_table(features, source, args.rows, args.files, scratch / "tonight")
        small = make_table(features, source, BATCH, 1, scratch / "small")
        x = np.ascontiguousarray(source[features].to_numpy(np.float32)[
            np.random.default_rng(5).integers(0, len(source), args.rows)])

        limit = forward_limit(model, x)
        own = in_process(model, table, scratch / "out-inprocess")
        per_file = pandas_loop(f"models:/{cfg.name}/{registered.version}", features, table, scratch / "out-pandas",
                               None)
        per_chunk = pandas_loop(f"models:/{cfg.name}/{registered.version}", features, table,
                                scratch / "out-pandas-chunks", BATCH)
        registry = Registry(uri)
        config = BatchConfig(batch_size=BATCH)
        fixed, _ = timed(lambda: predict_table(registry, cfg.name, str(small), str(scratch / "out-small"),
                                               config=config, progress=False))
        total, result = timed(lambda: predict_table(registry, cfg.name, str(table), str(scratch / "out-handoff"),
                                                    config=config, progress=False))
        assert result.rows_out == args.rows
        ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    marginal = (args.rows - BATCH) / max(total - fixed, 1e-9)
    figures = {
        "rows": args.rows, "files": args.files, "cores": os.cpu_count(), "batch_size": BATCH,
        "forward_limit_rows_per_s": limit,
        "in_process_rows_per_s": args.rows / own,
        "pandas_pyfunc_per_file_rows_per_s": args.rows / per_file,
        "pandas_pyfunc_per_chunk_rows_per_s": args.rows / per_chunk,
        "handoff_rows_per_s": args.rows / total, "handoff_seconds": total,
        "handoff_fixed_seconds": fixed, "handoff_marginal_rows_per_s": marginal,
        "handoff_output_files": result.files,
    }
    figures["handoff_share_of_limit"] = figures["handoff_rows_per_s"] / limit
    figures["handoff_vs_pandas_per_file"] = figures["handoff_rows_per_s"] / figures["pandas_pyfunc_per_file_rows_per_s"]
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_predict.json").write_text(json.dumps(figures, indent=2))
    print(f"{args.rows:,} rows in {args.files} files, {os.cpu_count()} cores, batch {BATCH}")
    for name, key in (("forward pass, in process (the limit)", "forward_limit_rows_per_s"),
                      ("read + score + write, one process, no Ray", "in_process_rows_per_s"),
                      ("pandas + pyfunc predict, per file", "pandas_pyfunc_per_file_rows_per_s"),
                      ("pandas + pyfunc predict, per 1,024-row chunk", "pandas_pyfunc_per_chunk_rows_per_s"),
                      ("handoff predict (predict_table), end to end", "handoff_rows_per_s"),
                      ("handoff predict, marginal (beyond its fixed cost)", "handoff_marginal_rows_per_s")):
        print(f"  {name:52} {figures[key]:>14,.0f} rows/s")
    print(f"  handoff predict fixed cost (1,024 rows): {fixed:.2f} s; {args.rows:,} rows: {total:.2f} s; "
          f"{figures['handoff_share_of_limit']:.1%} of the limit; "
          f"{figures['handoff_vs_pandas_per_file']:.2f}× the per-file pandas loop")


if __name__ == "__main__":
    main()
