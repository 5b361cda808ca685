"""Serving on a real local Ray, a real `mlflow server` and real HTTP on 127.0.0.1.

Two versions come from the real pipeline (short search). One module-wide deployment is driven
through every change a production model sees, under a bounded load loop that counts failures.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from serving.config import load_serving_config
from serving.control import TRAFFIC_TAG, ServingControl
from serving.gateway import GATEWAY_APP
from serving.policy import PolicyError, TrafficPolicy
from training import Registry
from training.pipeline import tune_and_register

from .conftest import free_port, settings_for, small_config, write_parquet
from .load import ROW, call, infer_body
from .load import LoadLoop as SharedLoadLoop

NAME = "serve-it"
DATA: list = []  # the fixture's Parquet file, for tests that register another version
GRPC: list = []  # the gateway's gRPC port


def LoadLoop(port, **kw):  # noqa: N802 - the shared load loop, aimed at this module's model
    return SharedLoadLoop(port, NAME, **kw)


@pytest.fixture(scope="module")
def served(ray_local, mlflow_server, shuttle_frame, tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-home")
    data = write_parquet(shuttle_frame.iloc[:4000], home / "d.parquet")
    DATA[:] = [data]
    settings = settings_for(home)
    for seed in (7, 8):
        tune_and_register(small_config(str(data), NAME, f"seed={seed}"), settings, mlflow_server)
    port = free_port()
    GRPC[:] = [free_port()]
    cfg = load_serving_config(None, [f"gateway.port={port}", f"gateway.grpc_port={GRPC[0]}", "live_log.flush_seconds=0.5",
                                     "version_defaults.cpus=0.1", "gateway.cpus=0.1"], environ={})
    registry = Registry(mlflow_server)
    control = ServingControl(registry, cfg, str(home / "live"))
    control.serve_model(NAME)
    yield control, port, home / "live", registry
    control.unserve(NAME)


def gateway_pid(control) -> int:
    return control.describe()["gateway"]["pid"]


def direct_paths(control) -> dict:
    """Per served version: replicas the gateway is connected to, requests sent direct / by handle."""
    return control.describe()["gateway"]["direct"]


def resize(control, replicas: dict[str, int], cpus: float | None = None) -> None:
    """Serve the model again with `replicas` per "MODEL/V" (a lightweight update of the versions), or
    `cpus` each (new resources: the replicas restart)."""
    defaults = control.cfg.version_defaults
    cfg = control.cfg.model_copy(update={"versions": {
        key: defaults.model_copy(update={"replicas": n, "cpus": cpus or defaults.cpus}) for key, n in replicas.items()}})
    ServingControl(control.registry, cfg, control.live_log_root).serve_model(NAME)


def wait_for(check, seconds: float, what: str, show=lambda: None) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}: {show()}")
        time.sleep(0.5)


def test_oip_v2_endpoints_answer_and_name_the_version(served):
    _, port, _, _ = served
    assert call(port, "/v2/health/live")[0] == 200 and call(port, "/v2/health/ready")[0] == 200
    status, _, meta = call(port, f"/v2/models/{NAME}")
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 9] and meta["versions"] == ["1"]
    assert call(port, f"/v2/models/{NAME}/ready")[2] == {"name": NAME, "ready": True}
    status, headers, body = call(port, f"/v2/models/{NAME}/infer", infer_body([ROW, ROW]))
    assert status == 200 and headers["x-model-version"] == "1" and body["outputs"][0]["shape"] == [2]
    status, headers, body = call(port, f"/v2/models/{NAME}/versions/1/infer", infer_body())
    assert status == 200 and headers["x-model-version"] == "1"
    per_feature = {"inputs": [{"name": f"f{i + 1}", "shape": [1], "datatype": "FP32", "data": [v]}
                              for i, v in enumerate(ROW)]}
    assert call(port, f"/v2/models/{NAME}/infer", per_feature)[2]["outputs"] == body["outputs"]
    features = [f"f{i}" for i in range(1, 10)]
    for payload in ({"dataframe_split": {"columns": features, "data": [ROW]}},
                    {"dataframe_records": [dict(zip(features, ROW))]}, {"instances": [ROW]}, {"inputs": [ROW]}):
        status, headers, answer = call(port, f"/v2/models/{NAME}/invocations", payload)
        assert status == 200 and headers["x-model-version"] == "1"
        assert answer["predictions"][0]["prediction"] == body["outputs"][0]["data"][0]
    as_csv = (",".join(reversed(features)) + "\r\n" + ",".join(map(repr, reversed(ROW))) + "\r\n").encode()
    status, headers, answer = call(port, f"/v2/models/{NAME}/invocations", raw=as_csv,
                                   headers={"content-type": "text/csv"})  # MLflow's scoring server takes CSV too
    assert status == 200 and answer["predictions"][0]["prediction"] == body["outputs"][0]["data"][0], answer
    status, _, openapi = call(port, "/openapi.json")
    assert status == 200 and f"/v2/models/{{name}}/infer" in openapi["paths"]


def test_tritonclient_with_its_defaults_and_with_json_gets_the_json_paths_answers(served):
    """The most used OIP v2 client, unchanged: binary tensors in and out by default, JSON when told."""
    import numpy as np
    import tritonclient.http as httpclient

    _, port, _, _ = served
    rows = np.array([ROW, [41.0, 1.0, 77.0, 0.0, 38.0, 14.0, 36.0, 39.0, 4.0], [0.0] * 9], dtype=np.float32)
    status, _, expected = call(port, f"/v2/models/{NAME}/versions/1/infer", infer_body(rows.tolist()))
    assert status == 200
    want = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in expected["outputs"]}
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        assert client.is_server_live() and client.is_model_ready(NAME)
        for binary in (True, False):
            tensor = httpclient.InferInput("features", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows, binary_data=binary)
            outputs = None if binary else [httpclient.InferRequestedOutput(name, binary_data=False)
                                           for name in ("prediction", "probability")]
            for compression in (None, "gzip", "deflate"):  # tritonclient's request_compression_algorithm
                result = client.infer(NAME, [tensor], model_version="1", outputs=outputs,
                                      request_compression_algorithm=compression)
                assert result.get_response()["model_version"] == "1"
                assert result.as_numpy("prediction").tolist() == want["prediction"].tolist()
                np.testing.assert_allclose(result.as_numpy("probability"), want["probability"], atol=1e-6)
        classes = [httpclient.InferRequestedOutput("probability", class_count=2)]
        with pytest.raises(Exception, match="classification extension"):  # refused, not the whole tensor
            client.infer(NAME, [tensor], model_version="1", outputs=classes)
    finally:
        client.close()


def grpc_status(call) -> str:
    """The gRPC status name a tritonclient call was refused with ("" if it answered)."""
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as exc:
        return f"{exc.status()}: {exc.message()}"
    return ""


def test_oip_over_grpc_with_tritonclient_defaults_gets_the_http_answers_routing_shadow_and_live_log(served):
    """tritonclient.grpc with its defaults (raw tensor bytes in, raw out) on the gateway's gRPC port:
    the same answers as HTTP, the same split, sticky keys in metadata, shadows, the live log."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    control, port, live_root, _ = served
    rows = np.array([ROW, [41.0, 1.0, 77.0, 0.0, 38.0, 14.0, 36.0, 39.0, 4.0], [0.0] * 9], dtype=np.float32)
    status, _, expected = call(port, f"/v2/models/{NAME}/versions/1/infer", infer_body(rows.tolist()))
    assert status == 200
    want = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in expected["outputs"]}
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{GRPC[0]}")

    def infer(x=rows, **kw):
        tensor = grpcclient.InferInput("features", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(NAME, [tensor], **kw)

    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
        meta = client.get_model_metadata(NAME, as_json=True)
        assert meta["inputs"][0]["shape"] == ["-1", "9"] and "1" in meta["versions"]
        result = infer(model_version="1", request_id="grpc-rows-1")
        assert result.get_response().model_version == "1" and result.get_response().id == "grpc-rows-1"
        assert result.as_numpy("prediction").tolist() == want["prediction"].tolist()
        np.testing.assert_allclose(result.as_numpy("probability"), want["probability"], atol=1e-6)
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()] == \
            want["label"].tolist()
        # the split and sticky keys, as over HTTP
        control.traffic(NAME, {1: 70, 2: 30})
        n = 300
        versions = [infer(rows[:1]).get_response().model_version for _ in range(n)]
        assert abs(versions.count("2") / n - 0.3) <= 4.5 * (0.3 * 0.7 / n) ** 0.5
        for key in ("alice", "bob", "carol"):
            assert len({infer(rows[:1], headers={"x-routing-key": key}).get_response().model_version
                        for _ in range(10)}) == 1
        # a shadow sees a copy of every gRPC request; the caller gets version 1's answer
        control.traffic(NAME, {1: 100})
        control.shadow(NAME, 2, 100)
        before = {(c["version"], c["what"]): c["n"] for c in control.describe()["gateway"]["counts"]}
        for _ in range(20):
            assert infer(rows[:1]).get_response().model_version == "1"
        wait_for(lambda: {(c["version"], c["what"]): c["n"] for c in control.describe()["gateway"]["counts"]}
                 .get((2, "shadow"), 0) >= before.get((2, "shadow"), 0) + 20, 20, "the shadow's copies")
        control.shadow(NAME, 2, 0)
        # refusals are gRPC status codes naming the problem
        tensor = grpcclient.InferInput("features", [1, 9], "FP32")
        tensor.set_data_from_numpy(rows[:1])
        assert grpc_status(lambda: client.infer("nope", [tensor])).startswith("StatusCode.NOT_FOUND: unknown model 'nope'")
        refused = grpc_status(lambda: infer(rows[:, :8]))
        assert refused.startswith("StatusCode.INVALID_ARGUMENT") and "does not match" in refused
        assert grpc_status(lambda: infer(model_version="9")).startswith("StatusCode.NOT_FOUND: model")
    finally:
        client.close()

    def logged() -> bool:  # the request sent with its own id is in the live log (flushed every 0.5 s)
        if not live_root.exists():
            return False
        table = ds.dataset(str(live_root), partitioning="hive").to_table(columns=["request_id"])
        return "grpc-rows-1" in set(table.column("request_id").to_pylist())

    wait_for(logged, 30, "the gRPC request's rows in the live log")


