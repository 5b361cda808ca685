"""Serving throughput and latency, side by side in one run on the same model and load generator.

Not a test. Registers two versions of a 9→64→64→2 MLP (the real pipeline, a short search on the
Shuttle data) in a scratch store, then drives each shape with `wrk` (bounded: fixed duration,
127.0.0.1 only) at concurrency 16 and 64:

  (a) the model's forward pass in-process (no HTTP; one row per call)
  (b) the same HTTP app (FastAPI + uvicorn) in one process with the model in-process
  (c) plain Ray Serve with defaults: one deployment behind Serve's proxy
  (d) Handoff: gateway + version deployments, 90/10 split, live logging on
  (e) (d) with the gateway's request coalescing (batching)
  (dh) (d) with transport=handle: one Serve handle call per request instead of the direct path
  (f) (d) with the OIP v2 binary tensor extension (binary in and out, as tritonclient sends) against
      the JSON body, 1-row and 256-row requests, at concurrency 16
  (g) (d) over gRPC (OIP v2 ModelInfer, raw FP32 bytes in and out): a Python grpc.aio load generator
      (wrk speaks no HTTP/2), so its own cost bounds what it can show

With two or more cores the load generator runs on the first core and everything serving on the
others (`--pin`); the serving process's CPU per request is read from /proc.

    .venv/bin/python bench/serving.py [--seconds 10] [--only a,b,c,d,e]
Writes bench/results/serving.json and prints a table.
"""

# No `from __future__ import annotations` here: (c)'s endpoint is pickled into a Serve replica, and
# a string annotation `request: "Request"` cannot be resolved there, so FastAPI took `request` for a
# required query parameter and answered every request with 422 (earlier runs of this benchmark).

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ROW = [50.0, 0.0, 80.0, 0.0, 20.0, 0.0, 30.0, 60.0, 30.0]
BODY = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": ROW}]})
SERVE_PORT, LOCAL_PORT = 8011, 8002  # not 8001: the gateway's gRPC port


