"""Rollout decisions, request coalescing, the live log's rows, metrics read-back, serving config."""

import asyncio

import numpy as np
import pyarrow.dataset as ds
import pytest

from cluster.config_layers import ConfigError
from serving.batcher import Batcher
from serving.config import load_serving_config
from serving.live_log import LiveLog, should_log
from serving.metrics_read import summarize
from serving.device import replica_device
from training.serving_load import weights_device
from serving.policy import PolicyError, TrafficPolicy
from serving.rollout import promote, rollback


def test_promote_keeps_the_old_champion_warm_and_rollback_brings_it_back():
    first = promote(TrafficPolicy({1: 90, 2: 10}), 1, (), 2)
    assert first.policy.weights == {2: 100.0, 1: 0.0} and first.champion == 2 and first.history == (1,)
    back = rollback(first.policy, first.champion, first.history)
    assert back.policy.weights == {1: 100.0} and back.champion == 1 and back.history == ()
    with pytest.raises(PolicyError, match="no previous champion"):
        rollback(back.policy, back.champion, back.history)


def test_batcher_coalesces_concurrent_requests_and_splits_the_answers():
    calls = []

    async def call(x):
        calls.append(x.shape[0])
        await asyncio.sleep(0.01)
        return x * 2

    async def scenario():
        batcher = Batcher(call, max_batch_size=8, max_in_flight=1)
        xs = [np.full((1, 2), i, dtype=np.float32) for i in range(10)]
        return await asyncio.gather(*(batcher.submit(x) for x in xs)), xs

    results, xs = asyncio.run(scenario())
    assert all((r == x * 2).all() for r, x in zip(results, xs))
    assert calls == [1, 8, 1]  # the first goes at once; the rest wait for it and go together


def test_batcher_off_sends_each_request_alone_at_once():
    calls, in_flight, most = [], [0], [0]

    async def call(x):
        calls.append(x.shape[0])
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0.01)
        in_flight[0] -= 1
        return x * 2

    async def scenario():
        batcher = Batcher(call, max_batch_size=1, max_in_flight=1)  # off: max_in_flight does not apply
        xs = [np.full((2, 2), i, dtype=np.float32) for i in range(10)]
        return await asyncio.gather(*(batcher.submit(x) for x in xs)), xs

    results, xs = asyncio.run(scenario())
    assert all((r == x * 2).all() for r, x in zip(results, xs))
    assert calls == [2] * 10 and most[0] == 10  # one call per request, none waiting for another