@pytest.mark.parametrize("path, kwargs, status, message", [
    (f"/v2/models/{NAME}/infer", {"raw": b"{not json"}, 400, "malformed JSON"),
    (f"/v2/models/{NAME}/infer", {"body": {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32",
                                                        "data": ROW[:8]}]}}, 400, "does not match"),
    (f"/v2/models/{NAME}/infer", {"body": {"inputs": [{"name": "features", "shape": [1, 9], "datatype": "BYTES",
                                                        "data": ROW}]}}, 400, "datatype 'BYTES'"),
    (f"/v2/models/{NAME}/infer", {"body": {"inputs": [{"name": "f1", "shape": [1], "datatype": "FP32",
                                                        "data": [1]}]}}, 422, "missing feature"),
    (f"/v2/models/{NAME}/invocations", {"body": {"dataframe_records": [{**{f"f{i}": 1 for i in range(1, 10)},
                                                                       "extra": 1}]}}, 422, "unknown feature"),
    # NaN is a gap, which the model imputes (`dataset.missing: impute`); an infinite value never is
    (f"/v2/models/{NAME}/infer", {"raw": json.dumps(infer_body()).replace("50.0", "Infinity").encode()}, 422,
     "infinite"),
    (f"/v2/models/{NAME}/infer", {"body": {"inputs": [{"name": "features", "shape": [0, 9], "datatype": "FP32",
                                                        "data": []}]}}, 400, "empty"),
    (f"/v2/models/{NAME}/infer", {"raw": b"[" + b"1," * 600_000 + b"1]"}, 413, "limit"),
    ("/v2/models/nope/infer", {"body": infer_body()}, 404, "unknown model 'nope'"),
    (f"/v2/models/{NAME}/versions/9/infer", {"body": infer_body()}, 404, "no served version 9"),
    ("/v2/models/nope", {}, 404, "unknown model"),
])
def test_bad_input_is_a_4xx_naming_the_problem_and_the_server_keeps_answering(served, path, kwargs, status, message):
    _, port, _, _ = served
    got, _, body = call(port, path, **kwargs)
    assert got == status and message in body["error"], body
    assert call(port, f"/v2/models/{NAME}/infer", infer_body())[0] == 200