#: the load generator's core and the server's cores (`--pin`): set by main()
LOAD_CORES: set[int] = set()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, connections: int, seconds: int, script: Path, server_pid: int | None = None) -> dict:
    """One bounded wrk run → requests/s, p50/p99 latency (ms), non-2xx count and, given the serving
    process (the gateway replica, or (b)'s one process), its CPU microseconds per request."""
    pin = ["taskset", "-c", ",".join(map(str, sorted(LOAD_CORES)))] if LOAD_CORES else []
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run([*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
                          "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60).stdout
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else None

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*timeout (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    result = {"rps": float(rps.group(1)) if rps else 0.0, "p50_ms": ms("50%"), "p99_ms": ms("99%"),
              "non_2xx": int(bad.group(1)) if bad else 0, "timeouts": int(errors.group(1)) if errors else 0}
    if cpu is not None and done and int(done.group(1)):
        result["server_cpu_us_per_req"] = round(cpu / int(done.group(1)) * 1e6, 1)
        result["server_cpu_share"] = round(cpu / seconds, 2)
    return result


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def first_answer(url: str) -> None:
    """One request before measuring: a shape that does not answer 200 is reported, not timed blind."""
    req = urllib.request.Request(url, BODY.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            print(f"  {url}: {r.status} {r.read(200)!r}", flush=True)
    except urllib.error.HTTPError as exc:
        print(f"  {url}: {exc.code} {exc.read(500)!r}  <- this shape fails", flush=True)


def oip_body(rows: int, binary: bool) -> tuple[bytes, dict[str, str]]:
    """An OIP v2 request of `rows` copies of ROW: JSON, or binary in and out (tritonclient's default)."""
    import numpy as np

    x = np.tile(np.asarray(ROW, dtype=np.float32), (rows, 1))
    if not binary:
        return json.dumps({"inputs": [{"name": "features", "shape": [rows, 9], "datatype": "FP32",
                                       "data": x.reshape(-1).tolist()}]}).encode(), {"Content-Type": "application/json"}
    head = json.dumps({"inputs": [{"name": "features", "shape": [rows, 9], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + x.tobytes(), {"Content-Type": "application/octet-stream",
                                "Inference-Header-Content-Length": str(len(head))}


def wrk_script(directory: Path, name: str, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script that POSTs `body` (read from a file, so binary bodies pass unchanged)."""
    (directory / f"{name}.body").write_bytes(body)
    lines = [f"local f = io.open('{directory / (name + '.body')}', 'rb')", "wrk.body = f:read('*all')", "f:close()",
             "wrk.method = 'POST'"] + [f"wrk.headers['{k}'] = '{v}'" for k, v in headers.items()]
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def bench_binary(url: str, directory: Path, seconds: int, server_pid: int | None = None) -> dict:
    """(f): the same deployment, JSON against binary bodies, 1 and 256 rows a request, at c16."""
    out = {}
    for rows in (1, 256):
        for binary in (False, True):
            body, headers = oip_body(rows, binary)
            req = urllib.request.Request(url, body, headers)
            with urllib.request.urlopen(req, timeout=30) as r:  # answers before it is timed
                assert r.status == 200, r.status
            run = wrk(url, 16, seconds, wrk_script(directory, f"{'bin' if binary else 'json'}{rows}", body, headers),
                      server_pid)
            run["rows_per_s"] = run["rps"] * rows
            out[f"{'binary' if binary else 'JSON'} {rows} row(s) c16"] = run
    return out


def grpc_load(port: int, connections: int, seconds: int, rows: int = 1) -> None:
    """(g)'s load generator (run in its own process, pinned like wrk): `connections` callers on one
    HTTP/2 channel, each sending ModelInfer (raw FP32 bytes, as tritonclient does by default) again as
    soon as it is answered, for `seconds`; prints wrk's figures as JSON. The request is serialized once,
    so the client's per-call cost is gRPC's own."""
    import asyncio

    import grpc
    import numpy as np

    from serving.oip_grpc_proto import MESSAGES, SERVICE

    request = MESSAGES["ModelInferRequest"](model_name="bench", inputs=[MESSAGES["ModelInferRequest"].InferInputTensor(
        name="features", datatype="FP32", shape=[rows, len(ROW)])],
        raw_input_contents=[np.asarray([ROW] * rows, dtype="<f4").tobytes()]).SerializeToString()
    latencies: list[float] = []
    failed = 0

    async def run() -> float:
        nonlocal failed
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = channel.unary_unary(f"/{SERVICE}/ModelInfer", request_serializer=None,
                                        response_deserializer=None)
            await infer(request)  # answers before it is timed
            end = time.monotonic() + seconds

            async def caller():
                nonlocal failed
                while time.monotonic() < end:
                    t = time.perf_counter()
                    try:
                        await infer(request, timeout=5)
                        latencies.append((time.perf_counter() - t) * 1000)
                    except grpc.aio.AioRpcError:
                        failed += 1
            start = time.monotonic()
            await asyncio.gather(*(caller() for _ in range(connections)))
            return time.monotonic() - start

    elapsed = asyncio.run(run())
    latencies.sort()
    print(json.dumps({"rps": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2],
                      "p99_ms": latencies[int(len(latencies) * 0.99)], "non_2xx": failed, "timeouts": 0,
                      "requests": len(latencies)}))


def grpc_run(port: int, connections: int, seconds: int, server_pid: int | None) -> dict:
    """One bounded gRPC load run in a process of its own, pinned to the load generator's core."""
    pin = ["taskset", "-c", ",".join(map(str, sorted(LOAD_CORES)))] if LOAD_CORES else []
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run([*pin, sys.executable, __file__, "--grpc-load", str(port), str(connections), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"the gRPC load generator failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if server_pid and result["requests"]:
        cpu = cpu_seconds(server_pid) - cpu_before
        result["server_cpu_us_per_req"] = round(cpu / result["requests"] * 1e6, 1)
        result["server_cpu_share"] = round(cpu / seconds, 2)
    return result


def load_args(args) -> list[tuple[int, int]]:
    return [(c, args.seconds) for c in (16, 64)]


# ---------------------------------------------------------------------------------------------
def register_versions(settings, tracking_uri: str) -> None:
    from training.config_loader import load_config
    from training.pipeline import tune_and_register

    base = ["name=bench", "search.num_samples=1", "search.epochs=2", "search.scheduler.type=fifo",
            "search.space.hidden_layers={type: choice, values: [2]}",
            "search.space.width={type: choice, values: [64]}"]
    for seed in (7, 8):
        cfg = load_config(REPO / "configs" / "shuttle.yaml", [*base, f"seed={seed}"], environ={})
        tune_and_register(cfg, settings, tracking_uri)


def start_with_two_versions(home: Path) -> tuple[Path, str]:
    """A local Ray (two CPUs) and two registered versions of the bench model in a scratch store at
    `home`: the wrk script that POSTs one row, and the tracking URI."""
    import ray

    from cluster.settings import Settings

    script = home / "post.lua"
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{BODY}'\nwrk.headers['Content-Type'] = 'application/json'\n")
    settings = Settings.resolve(environ={}, home=home)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    print("registering two versions (short search)...", flush=True)
    register_versions(settings, settings.embedded_tracking_uri)
    return script, settings.embedded_tracking_uri


def bench_in_process(model_uri: str, calls: int = 3000) -> dict:
    import mlflow
    import numpy as np

    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    x = np.asarray([ROW], dtype=np.float32)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        model.outputs(x)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"rps": 1000 / statistics.mean(times), "p50_ms": times[len(times) // 2],
            "p99_ms": times[int(len(times) * 0.99)], "non_2xx": 0, "timeouts": 0}


def local_server(model_uri: str, tracking_uri: str, port: int) -> None:
    """(b): the Handoff HTTP app with the model in this process, under uvicorn."""
    import uvicorn

    from serving.http_app import Answer, build_asgi
    from serving.protocol import BadRequest, ModelSignature
    from training import class_labels, load_version, predicted_class

    model = load_version(*model_uri.split("/")[-2:], tracking_uri=tracking_uri)
    sig = ModelSignature("bench", model.features, model.classes)

    class LocalBackend:
        def signature(self, name):
            if name != "bench":
                raise BadRequest(f"unknown model {name!r}", 404)
            return sig

        def versions(self, name):
            return [1]

        def ready(self, name=None):
            return True

        async def answer(self, name, x, request_id, routing_key, version):
            proba = model.outputs(x)
            prediction = predicted_class(proba)
            return Answer(1, proba, prediction, class_labels(sig.classes, prediction))

    uvicorn.run(build_asgi(LocalBackend(), 1_000_000), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, http="httptools", loop="uvloop")


def plain_serve_app(tracking_uri: str):
    """(c): what a Ray Serve user writes first: one deployment, Serve's defaults, Serve's proxy."""
    from fastapi import FastAPI, Request
    from ray import serve

    api = FastAPI()

    @serve.deployment
    @serve.ingress(api)
    class Plain:
        def __init__(self):
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)
            self.model = mlflow.pyfunc.load_model("models:/bench/1").unwrap_python_model()

        @api.post("/v2/models/bench/infer")
        async def infer(self, request: Request):
            import numpy as np

            body = await request.json()
            t = body["inputs"][0]
            proba = self.model.outputs(np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]))
            return {"model_name": "bench", "outputs": [{"name": "probability", "datatype": "FP32",
                                                        "shape": list(proba.shape), "data": proba.ravel().tolist()}]}

    return Plain.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--only", default="a,b,c,d,g,e,dh,f",
                        help="shapes to run (g: (d) over gRPC; dh: (d) over Serve handles; f: binary vs JSON bodies)")
    parser.add_argument("--pin", default="auto", choices=("auto", "on", "off"),
                        help="run wrk on core 0 and everything serving (Ray, the gateway, the replicas, (b)'s "
                             "process) on the other cores, so the two do not share a core (auto: on with 2+ cores)")
    parser.add_argument("--grpc-load", nargs=3, type=int, metavar=("PORT", "CONNECTIONS", "SECONDS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--local-server", nargs=3, metavar=("MODEL_URI", "TRACKING_URI", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpc_load:
        grpc_load(*args.grpc_load)
        return
    if args.local_server:
        local_server(args.local_server[0], args.local_server[1], int(args.local_server[2]))
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    cores = sorted(os.sched_getaffinity(0))
    if args.pin == "on" or (args.pin == "auto" and len(cores) >= 2):
        if len(cores) < 2:
            sys.exit("--pin on needs at least two cores")
        LOAD_CORES.add(cores[0])
        os.sched_setaffinity(0, set(cores[1:]))  # Ray and every process it starts inherit this
        print(f"wrk pinned to core {cores[0]}; the server side to cores {cores[1:]}", flush=True)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import mlflow
    import ray
    from ray import serve

    from serving.config import load_serving_config
    from serving.control import ServingControl
    from training import Registry

    only = set(args.only.split(","))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="handoff-bench-serving-") as home:
        script, uri = start_with_two_versions(Path(home))
        mlflow.set_tracking_uri(uri)

        if "b" in only:
            proc = subprocess.Popen([sys.executable, __file__, "--local-server", "models:/bench/1", uri,
                                     str(LOCAL_PORT)])
            try:
                wait_http(f"http://127.0.0.1:{LOCAL_PORT}/v2/health/live")
                url = f"http://127.0.0.1:{LOCAL_PORT}/v2/models/bench/infer"
                first_answer(url)
                results["b FastAPI+uvicorn, 1 process"] = {f"c{c}": wrk(url, c, s, script, proc.pid)
                                                           for c, s in load_args(args)}
            finally:
                proc.terminate()
                proc.wait(30)
        registry = Registry(uri)
        for label, batch, transport in (("d", 1, "direct"), ("g", 1, "direct"), ("e", 32, "direct"),
                                        ("dh", 1, "handle"), ("f", 1, "direct")):
            if label not in only:
                continue
            cfg = load_serving_config(None, [f"version_defaults.batching.max_batch_size={batch}",
                                             "version_defaults.batching.max_in_flight=2",
                                             f"version_defaults.transport={transport}"], environ={})
            control = ServingControl(registry, cfg, str(Path(home) / "live"), say=print)
            control.traffic("bench", {1: 90, 2: 10})
            wait_http("http://127.0.0.1:8000/v2/health/ready")
            url = "http://127.0.0.1:8000/v2/models/bench/infer"
            first_answer(url)
            name = {"d": "d Handoff 90/10 + live log", "e": f"e Handoff 90/10 + live log + batching ({batch})",
                    "dh": "d' (d) over Serve handles (transport=handle)",
                    "f": "f (d): JSON vs binary tensor bodies", "g": "g (d) over gRPC (OIP v2, raw tensors)"}[label]
            gateway_pid = control.describe()["gateway"]["pid"]
            if label == "f":
                results[name] = bench_binary(url, Path(home), args.seconds, gateway_pid)
            elif label == "g":
                results[name] = {f"c{c}": grpc_run(cfg.gateway.grpc_port, c, s, gateway_pid) for c, s in load_args(args)}
            else:
                results[name] = {f"c{c}": wrk(url, c, s, script, gateway_pid) for c, s in load_args(args)}
            gateway = control.describe()["gateway"]
            results[name]["split"] = {f"{c['version']}": c["n"] for c in gateway["counts"] if c["what"] == "requests"}
            results[name]["direct"] = gateway["direct"]
            control.unserve("bench")
        serve.shutdown()
        # Plain Serve and the in-process forward pass run last, so neither leaves load behind for
        # the shapes under test. (Handoff (d) measured alone, `--only d`, gave ~300 req/s twice;
        # after any other shape in the same run 160-205 req/s. Cause not found; see docs/benchmarks.md.)
        if "c" in only:
            serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
            serve.run(plain_serve_app(uri), name="plain", route_prefix="/")
            url = f"http://127.0.0.1:{SERVE_PORT}/v2/models/bench/infer"
            first_answer(url)
            results["c plain Ray Serve (defaults)"] = {f"c{c}": wrk(url, c, s, script) for c, s in load_args(args)}
            serve.shutdown()
        if "a" in only:
            results["a in-process forward"] = {"c1": bench_in_process("models:/bench/1")}

        ray.shutdown()

    print(f"\n{'shape':<48} {'conc':>5} {'req/s':>9} {'ok req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8}")
    for name, runs in results.items():
        for conc, r in runs.items():
            if conc in ("split", "direct"):
                print(f"{'':<48} {conc}: {r}")
                continue
            ok = max(r["rps"] - r["non_2xx"] / args.seconds, 0.0) if conc != "c1" else r["rps"]
            r["ok_rps"] = ok
            rows = f"  rows/s {r['rows_per_s']:,.0f}" if "rows_per_s" in r else ""
            cpu = f"  cpu/req {r['server_cpu_us_per_req']:.0f} us ({r['server_cpu_share']:.0%} core)" \
                if "server_cpu_us_per_req" in r else ""
            print(f"{name:<48} {conc:>5} {r['rps']:>9.1f} {ok:>9.1f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} "
                  f"{r['non_2xx']:>8}{rows}{cpu}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "serving.json").write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args),
                                                  "results": results}, indent=2))


if __name__ == "__main__":
    main()