def test_a_failed_batch_reaches_every_waiter_in_it():
    async def failing(x):
        raise RuntimeError("replica gone")

    async def scenario():
        batcher = Batcher(failing, max_batch_size=4, max_in_flight=1)
        return await asyncio.gather(*(batcher.submit(np.zeros((1, 2))) for _ in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(scenario()))


def test_live_log_writes_every_row_partitioned_by_model_and_date(tmp_path):
    log = LiveLog(str(tmp_path), flush_seconds=60)
    x = np.arange(18, dtype=np.float32).reshape(2, 9)
    features = tuple(f"f{j}" for j in range(9))
    proba = np.array([[0.8, 0.2], [0.3, 0.7]], dtype=np.float32)
    for i in range(5):
        log.append("m", features, f"r{i}", 3, "key", x[:1], np.array([1]), 2.5, labels=np.array(["dog"]),
                   proba=proba[1:])
    log.append("m", features, "multi", 4, None, x, np.array([0, 1]), 1.0, shadow=True,
               labels=np.array(["cat", "dog"]), proba=proba)
    log.close()
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table().to_pandas()
    assert len(table) == 7 and log.rows_written == 7
    assert set(table["model"]) == {"m"} and table["date"].nunique() == 1
    assert sorted(table["request_id"])[:3] == ["multi", "multi#1", "r0"]
    multi = table[table.request_id.str.startswith("multi")].sort_values("request_id")
    assert multi["f0"].tolist() == [0.0, 9.0] and multi["label"].tolist() == ["cat", "dog"]
    assert np.allclose(np.stack(multi["probabilities"].to_list()), proba)
    assert multi["version"].tolist() == [4, 4] and multi["routing_key"].isna().all() and multi["shadow"].all()
    single = table[table.request_id == "r3"].iloc[0]
    assert single["version"] == 3 and single["routing_key"] == "key" and single["latency_ms"] == 2.5
    assert single["label"] == "dog" and not single["shadow"] and table["shadow"].sum() == 2
    assert str(table["ts"].dt.tz) == "UTC" and table["ts"].notna().all()


def test_a_request_whose_values_cannot_become_rows_is_dropped_and_the_others_written(tmp_path):
    """Half a surrogate pair in a text column (the gateway refuses it now; this guards what it may miss):
    kept, the chunk failed every later write and the model's rows stayed in memory, unwritten."""
    log = LiveLog(str(tmp_path), flush_seconds=60)
    features, kinds = ("city", "n"), ("string", None)
    for i, city in enumerate(["paris", "\ud800", "lyon"]):
        log.append("m", features, f"r{i}", 1, None, {"city": [city], "n": [1.0]}, np.array([0]), 1.0,
                   labels=np.array(["a"]), proba=np.array([[0.6, 0.4]], np.float32), value_types=kinds)
    log.flush()
    log.append("m", features, "r3", 1, None, {"city": ["nice"], "n": [2.0]}, np.array([1]), 1.0,
               labels=np.array(["b"]), proba=np.array([[0.4, 0.6]], np.float32), value_types=kinds)
    log.close()
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table().to_pandas()
    assert sorted(table["request_id"]) == ["r0", "r2", "r3"] and log.rows_written == 3 and log.rows_dropped == 1
    assert sorted(table["city"].astype(str)) == ["lyon", "nice", "paris"]


def test_sampling_is_decided_by_request_id():
    ids = [f"r{i}" for i in range(10_000)]
    assert all(should_log(i, 100) for i in ids[:100]) and not any(should_log(i, 0) for i in ids[:100])
    assert 900 < sum(should_log(i, 10) for i in ids) < 1100
    assert [should_log(i, 10) for i in ids[:50]] == [should_log(i, 10) for i in ids[:50]]


PROM = """# HELP ray_handoff_requests_total answered requests
# TYPE ray_handoff_requests_total counter
ray_handoff_requests_total{model="m",version="2",Component="core_worker"} 90.0
ray_handoff_requests_total{model="m",version="3",Component="core_worker"} 10.0
# TYPE ray_handoff_shadow_requests_total counter
ray_handoff_shadow_requests_total{model="m",version="4"} 50.0
# TYPE ray_handoff_shadow_agreements_total counter
ray_handoff_shadow_agreements_total{model="m",version="4"} 45.0
# TYPE ray_handoff_request_latency_ms histogram
ray_handoff_request_latency_ms_bucket{model="m",version="2",le="5.0"} 40.0
ray_handoff_request_latency_ms_bucket{model="m",version="2",le="10.0"} 89.0
ray_handoff_request_latency_ms_bucket{model="m",version="2",le="+Inf"} 90.0
ray_handoff_request_latency_ms_count{model="m",version="2"} 90.0
ray_handoff_request_latency_ms_sum{model="m",version="2"} 500.0
"""


def test_metrics_summary_sums_nodes_and_bounds_the_quantiles():
    figures = summarize([PROM, PROM])
    assert figures[("m", 2)]["requests"] == 180 and figures[("m", 3)]["requests"] == 20
    assert figures[("m", 2)]["p50_ms_at_most"] == 10.0 and figures[("m", 2)]["p99_ms_at_most"] == float("inf")
    assert figures[("m", 4)]["shadow_agreement"] == pytest.approx(0.9)


def test_serving_config_layers_and_errors(tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text("gateway: {port: 9000}\nversions: {'m/3': {replicas: 2, batching: {max_batch_size: 16}}}\n")
    cfg = load_serving_config(path, ["live_log.sample_percent=5"], environ={"HANDOFF_SERVING__GATEWAY__REPLICAS": "2"})
    assert cfg.gateway.port == 9000 and cfg.gateway.replicas == 2 and cfg.live_log.sample_percent == 5
    assert cfg.deployment_for("m", 3).replicas == 2 and cfg.deployment_for("m", 3).batching.enabled
    assert cfg.deployment_for("m", 2).replicas == 1
    with pytest.raises(ConfigError, match="gateway.prot: unknown key"):
        load_serving_config(None, ["gateway.prot=1"], environ={})
    with pytest.raises(ConfigError, match="live_log.sample_percent"):
        load_serving_config(None, ["live_log.sample_percent=300"], environ={})


def test_replica_device_follows_the_gpus_ray_assigned():
    assert replica_device([]) == "cpu" and replica_device([0]) == "cuda:0"


def test_the_device_shown_is_where_the_weights_are_not_what_was_assigned():
    import torch

    class Wrapped:  # the shape of training's pyfunc: the torch module under `.model`
        model = torch.nn.Linear(3, 2)

    assert weights_device(Wrapped(), "cuda:0") == "cpu"  # assigned a GPU, weights stayed on the CPU
    assert weights_device(object(), "cuda:0") == "cuda:0"  # no torch module: what Ray assigned


def test_the_example_serving_config_loads():
    from pathlib import Path

    cfg = load_serving_config(Path(__file__).resolve().parents[2] / "configs" / "serving.yaml", [], environ={})
    assert cfg.gateway.port == 8000 and cfg.live_log.enabled


def test_live_log_accepts_a_pyarrow_filesystem_uri(tmp_path):
    log = LiveLog(f"file://{tmp_path}/live", flush_seconds=60)
    log.append("m", ("a", "b"), "r1", 1, None, np.ones((1, 2), dtype=np.float32), np.array([0]), 1.0)
    log.close()
    assert ds.dataset(str(tmp_path / "live"), partitioning="hive").count_rows() == 1


def test_served_versions_reads_only_this_models_version_apps():
    from serving.model_version import app_name, served_versions

    apps = [app_name("m", 3), app_name("m", 12), app_name("m-v", 1), "handoff-gateway", "m-vx", app_name("other", 2)]
    assert served_versions("m", apps) == [3, 12]


def test_a_gateway_other_machines_reach_needs_api_keys_or_allow_anonymous_said_outright():
    from cluster.config_layers import ConfigError
    from serving.config import load_serving_config

    for host in ("0.0.0.0", "10.1.2.3", "'::'", "gateway.internal"):
        with pytest.raises(ConfigError, match="reachable from other machines and gateway.api_keys is empty"):
            load_serving_config(None, [f"gateway.host={host}"], environ={})
    assert load_serving_config(None, ["gateway.host=0.0.0.0", "gateway.api_keys=[k1]"], environ={}).gateway.api_keys
    assert load_serving_config(None, ["gateway.host=0.0.0.0", "gateway.allow_anonymous=true"], environ={})
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert load_serving_config(None, [f"gateway.host={host}"], environ={}).gateway.host == host
    with pytest.raises(ConfigError, match="printable ASCII"):
        load_serving_config(None, ["gateway.api_keys=['a key ']"], environ={})


def test_api_keys_are_held_only_as_digests_from_the_config_on():
    """What `handoff serve` stores on the cluster, gives the gateway and digests into its deployment
    version holds no key; a client's key matches its digest, a digest sent as a key does not."""
    from serving.config import ServingConfig, key_digest
    from serving.http_app import authorised

    cfg = load_serving_config(None, ["gateway.api_keys=[s3cret-key-123, other-key]"], environ={})
    dumped = cfg.model_dump_json()
    assert "s3cret-key-123" not in dumped and "other-key" not in dumped
    assert cfg.gateway.api_keys == sorted([key_digest("s3cret-key-123"), key_digest("other-key")])
    again = ServingConfig.model_validate_json(dumped)  # read back from the cluster's store: the same digests
    assert again.gateway.api_keys == cfg.gateway.api_keys
    held = frozenset(again.gateway.api_keys)
    assert authorised({"x-api-key": "s3cret-key-123"}, held) and authorised({"authorization": "Bearer other-key"}, held)
    assert not authorised({"x-api-key": key_digest("s3cret-key-123")}, held)  # a leaked digest is not a key
    assert not authorised({"x-api-key": "s3cret-key-12"}, held) and not authorised({}, held)
    with pytest.raises(ConfigError, match="64 lowercase hex digits"):
        load_serving_config(None, ["gateway.api_keys=['sha256:abc']"], environ={})


def test_the_mlflow_database_uri_never_reaches_a_command_line(monkeypatch, capsys):
    from cluster.head_services import main
    from cluster.mlflow_server import mlflow_server_command

    command = mlflow_server_command("s3://bucket/mlflow", "127.0.0.1", 5000)
    assert "--backend-store-uri" not in command and not any("postgresql" in part for part in command)
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    assert main(["mlflow", "--artifacts-destination", "/tmp/x", "--wait-s", "0"]) == 2
    assert "set MLFLOW_BACKEND_STORE_URI" in capsys.readouterr().err


def test_a_slice_that_keeps_a_category_as_text_joins_the_others_in_one_file(tmp_path, monkeypatch):
    """An integer code beyond int64 (answered as the other bucket) is kept as text in its slice of
    requests; the other slices' int64 codes join it as text (the slices failed to concatenate, and the
    writer thread died with the rows it had taken)."""
    import serving.live_log as live_log_module

    monkeypatch.setattr(live_log_module, "SLICE_CHUNKS", 3)
    log = LiveLog(str(tmp_path), flush_seconds=60)
    features, kinds = ("plan", "n"), ("integer", None)
    for i, plan in enumerate([1, 2, 3, 2**70, 5, 6, 7]):
        log.append("m", features, f"r{i}", 1, None, {"plan": [plan], "n": [1.0]}, np.array([0]), 1.0,
                   labels=np.array(["a"]), proba=np.array([[0.6, 0.4]], np.float32), value_types=kinds)
    log.close()
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table().to_pandas()
    assert log.rows_written == 7 and log.rows_dropped == 0
    assert sorted(table["plan"].astype(str)) == sorted(["1", "2", "3", str(2**70), "5", "6", "7"])