def test_every_change_under_load_drops_no_request_and_weights_do_not_restart_the_gateway(served):
    control, port, _, registry = served
    pid = gateway_pid(control)
    with LoadLoop(port) as load:
        time.sleep(2)
        control.canary(NAME, 2, 30)                      # add a canary (deploys version 2 first)
        time.sleep(3)
        control.traffic(NAME, {1: 50, 2: 50})            # change weights
        assert gateway_pid(control) == pid                # a weight change is a reconfigure, not a restart
        time.sleep(3)
        control.promote(NAME, 2)                          # champion moves, all traffic to 2
        assert registry.aliases(NAME)["champion"] == 2
        time.sleep(3)
        control.rollback(NAME)                            # the previous champion back
        assert registry.aliases(NAME)["champion"] == 1
        time.sleep(3)
        resize(control, {f"{NAME}/1": 2})                 # a replica added: the gateway connects to it
        wait_for(lambda: direct_paths(control)[f"{NAME}/1"]["replicas"] == 2, 60, "the second replica",
                 lambda: (direct_paths(control), control.describe()["applications"].get(f"{NAME}-v1")))
        resize(control, {})                               # and removed again: it says GOAWAY first
        wait_for(lambda: direct_paths(control)[f"{NAME}/1"]["replicas"] == 1, 60, "one replica left",
                 lambda: (direct_paths(control), control.describe()["applications"].get(f"{NAME}-v1")))
        replica = control.version_signatures(NAME, [1])[1]["pid"]
        resize(control, {f"{NAME}/1": 1}, cpus=0.15)      # new resources: its replica restarts, drained
        assert control.version_signatures(NAME, [1])[1]["pid"] != replica
        time.sleep(2)
        resize(control, {})                               # and back
        control.canary(NAME, 2, 20)
        time.sleep(2)
        control.traffic(NAME, {1: 100})                   # remove version 2
        time.sleep(2)
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 50 and set(load.versions) == {"1", "2"}
    assert gateway_pid(control) == pid
    direct = direct_paths(control)[f"{NAME}/1"]
    assert direct["direct"] > 10 * direct["fallback"], direct  # requests went straight to the replicas
    assert TrafficPolicy.from_json(registry.model_tags(NAME)[TRAFFIC_TAG]) == TrafficPolicy({1: 100.0})
    assert f"{NAME}-v2" not in control.describe()["applications"]


def test_observed_split_is_within_binomial_tolerance_and_sticky_keys_hold(served):
    control, port, _, _ = served
    control.traffic(NAME, {1: 70, 2: 30})
    n = 300
    versions = [call(port, f"/v2/models/{NAME}/infer", infer_body())[1]["x-model-version"] for _ in range(n)]
    share = versions.count("2") / n
    assert abs(share - 0.3) <= 4.5 * (0.3 * 0.7 / n) ** 0.5
    for key in ("alice", "bob", "carol"):
        seen = {call(port, f"/v2/models/{NAME}/infer", infer_body(), {"x-routing-key": key})[1]["x-model-version"]
                for _ in range(10)}
        assert len(seen) == 1
    control.traffic(NAME, {1: 100})


def test_shadow_answers_are_recorded_never_returned_and_a_failing_shadow_never_hurts(served):
    control, port, live_root, _ = served
    control.shadow(NAME, 2, 100)
    for _ in range(20):
        status, headers, _ = call(port, f"/v2/models/{NAME}/infer", infer_body())
        assert status == 200 and headers["x-model-version"] == "1"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        counts = {(c["version"], c["what"]): c["n"] for c in control.describe()["gateway"]["counts"]}
        if counts.get((2, "shadow"), 0) >= 20:
            break
        time.sleep(0.5)
    assert counts[(2, "shadow")] >= 20 and counts.get((2, "shadow_agreements"), 0) <= counts[(2, "shadow")]
    # the shadow's replicas go away under it: callers still get answers from version 1
    import ray.serve as serve

    serve.delete(f"{NAME}-v2")
    for _ in range(10):
        assert call(port, f"/v2/models/{NAME}/infer", infer_body())[0] == 200
    control.shadow(NAME, 2, 0)


