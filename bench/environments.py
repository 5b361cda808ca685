"""What a version's own packages cost when it is served: first on a node, and cached. Not a test.

A local Ray (this machine's 2 CPUs), Serve with its proxy off, a scratch MLflow store. One small
Shuttle model is tuned once and registered under several names (the same run), each version given
its own `handoff.requirements` tag, as `model.requirements` records it: none, or a small wheel built
here (tests/integration/probe_package.py: a package in no environment of this project). The model
is the same in every case: what differs is the environment its replicas get, which is what is
timed. Each name is served in turn through the control plane
(`ServingControl.traffic`: the environment check, the deploy, the gateway's switch: what
`handoff serve` waits for), answered once over HTTP, and unserved. Cases, in order, each round:

- `plain`: nothing extra (no runtime environment: as before model.requirements existed);
- `extra, first`: a requirement list this node has not seen (a wheel of a new version each round):
  Ray makes its pip environment (from a venv: a copy of the venv, then pip into it);
- `extra, cached`: the same list again (another model): Ray's environment is reused.

    .venv/bin/python bench/environments.py [--rounds 2]
Writes bench/results/environments.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def serve_once(control, name: str, requirements: list[str], port: int) -> dict:
    """Serve `name` v1 with `requirements` recorded, answer once, unserve; the seconds each took."""
    from training import REQUIREMENTS_TAG

    control.registry.set_version_tags(name, 1, {REQUIREMENTS_TAG: json.dumps(requirements)})
    started = time.perf_counter()
    control.traffic(name, {1: 100.0})
    served = time.perf_counter() - started
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32",
                                   "data": [50.0, 0.0, 80.0, 0.0, 40.0, 10.0, 30.0, 40.0, 10.0]}]}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{name}/infer", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
    started = time.perf_counter()
    control.unserve(name)
    return {"serve_s": round(served, 2), "unserve_s": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three cases")
    args = parser.parse_args()
    import ray

    from bench.monitors_per_node import register_models
    from cluster.head_services import free_port
    from serving import ServingControl, load_serving_config
    from tests.integration.probe_package import probe_package
    from training import Registry

    results = []
    with tempfile.TemporaryDirectory(prefix="handoff-bench-env-") as tmp:
        tmp = Path(tmp)
        probes = [probe_package(tmp, f"0.1.{r}") for r in range(args.rounds)]
        tracking_uri, port = f"sqlite:///{tmp}/mlflow.db", free_port()
        names = [f"env-{case}-{r}" for r in range(args.rounds) for case in ("plain", "first", "cached")]
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        try:
            register_models(tmp / "home", tracking_uri, names)
            cfg = load_serving_config(None, [f"gateway.port={port}", "gateway.cpus=0.2", "version_defaults.cpus=0.2",
                                             "live_log.enabled=false"])
            control = ServingControl(Registry(tracking_uri), cfg, say=lambda line: print("  ", line, flush=True))
            for r in range(args.rounds):
                for case, requirements in (("plain", []), ("first", [probes[r].requirement]),
                                           ("cached", [probes[r].requirement])):
                    figures = {"round": r + 1, "case": case, **serve_once(control, f"env-{case}-{r}", requirements, port)}
                    print(figures, flush=True)
                    results.append(figures)
        finally:
            ray.shutdown()
    print(f"\n{'round':>5} {'case':>8} {'serve s':>8}")
    for f in results:
        print(f"{f['round']:>5} {f['case']:>8} {f['serve_s']:>8.1f}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "environments.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
