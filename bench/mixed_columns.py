"""A mixed-type model against an all-numeric one of the same width, side by side in one run.

Not a test. Generates two tables of 20,000 rows (seeded): "mixed" has 5 numeric columns (one with 5%
gaps) and 3 categorical ones (text with 4 and 12 values, a boolean); "numeric" has 8 complete numeric
columns. Registers one version of each with the same search (one trial, the same network and
epochs; the real pipeline), then serves both on one gateway and drives each with `wrk` (bounded,
127.0.0.1 only), alternating rounds: a 1-row OIP v2 request, per-column tensors with a gap (null)
for the mixed model, the single FP32 `features` tensor for the numeric one.

    .venv/bin/python bench/mixed_columns.py [--seconds 10] [--rounds 3]

Prints both models' requests/s, their ratio, and the training epoch time of each (a trial's
training seconds over its epochs); writes bench/results/mixed_columns.json.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _serving_bench():
    """bench/serving.py's wrk helpers (its name is the serving package's: loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

ROWS = 20_000
NUMERIC = [f"n{i}" for i in range(5)]
CATEGORIES = {"plan": ["basic", "plus", "pro", "team"], "region": [f"r{i:02d}" for i in range(12)]}
SEARCH = ["search.num_samples=1", "search.epochs=6", "search.scheduler.type=fifo",
          "search.space.hidden_layers={type: choice, values: [2]}", "search.space.width={type: choice, values: [64]}",
          "search.space.batch_size={type: choice, values: [256]}", "search.space.lr={type: choice, values: [0.003]}"]


def tables(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 8))
    mixed = pd.DataFrame(x[:, :5], columns=NUMERIC)
    mixed.loc[rng.random(ROWS) < 0.05, "n0"] = np.nan
    plan = rng.integers(0, 4, ROWS)
    region = rng.integers(0, 12, ROWS)
    mixed["plan"] = np.asarray(CATEGORIES["plan"], dtype=object)[plan]
    mixed["region"] = np.asarray(CATEGORIES["region"], dtype=object)[region]
    mixed["paperless"] = rng.random(ROWS) < 0.4
    logit = x[:, 1] - 0.5 * x[:, 2] + 0.6 * (plan - 1.5) + 0.8 * (region % 3 == 0) + 0.5 * mixed["paperless"]
    mixed["churn"] = rng.random(ROWS) < 1 / (1 + np.exp(-logit))
    numeric = pd.DataFrame(x, columns=[f"x{i}" for i in range(8)])
    numeric["churn"] = rng.random(ROWS) < 1 / (1 + np.exp(-(x[:, 1] - 0.5 * x[:, 2] + 0.6 * x[:, 5])))
    return mixed, numeric


def register(settings, uri: str, name: str, data: Path, features: list[str]):
    from training.config_loader import load_config
    from training.pipeline import tune_and_register

    cfg = load_config(REPO / "configs" / "loans.yaml",
                      [f"name={name}", f"dataset.uri={data}", "dataset.label=churn",
                       f"dataset.features={json.dumps(features)}", *SEARCH], environ={})
    result = tune_and_register(cfg, settings, uri)
    trial = result.trials[0]
    return result.version, trial["train_seconds"] / max(trial["epochs"], 1)


def bodies() -> dict[str, bytes]:
    mixed = {"inputs": [{"name": "n0", "shape": [1], "datatype": "FP64", "data": [None]},  # a gap
                        *[{"name": f"n{i}", "shape": [1], "datatype": "FP64", "data": [0.1 * i]} for i in range(1, 5)],
                        {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["pro"]},
                        {"name": "region", "shape": [1], "datatype": "BYTES", "data": ["r03"]},
                        {"name": "paperless", "shape": [1], "datatype": "BOOL", "data": [True]}]}
    numeric = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": [0.1 * i for i in range(8)]}]}
    return {"mixed": json.dumps(mixed).encode(), "numeric": json.dumps(numeric).encode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternated wrk rounds per model")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    import urllib.request

    helpers = _serving_bench()
    wait_http, wrk, wrk_script = helpers.wait_http, helpers.wrk, helpers.wrk_script
    import ray
    from ray import serve

    from cluster.settings import Settings
    from serving.config import load_serving_config
    from serving.control import ServingControl
    from training import Registry

    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="handoff-bench-mixed-") as home:
        settings = Settings.resolve(environ={}, home=Path(home))
        uri = settings.embedded_tracking_uri
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        mixed, numeric = tables()
        paths = {}
        for name, frame in (("mixed", mixed), ("numeric", numeric)):
            paths[name] = Path(home) / f"{name}.parquet"
            frame.to_parquet(paths[name], index=False)
        print("registering both models (one trial each, the same network)...", flush=True)
        epoch = {}
        for name, frame in (("mixed", mixed), ("numeric", numeric)):
            _, epoch[name] = register(settings, uri, name, paths[name], [c for c in frame.columns if c != "churn"])
        cfg = load_serving_config(None, ["version_defaults.batching.max_batch_size=1"], environ={})
        control = ServingControl(Registry(uri), cfg, str(Path(home) / "live"), say=print)
        for name in ("mixed", "numeric"):
            control.traffic(name, {1: 100})
        wait_http("http://127.0.0.1:8000/v2/health/ready")
        scripts, runs = {}, {"mixed": [], "numeric": []}
        for name, body in bodies().items():
            url = f"http://127.0.0.1:8000/v2/models/{name}/infer"
            req = urllib.request.Request(url, body, {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:  # answers before it is timed
                assert r.status == 200, r.status
            scripts[name] = (url, wrk_script(Path(home), name, body, {"content-type": "application/json"}))
        for _ in range(args.rounds):
            for name in ("numeric", "mixed"):
                url, script = scripts[name]
                runs[name].append(wrk(url, args.connections, args.seconds, script))
                print(f"  {name:<8} {runs[name][-1]['rps']:8.1f} req/s  p50 {runs[name][-1]['p50_ms']:.2f} ms  "
                      f"non-2xx {runs[name][-1]['non_2xx']}", flush=True)
        control.unserve("mixed")
        control.unserve("numeric")
        serve.shutdown()
        ray.shutdown()
    rps = {n: statistics.median(r["rps"] for r in runs[n]) for n in runs}
    results.update({"runs": runs, "median_rps": rps, "rps_ratio": rps["mixed"] / rps["numeric"],
                    "epoch_seconds": epoch, "epoch_ratio": epoch["numeric"] / epoch["mixed"]})
    print(f"\n1-row requests, c{args.connections}, median of {args.rounds} alternated {args.seconds}s runs:")
    print(f"  numeric (8 columns, one FP32 tensor)              {rps['numeric']:8.1f} req/s")
    print(f"  mixed (5 numeric with a gap, 3 categorical)       {rps['mixed']:8.1f} req/s   "
          f"{results['rps_ratio']:.2f}x the numeric model's")
    print(f"training epoch: numeric {epoch['numeric']:.3f} s, mixed {epoch['mixed']:.3f} s "
          f"(the mixed model's speed {results['epoch_ratio']:.2f}x the numeric model's)")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "mixed_columns.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    main()
