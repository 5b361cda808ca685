"""Tune → MLflow server → registry, on a real local Ray and a real `mlflow server` process."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from training.datasets import read_frame, resolve_uri
from training.pipeline import load_data, tune_and_register
from training.prepare import DataError
from training.registry import Registry
from training.reproduction import DataChanged, reproduce

from .conftest import settings_for, small_config, write_parquet

pytestmark = pytest.mark.integration

LINEAGE_KEYS = {"git_commit", "git_dirty", "data_fingerprint", "config_hash", "seed", "python_version",
                "torch_version", "ray_version", "mlflow_version", "tune_experiment_path", "tune_trial_id",
                "weights_sha256", "epochs_trained", "trial_params"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shuttle_frame):
    """A 4,000-row slice of Shuttle as a Parquet file we are free to change later."""
    return write_parquet(shuttle_frame.iloc[:4000], tmp_path_factory.mktemp("data") / "shuttle.parquet")


@pytest.fixture(scope="module")
def two_versions(ray_local, mlflow_server, dataset, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = settings_for(home)
    first = tune_and_register(small_config(str(dataset), "pipeline-it"), settings, mlflow_server)
    second = tune_and_register(small_config(str(dataset), "pipeline-it", "seed=8"), settings, mlflow_server)
    return settings, first, second


def test_versions_get_champion_then_challenger(two_versions, mlflow_server):
    _, first, second = two_versions
    assert (first.version, first.alias) == (1, "champion")
    assert (second.version, second.alias) == (2, "challenger")
    assert Registry(mlflow_server).aliases("pipeline-it") == {"champion": 1, "challenger": 2}


def test_every_trial_is_an_mlflow_run_with_params_and_epoch_metrics(two_versions, mlflow_server):
    _, first, _ = two_versions
    client = MlflowClient(mlflow_server)
    parent = client.get_run(first.search_run_id)
    trials = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{first.search_run_id}'")
    assert len(trials) == 3
    for run in trials:
        assert {"width", "lr", "dropout"} <= set(run.data.params)
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == [1, 2]  # FIFO: every epoch of every trial
    assert {"val_loss", "test_loss", "test_accuracy"} <= set(parent.data.metrics)


def test_registered_version_carries_full_lineage(two_versions, mlflow_server, dataset):
    settings, first, _ = two_versions
    info = Registry(mlflow_server).version("pipeline-it", 1)
    assert LINEAGE_KEYS <= set(info.lineage)
    cfg = small_config(str(dataset), "pipeline-it")
    assert info.lineage["config_hash"] == cfg.config_hash()
    assert info.lineage["data_fingerprint"] == load_data(cfg, settings).fingerprint
    assert info.lineage["seed"] == "7" and info.lineage["weights_sha256"] == first.weights_sha256
    assert info.lineage["tune_experiment_path"] == first.experiment_path
    assert info.lineage["tune_trial_id"] == first.trial_id
    client = MlflowClient(mlflow_server)
    artifacts = {a.path for a in client.list_artifacts(first.search_run_id, "handoff")}
    assert {"handoff/config.json", "handoff/requirements.txt"} <= artifacts
    requirements = client.download_artifacts(first.search_run_id, "handoff/requirements.txt")
    assert "ray==2.60.0" in open(requirements).read()


def test_pyfunc_model_has_signature_example_and_predicts(two_versions, mlflow_server, shuttle_frame):
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/pipeline-it@champion")
    inputs = [c.name for c in model.metadata.get_input_schema().inputs]
    assert inputs == [f"f{i}" for i in range(1, 10)]
    # the columns' real types: Shuttle's readings are integers (MLflow refuses floats for them, naming the column)
    assert {c.type.name for c in model.metadata.get_input_schema().inputs} == {"long"}
    out = model.predict(shuttle_frame.iloc[-200:][inputs])
    assert list(out.columns) == ["prediction", "label", "probability_0", "probability_1"]
    assert (out.label == out.prediction).all()  # integer ids are their own class names
    np.testing.assert_allclose(out.probability_0 + out.probability_1, 1.0, rtol=1e-5)
    accuracy = (out.prediction.to_numpy() == shuttle_frame.iloc[-200:].anomaly.to_numpy()).mean()
    assert accuracy > 0.9
    assert model.metadata.saved_input_example_info is not None


def test_reproduce_gives_bit_identical_weights(two_versions, mlflow_server):
    settings, first, _ = two_versions
    result = reproduce("pipeline-it", 1, settings, Registry(mlflow_server))
    assert result.registered_weights_sha256 == first.weights_sha256
    assert result.reproduced_weights_sha256 == first.weights_sha256 and result.identical


def test_reproduce_refuses_when_the_data_changed(two_versions, mlflow_server, dataset):
    settings, _, _ = two_versions
    df = pd.read_parquet(dataset)
    df.loc[10, "f2"] += 1
    write_parquet(df, dataset)
    with pytest.raises(DataChanged, match="refusing to reproduce pipeline-it/2"):
        reproduce("pipeline-it", 2, settings, Registry(mlflow_server))


def test_bad_data_registers_nothing(ray_local, mlflow_server, shuttle_frame, tmp_path):
    df = shuttle_frame.iloc[:2000].copy()
    df.loc[:6, "f3"] = np.nan
    df = df.drop(columns=["f9"])
    path = write_parquet(df, tmp_path / "bad.parquet")
    cfg = small_config(str(path), "bad-data-it")
    with pytest.raises(DataError) as exc:
        tune_and_register(cfg, settings_for(tmp_path / "home"), mlflow_server)
    assert "['f9']" in str(exc.value)
    client = MlflowClient(mlflow_server)
    assert client.search_registered_models("name = 'bad-data-it'") == []
    assert client.get_experiment_by_name(cfg.experiment_name) is None  # not even a run was opened
    df = df.assign(f9=1.0)
    write_parquet(df, path)
    refusing = small_config(str(path), "bad-data-it", "dataset.missing=refuse")  # gaps are imputed by default
    with pytest.raises(DataError, match="feature 'f3' has 7 NaN"):
        tune_and_register(refusing, settings_for(tmp_path / "home"), mlflow_server)
    assert client.search_registered_models("name = 'bad-data-it'") == []


def test_failed_trial_is_retried_from_scratch(ray_local, mlflow_server, dataset, tmp_path):
    marker = tmp_path / "attempts"
    cfg = small_config(str(dataset), "flaky-it", "search.num_samples=1",
                       "model.family=tests.integration.factories:crash_first_attempts",
                       f"model.params={json.dumps({'marker': str(marker), 'crashes': 1})}",
                       "search.max_failures=2")
    result = tune_and_register(cfg, settings_for(tmp_path / "home"), mlflow_server)
    assert result.version == 1 and int(marker.read_text()) >= 2  # crashed once, retried, then trained


def test_builtin_dataset_is_materialised_and_read_through_ray_data(ray_local, tmp_path):
    uri = resolve_uri("builtin://shuttle", tmp_path / "datasets")
    assert uri.endswith("shuttle.parquet")
    df = read_frame(uri)
    assert len(df) == 49_097 and list(df.columns) == [*(f"f{i}" for i in range(1, 10)), "anomaly"]
    with pytest.raises(DataError, match="unknown built-in dataset"):
        resolve_uri("builtin://nope", tmp_path)
    with pytest.raises(DataError, match="dataset not found"):
        read_frame(str(tmp_path / "missing.parquet"))