def test_traffic_changes_of_two_models_from_two_processes_at_once_all_stay_in_force(served, mlflow_server):
    """Every change reads the gateway's whole routing table and deploys it back: without the cluster's
    serving lock the later write of two at once undoes the earlier one's model. The two writers change
    at the same moments (every 4 s), and each checks before every change that its own model still has
    the weights it set last: with the lock off, this found lost changes in every run tried."""
    import subprocess
    import sys

    import ray

    control, _, _, registry = served
    other = "serve-it-b"
    for seed in (7, 8):
        tune_and_register(small_config(str(DATA[0]), other, f"seed={seed}", "search.num_samples=1"),
                          settings_for(DATA[0].parent), mlflow_server)
    control.traffic(NAME, {1: 50, 2: 50})
    control.traffic(other, {1: 50, 2: 50})
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    start = f"{time.time() + 20:.3f}"  # both joined the cluster by then
    writers = [subprocess.Popen([sys.executable, "-m", "tests.integration.traffic_writer", address, mlflow_server,
                                 model, "10", final, start, "4"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env) for model, final in ((NAME, "70"), (other, "20"))]
    try:
        outputs = [w.communicate(timeout=600)[0] for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert all(w.returncode == 0 for w in writers), [o[-3000:] for o in outputs]
    assert all(o.count(": v1 ") == 10 for o in outputs), outputs
    assert not [line for o in outputs for line in o.splitlines() if line.startswith("lost:")], outputs
    table = control.describe()["gateway"]["models"]
    try:
        assert TrafficPolicy.from_json(table[NAME]["policy"]).shares() == pytest.approx({1: 0.7, 2: 0.3})
        assert TrafficPolicy.from_json(table[other]["policy"]).shares() == pytest.approx({1: 0.2, 2: 0.8})
    finally:
        control.unserve(other)
        control.traffic(NAME, {1: 100})


SCHEMATHESIS_NAMED = """\
[parameters]
name = "{name}"

# The request bodies' schemas are the same for every model (the model is a path parameter): what a
# model takes (its features, their count in a shape, its classes) is checked by the server, not by a
# schema, and a shape times its data's length cannot be written in JSON Schema at all. So a body the
# schema allows may get the 400/422 naming the problem; every other check, and every other status,
# stays as Schemathesis has it.
[[operations]]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2XX", 400, 401, 404, 413, 422]
"""


@pytest.mark.parametrize("named, seed", [(False, 7), (True, 31)],
                         ids=["as-published-7", "aimed-at-the-served-model-31"])
def test_a_schema_driven_fuzzer_over_openapi_finds_nothing(served, tmp_path, named, seed):
    """Schemathesis, every check, over /openapi.json with a model served: as a user would run it, and
    aimed at the served model's name so that its bodies reach the model (not only 404s); a seed each
    (each run takes its minute: two seeds each were four minutes of the suite)."""
    import subprocess
    import sys

    _, port, _, _ = served
    args = [str(Path(sys.executable).with_name("st"))]
    if named:
        (tmp_path / "st.toml").write_text(SCHEMATHESIS_NAMED.format(name=NAME))
        args += ["--config-file", str(tmp_path / "st.toml")]
    args += ["run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all", "--workers", "1",
             "--max-examples", "20", "--seed", str(seed), "--max-time", "60", "--generation-database", "none",
             "--no-color"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout and "failed" not in done.stdout.split("SUMMARY")[-1], done.stdout[-3000:]


def test_a_restarted_application_comes_back_with_the_stored_weights(served):
    control, port, _, registry = served
    control.traffic(NAME, {1: 80, 2: 20})
    control.unserve(NAME)
    assert call_refused(port)
    control.serve_model(NAME)
    assert TrafficPolicy.from_json(control.describe()["gateway"]["models"][NAME]["policy"]).shares() == \
        pytest.approx({1: 0.8, 2: 0.2})
    control.traffic(NAME, {1: 100})


def call_refused(port) -> bool:
    try:
        call(port, "/v2/health/live")
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


def test_clean_shutdown_loses_no_live_log_row_and_metrics_reach_prometheus(served):
    control, port, live_root, _ = served
    import ray.serve as serve

    serve.get_app_handle(GATEWAY_APP).flush_live_log.remote().result(timeout_s=60)
    before = count_live_rows(live_root)
    answered = sum(call(port, f"/v2/models/{NAME}/infer", infer_body())[0] == 200 for _ in range(40))
    control.unserve(NAME)                                 # graceful: the gateway writes what it buffered
    assert count_live_rows(live_root) - before == answered == 40
    control.serve_model(NAME)

    from serving.metrics_read import scrape, summarize

    deadline = time.monotonic() + 60
    figures = {}
    while time.monotonic() < deadline:
        figures = summarize(scrape())
        if figures.get((NAME, 1), {}).get("requests", 0) > 0:
            break
        time.sleep(2)
    assert figures[(NAME, 1)]["requests"] > 0 and figures[(NAME, 1)].get("latency_count", 0) > 0


def count_live_rows(root) -> int:
    if not root.exists():
        return 0
    table = ds.dataset(str(root), partitioning="hive").to_table(columns=["shadow"])
    return int((~table.column("shadow").to_numpy(zero_copy_only=False)).sum())


def test_gateway_app_is_a_serve_application(served):
    control, _, _, _ = served
    assert GATEWAY_APP in control.describe()["applications"]


def test_a_version_no_node_can_hold_is_refused_at_the_deploy_deadline_and_the_next_change_goes_through(served):
    """`serve.run` waits for ever for replicas no node can hold, holding the cluster's serving lock:
    every later change (the loop's too) would wait behind it. The deadline refuses it, names what Serve
    waits for, takes the new version down and leaves traffic and the lock as they were."""
    import ray.serve as serve

    from serving.model_version import app_name

    control, port, _, registry = served
    control.traffic(NAME, {1: 100})
    unplaceable = control.cfg.version_defaults.model_copy(update={"resources": {"no-such-node": 1.0}})
    cfg = control.cfg.model_copy(update={"deploy_timeout_s": 15.0, "versions": {f"{NAME}/2": unplaceable}})
    started = time.monotonic()
    with pytest.raises(PolicyError, match=r"version 2 failed to start: not running after 15 s .*no node offers no-such-node"):
        ServingControl(registry, cfg, control.live_log_root).traffic(NAME, {1: 90, 2: 10})
    assert time.monotonic() - started < 120
    assert app_name(NAME, 2) not in serve.status().applications
    for _ in range(20):
        status, headers, _ = call(port, f"/v2/models/{NAME}/infer", infer_body())
        assert status == 200 and headers["x-model-version"] == "1"
    control.traffic(NAME, {1: 90, 2: 10})  # the lock is free: the next change runs at once
    assert sorted(control.stored_policy(NAME).versions) == [1, 2]
    control.traffic(NAME, {1: 100})


def test_a_version_with_other_features_is_refused_and_serving_goes_on(served, mlflow_server, tmp_path):
    control, port, _, registry = served
    home = tmp_path / "home"
    features = "[f1, f2, f3, f4, f5, f6, f7, f8]"
    version = tune_and_register(small_config(str(DATA[0]), NAME, f"dataset.features={features}", "seed=9"),
                                settings_for(home), mlflow_server).version
    with pytest.raises(PolicyError, match=f"version {version} takes features"):
        control.canary(NAME, version, 10)
    assert f"{NAME}-v{version}" not in control.describe()["applications"]
    assert call(port, f"/v2/models/{NAME}/infer", infer_body())[0] == 200


def test_class_names_as_the_user_has_them_end_to_end(served, mlflow_server, shuttle_frame, tmp_path):
    """A label column of strings: trained, registered with its classes, served, answered by name
    (OIP `label` output, MLflow payload, live log), published in the metadata."""
    import mlflow

    _, port, live_root, registry = served
    names = {0: "nominal", 1: "anomaly"}
    data = write_parquet(shuttle_frame.iloc[:3000].assign(anomaly=lambda d: d["anomaly"].map(names)),
                         tmp_path / "named.parquet")
    model = "labels-it"
    version = tune_and_register(small_config(str(data), model, "search.num_samples=1"), settings_for(tmp_path),
                                mlflow_server).version
    assert registry.version(model, version).lineage["classes"] == '["anomaly", "nominal"]'
    mlflow.set_tracking_uri(mlflow_server)
    frame = mlflow.pyfunc.load_model(f"models:/{model}/{version}").predict(  # the readings as they are: integers
        shuttle_frame.iloc[-50:][[f"f{i}" for i in range(1, 10)]])
    assert list(frame.columns) == ["prediction", "label", "probability_anomaly", "probability_nominal"]
    assert set(frame.label) <= {"anomaly", "nominal"}
    cfg = load_serving_config(None, [f"gateway.port={port}", "live_log.flush_seconds=0.5",
                                     "version_defaults.cpus=0.1", "gateway.cpus=0.1"], environ={})
    control = ServingControl(registry, cfg, str(live_root))
    control.serve_model(model)
    try:
        rows = shuttle_frame.iloc[-20:]
        x = rows[[f"f{i}" for i in range(1, 10)]].to_numpy(dtype="float32")
        status, _, meta = call(port, f"/v2/models/{model}")
        assert status == 200 and meta["parameters"]["classes"] == ["anomaly", "nominal"]
        status, _, answer = call(port, f"/v2/models/{model}/infer", infer_body(x.tolist()))
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert status == 200 and outputs["label"]["datatype"] == "BYTES"
        assert outputs["label"]["data"] == [["anomaly", "nominal"][i] for i in outputs["prediction"]["data"]]
        truth = rows["anomaly"].map(names).tolist()
        assert sum(a == b for a, b in zip(outputs["label"]["data"], truth)) >= 18
        status, _, scored = call(port, f"/v2/models/{model}/invocations", {"instances": x.tolist()})
        assert status == 200 and [r["label"] for r in scored["predictions"]] == outputs["label"]["data"]
        assert set(scored["predictions"][0]) == {"prediction", "label", "probability_anomaly", "probability_nominal"}
    finally:
        control.unserve(model)  # the gateway writes its live log
    logged = ds.dataset(str(live_root / f"model={model}"), partitioning="hive").to_table().to_pandas()
    assert len(logged) >= 40 and set(logged["label"]) <= {"anomaly", "nominal"}
    assert (logged["label"] == logged["prediction"].map({0: "anomaly", 1: "nominal"})).all()


def scored_table(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas().sort_values("row_id").reset_index(drop=True)


def test_batch_inference_gives_every_row_the_served_models_answer(served, shuttle_frame, tmp_path):
    """A table in several files, scored by `predict_table` on Ray Data: every row's class and
    probabilities are what the gateway answers for the same features from the same version, and the
    output names the version and the MLflow run."""
    import numpy as np
    import pyarrow.parquet as pq

    from serving import BatchConfig, predict_table

    _, port, _, registry = served
    features = [f"f{i}" for i in range(1, 10)]
    table = shuttle_frame.iloc[-6000:][features].reset_index(drop=True)
    table.insert(0, "row_id", [f"r{i}" for i in range(len(table))])
    for k, part in enumerate(np.array_split(np.arange(len(table)), 3)):
        write_parquet(table.iloc[part], tmp_path / "tonight" / f"day={k}" / "rows.parquet")
    import mlflow

    champion = registry.aliases(NAME)["champion"]
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    result = predict_table(registry, NAME, str(tmp_path / "tonight"), str(tmp_path / "scored"), progress=False,
                           config=BatchConfig(batch_size=512, columns=["row_id"]))  # the pool sized from what Serve left free
    assert (result.version, result.rows_in, result.rows_out, result.rows_rejected) == (champion, 6000, 6000, 0)
    # loading the version did not re-point this process's MLflow (a library call leaves the caller's URIs)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before
    scored = scored_table(tmp_path / "scored")
    assert list(scored.columns) == ["row_id", "prediction", "label", "probability_0", "probability_1", "version"]
    assert scored["row_id"].tolist() == sorted(table["row_id"])
    expected = table.set_index("row_id").loc[scored["row_id"]]
    for start in range(0, len(expected), 1000):  # the gateway, the same version, the same rows
        rows = expected.iloc[start:start + 1000].to_numpy(dtype="float32")
        status, headers, answer = call(port, f"/v2/models/{NAME}/versions/{champion}/infer", infer_body(rows.tolist()))
        assert status == 200 and headers["x-model-version"] == str(champion)
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert scored["prediction"].iloc[start:start + 1000].tolist() == outputs["prediction"]["data"]
        served_proba = np.asarray(outputs["probability"]["data"], dtype=np.float64).reshape(-1, 2)
        ours = scored[["probability_0", "probability_1"]].iloc[start:start + 1000].to_numpy()
        assert np.allclose(ours, served_proba, atol=1e-6)
    assert (scored["version"] == champion).all()
    for path in (tmp_path / "scored").glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata.metadata
        assert meta[b"handoff.version"] == str(champion).encode() and meta[b"handoff.mlflow_run_id"] == result.run_id.encode()
    run = registry.client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["rows_out"] == 6000
    assert run.data.params["input_fingerprint"] == result.input_fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored", "tonight"]  # no staging left behind


def test_a_batch_actor_answers_the_same_with_the_drivers_version_as_with_one_it_loads(served, shuttle_frame):
    """`predict_table` ships the version its driver loaded to each actor (no MLflow in the actor); a
    version that cannot travel is loaded by the actor from the registry. Both give the same rows."""
    import numpy as np
    import pyarrow as pa
    import ray

    from serving.batch.predictor import VersionPredictor
    from training import load_version

    _, _, _, registry = served
    champion = registry.aliases(NAME)["champion"]
    driver_copy = load_version(NAME, champion, registry.tracking_uri, device="cpu")
    assert driver_copy.portable
    batch = pa.Table.from_pandas(shuttle_frame.iloc[:700][[f"f{i}" for i in range(1, 10)]], preserve_index=False)
    actor = ray.remote(num_cpus=0)(VersionPredictor)
    common = {"name": NAME, "version": champion, "tracking_uri": registry.tracking_uri, "registry_uri": None,
              "carry": [], "metadata": {"handoff.mlflow_run_id": "r"}, "skip_invalid": False}
    shipped, loaded = actor.remote(**common, shipped=[ray.put(driver_copy)]), actor.remote(**common)
    try:
        from_driver, from_registry = ray.get([shipped.__call__.remote(batch), loaded.__call__.remote(batch)],
                                             timeout=120)
    finally:
        ray.kill(shipped)
        ray.kill(loaded)
    assert from_driver.num_rows == 700 and from_driver.equals(from_registry, check_metadata=True)
    expected = driver_copy.outputs(batch.to_pandas().to_numpy(dtype="float32"))
    assert np.array_equal(from_driver.column("probability_1").to_numpy(), expected[:, 1].astype(np.float64))


def test_batch_inference_refuses_bad_input_before_work_and_invalid_rows_with_their_count(served, shuttle_frame,
                                                                                          tmp_path):
    import numpy as np

    from serving import BatchConfig, BatchInputError, predict_table
    from training import RegistryError

    _, _, _, registry = served
    features = [f"f{i}" for i in range(1, 10)]
    table = shuttle_frame.iloc[:2000][features].astype("float64").reset_index(drop=True)
    table.insert(0, "row_id", np.arange(len(table)))
    table.loc[[5, 700, 1999], "f3"] = np.nan
    table.loc[[42], "f8"] = np.inf
    data = write_parquet(table, tmp_path / "in" / "rows.parquet")
    out, taken = tmp_path / "out", tmp_path / "taken"
    taken.mkdir()
    cfg = BatchConfig(actors=1, cpus_per_actor=0.5)
    refused = [  # (what, call) — each is refused before any Ray Data work, naming the problem
        ("no version 99", lambda: predict_table(registry, NAME, str(data), str(out), version=99, config=cfg)),
        ("no alias 'staging'", lambda: predict_table(registry, NAME, str(data), str(out), alias="staging", config=cfg)),
        ("no feature column(s) ['f9']", lambda: predict_table(
            registry, NAME, str(write_parquet(table.drop(columns=["f9"]), tmp_path / "nof9.parquet")), str(out), config=cfg)),
        ("are not of their kind: f2 is", lambda: predict_table(
            registry, NAME, str(write_parquet(table.astype({"f2": str}), tmp_path / "text.parquet")), str(out), config=cfg)),
        ("input not found", lambda: predict_table(registry, NAME, str(tmp_path / "nothing"), str(out), config=cfg)),
        ("already exists", lambda: predict_table(registry, NAME, str(data), str(taken), config=cfg)),
        ("has no rows", lambda: predict_table(
            registry, NAME, str(write_parquet(table.iloc[:0], tmp_path / "empty.parquet")), str(out), config=cfg)),
        ("overlaps the input", lambda: predict_table(registry, NAME, str(data.parent), str(data.parent / "scored"),
                                                     config=cfg)),
    ]
    for message, attempt in refused:
        with pytest.raises((BatchInputError, RegistryError), match=re.escape(message)):
            attempt()
    # the gaps (NaN) are imputed, as when served; the infinite value cannot be scored
    with pytest.raises(BatchInputError, match="1 row.s. of .* have infinite values or gaps the version does not "
                                              "impute.*nothing was written"):
        predict_table(registry, NAME, str(data), str(out), config=cfg, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".out.staging-*"))
    skipped = predict_table(registry, NAME, str(data), str(out), progress=False,
                            config=cfg.model_copy(update={"on_invalid": "skip"}))
    assert (skipped.rows_out, skipped.rows_rejected) == (1999, 1)
    assert scored_table(out)["row_id"].tolist() == [i for i in range(2000) if i != 42]
    rejected = scored_table(skipped.rejected_output)
    assert rejected["row_id"].tolist() == [42] and list(rejected.columns) == ["row_id", *features]
    failed = [r for r in registry.client.search_runs([registry.client.get_experiment_by_name("handoff-batch").experiment_id])
              if r.info.status == "FAILED"]
    assert any("1 row(s)" in r.data.tags.get("handoff.failure", "") for r in failed)
    # every row invalid, skipped: no output at all, said so; a later clean overwrite leaves no stale rejected rows
    every = write_parquet(table.iloc[[42, 42]], tmp_path / "all-bad.parquet")
    with pytest.raises(BatchInputError, match="all 2 row.s. of .* nothing was scored and nothing was written"):
        predict_table(registry, NAME, str(every), str(tmp_path / "none"), progress=False,
                      config=cfg.model_copy(update={"on_invalid": "skip"}))
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.staging-*"))
    clean = write_parquet(table.drop(index=42), tmp_path / "clean.parquet")
    again = predict_table(registry, NAME, str(clean), str(out), progress=False, overwrite=True, config=cfg)
    assert again.rows_out == 1999 and again.rejected_output is None
    assert not Path(skipped.rejected_output).exists()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_a_replica_that_stops_answering_gets_504s_while_the_other_version_answers_and_memory_stays_flat(served):
    """Version 2's replica process is stopped (SIGSTOP: alive, its connection open, answering nothing)
    under load on both versions: each request to it gets a 504 naming the deadline instead of hanging,
    version 1 answers every request meanwhile, the gateway's memory stays flat, and once the process
    goes on version 2 answers again."""
    import signal
    import threading

    control, port, _, _ = served
    control.canary(NAME, 2, 10)
    stuck = control.version_signatures(NAME, [2])[2]["pid"]
    gateway = gateway_pid(control)
    for _ in range(50):  # both versions warm, on their direct connections
        assert call(port, f"/v2/models/{NAME}/versions/2/infer", infer_body())[0] == 200
    before = rss_mib(gateway)
    outcomes: dict[str, list] = {"v1": [], "v2": []}
    stop = threading.Event()

    def version1():
        for _ in range(3000):  # bounded: count and time (the v2 clients end it)
            if stop.is_set():
                break
            outcomes["v1"].append(call(port, f"/v2/models/{NAME}/versions/1/infer", infer_body())[0])

    def version2():
        for _ in range(3):
            status, _, body = call(port, f"/v2/models/{NAME}/versions/2/infer", infer_body())
            outcomes["v2"].append((status, (body or {}).get("error", "")))

    os.kill(stuck, signal.SIGSTOP)
    try:
        loads = [threading.Thread(target=version1) for _ in range(2)]
        hung = [threading.Thread(target=version2) for _ in range(4)]
        for t in loads + hung:
            t.start()
        for t in hung:
            t.join(timeout=120)
        stop.set()
        for t in loads:
            t.join(timeout=60)
        during = rss_mib(gateway)
    finally:
        os.kill(stuck, signal.SIGCONT)
    assert len(outcomes["v2"]) == 12 and all(status == 504 for status, _ in outcomes["v2"]), outcomes["v2"]
    assert all("did not answer within 5 s" in message for _, message in outcomes["v2"]), outcomes["v2"][:2]
    assert outcomes["v1"] and set(outcomes["v1"]) == {200}, sorted(set(outcomes["v1"]))
    assert during - before < 64, (before, during)  # MiB: nothing held per stuck request
    wait_for(lambda: call(port, f"/v2/models/{NAME}/versions/2/infer", infer_body())[0] == 200, 90,
             "version 2 answering again once its process went on")
    assert gateway_pid(control) == gateway
    control.traffic(NAME, {1: 100})


def test_inference_needs_a_valid_api_key_when_keys_are_configured(served):
    _, port, live_root, registry = served
    cfg = load_serving_config(None, [f"gateway.port={port}", f"gateway.grpc_port={GRPC[0]}", "gateway.cpus=0.1",
                                     "version_defaults.cpus=0.1", "gateway.api_keys=[s3cret]"], environ={})
    ServingControl(registry, cfg, str(live_root)).serve_model(NAME)
    status, _, body = call(port, f"/v2/models/{NAME}/infer", infer_body())
    assert status == 401 and "API key" in body["error"]
    assert call(port, f"/v2/models/{NAME}/infer", infer_body(), {"x-api-key": "wrong"})[0] == 401
    assert call(port, f"/v2/models/{NAME}/infer", infer_body(), {"authorization": "Bearer s3cret"})[0] == 200
    assert call(port, "/v2/health/ready")[0] == 200  # probes stay open
    # over gRPC the same keys, sent as metadata
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{GRPC[0]}")
    tensor = grpcclient.InferInput("features", [1, 9], "FP32")
    tensor.set_data_from_numpy(np.asarray([ROW], dtype=np.float32))
    try:
        assert client.is_server_live()  # health stays open
        assert grpc_status(lambda: client.infer(NAME, [tensor])).startswith("StatusCode.UNAUTHENTICATED")
        assert grpc_status(lambda: client.infer(NAME, [tensor], headers={"x-api-key": "wrong"})).startswith(
            "StatusCode.UNAUTHENTICATED")
        assert client.infer(NAME, [tensor], headers={"authorization": "Bearer s3cret"}).as_numpy("prediction") \
            is not None
    finally:
        client.close()


def gateway_pids(control, cfg, want: int, seconds: float = 120) -> set[int]:
    """The pids of the running gateway replicas, once `want` distinct ones have answered `describe`."""
    import ray.serve as serve

    pids: set[int] = set()
    deadline = time.monotonic() + seconds
    while len(pids) < want:
        assert time.monotonic() < deadline, f"only {len(pids)} gateway replica(s) answered: {pids}"
        try:
            pids.add(serve.get_app_handle(GATEWAY_APP).describe.remote().result(timeout_s=10)["pid"])
        except Exception:  # noqa: BLE001 - a replica being replaced
            time.sleep(0.5)
    return pids


def serve_with_gateways(registry, live_root, port: int, replicas: int) -> ServingControl:
    cfg = load_serving_config(None, [f"gateway.port={port}", "gateway.cpus=0.1", "version_defaults.cpus=0.1",
                                     f"gateway.replicas={replicas}"], environ={})
    control = ServingControl(registry, cfg, str(live_root))
    control.serve_model(NAME)
    return control


def test_a_killed_gateway_comes_back_without_a_wrong_answer(served):
    """One gateway replica, kill -9 under load: connections are refused while it restarts (nothing
    listens), then it answers again; never a 404 for the served model, never any other error."""
    import signal

    _, port, live_root, registry = served
    control = serve_with_gateways(registry, live_root, port, 1)
    (before,) = gateway_pids(control, control.cfg, 1)
    with LoadLoop(port, threads=4, max_requests=100_000, max_seconds=180) as load:
        wait_for(lambda: load.ok > 100, 60, "answers before the kill")
        os.kill(before, signal.SIGKILL)
        killed_at = load.ok + load.failed
        wait_for(lambda: load.ok + load.failed > killed_at + 20 and load.failed > 0, 60, "the kill to be seen")
        wait_for(lambda: gateway_pids(control, control.cfg, 1) != {before}, 120, "a new gateway replica")
        answered = load.ok
        wait_for(lambda: load.ok > answered + 200, 90, "answers from the new gateway",
                 lambda: load.failures[-3:])
    assert load.failed > 0, "the kill went unnoticed: no request failed while nothing listened"
    wrong = [(status, body) for status, body in load.failures if status != 0]
    assert not wrong, f"a restarting gateway answered wrongly: {wrong[:5]}"


def test_with_two_gateways_killing_one_loses_at_most_its_requests_in_flight(served):
    import signal

    _, port, live_root, registry = served
    control = serve_with_gateways(registry, live_root, port, 2)
    try:
        pids = gateway_pids(control, control.cfg, 2)
        threads = 4
        with LoadLoop(port, threads=threads, max_requests=100_000, max_seconds=180) as load:
            wait_for(lambda: load.ok > 200, 60, "answers from both gateways")
            os.kill(min(pids), signal.SIGKILL)
            killed_at = time.monotonic()
            sent = load.ok + load.failed
            wait_for(lambda: load.ok + load.failed > sent + 1000, 90, "answers after the kill")
            wait_for(lambda: len(gateway_pids(control, control.cfg, 2) - pids) == 1, 120,
                     "the killed gateway replaced")
            sent = load.ok + load.failed
            wait_for(lambda: load.ok + load.failed > sent + 500, 90, "answers with the new gateway")
        # each load thread has one request in flight at a time: the killed replica held at most that many,
        # plus a thread's next connection if the kernel queued it on the dying socket in the milliseconds
        # its process took to exit; nothing fails after that
        after = [round(t - killed_at, 3) for t in load.failed_at]
        assert load.failed <= 2 * threads, f"{load.failed} failed, at {after} s after the kill: {load.failures[:8]}"
        assert all(t < 1.0 for t in after), f"requests failed after the kill was over: {after}"
        assert all(status == 0 for status, _ in load.failures), load.failures
    finally:
        serve_with_gateways(registry, live_root, port, 1)
