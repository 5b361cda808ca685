"""A number to predict, on a real local Ray and a real `mlflow server`: the generated deliveries table
(columns of every kind, gaps) tuned as regression, registered with its target's scale inside the
model, reproduced bit for bit, its figures shown by `handoff models`, answered over HTTP (OIP v2
JSON and binary through tritonclient, MLflow payloads), by MLflow's own pyfunc and in batch alike,
its labels taken as numbers, and scikit-learn's diabetes scores refused unless the task is said."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from training.datasets import deliveries_table
from training.pipeline import tune_and_register
from training.prepare import DataError
from training.registry import Registry
from training.reproduction import reproduce

from .conftest import REPO, SMALL, settings_for, write_parquet

pytestmark = pytest.mark.integration

NAME = "deliveries-it"
FEATURES = ["distance_km", "items", "hour", "zone", "weather", "express", "kitchen_queue"]
ROWS = 6


def deliveries_config(data: str, *extra: str, name: str = NAME):
    from training.config_loader import load_config

    return load_config(REPO / "configs" / "deliveries.yaml",
                       [*SMALL, f"name={name}", f"dataset.uri={data}", "search.num_samples=2", "search.epochs=4",
                        "search.space.lr={type: choice, values: [0.01]}", *extra], environ={})


@pytest.fixture(scope="module")
def deliveries() -> pd.DataFrame:
    return deliveries_table(rows=4000, seed=3).to_pandas()


@pytest.fixture(scope="module")
def registered(ray_local, mlflow_server, deliveries, tmp_path_factory):
    home = tmp_path_factory.mktemp("regression-home")
    data = write_parquet(deliveries, home / "deliveries.parquet")
    said = io.StringIO()
    result = tune_and_register(deliveries_config(str(data)), settings_for(home), mlflow_server,
                               console=Console(file=said, width=400))
    return result, settings_for(home), data, said.getvalue()


def test_it_trains_as_regression_with_its_figures_on_every_split(registered, mlflow_server, deliveries):
    result, _, _, said = registered
    assert "task regression" in said
    m = result.metrics
    assert {"val_rmse", "val_mae", "val_r2", "test_rmse", "test_mae", "test_r2"} <= set(m)
    assert m["test_rmse"] < 0.8 * deliveries["minutes"].std() and m["test_r2"] > 0.3  # it learned, in minutes
    info = Registry(mlflow_server).version(NAME, result.version)
    assert info.lineage["task"] == "regression" and "classes" not in info.lineage
    client = mlflow.MlflowClient(mlflow_server)
    trial_runs = client.search_runs([client.get_run(result.search_run_id).info.experiment_id],
                                    "tags.`handoff.role` = 'trial'")
    assert trial_runs and all("val_rmse" in r.data.metrics and "val_r2" in r.data.metrics for r in trial_runs)
    history = client.get_metric_history(trial_runs[0].info.run_id, "val_rmse")
    assert len(history) >= 2  # per epoch


def test_a_regression_version_reproduces_bit_for_bit(registered, mlflow_server):
    result, settings, _, _ = registered
    again = reproduce(NAME, result.version, settings, Registry(mlflow_server))
    assert again.identical, again


def test_handoff_models_shows_the_regression_figures(registered, mlflow_server):
    shown = subprocess.run([sys.executable, "-m", "handoff", "models", NAME, "--tracking-uri", mlflow_server,
                            "--no-lineage"], capture_output=True, text=True, timeout=120, cwd=REPO,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "val RMSE" in shown.stdout and "test R²" in shown.stdout and "val acc" not in shown.stdout


def test_a_whole_number_score_is_refused_before_any_work_unless_the_task_is_said(ray_local, mlflow_server, tmp_path):
    from sklearn.datasets import load_diabetes

    from training.config_loader import load_config

    frame = load_diabetes(as_frame=True).frame
    data = write_parquet(frame, tmp_path / "diabetes.parquet")
    features = [c for c in frame.columns if c != "target"]
    base = [*SMALL, "name=diabetes-it", f"dataset.uri={data}", "dataset.label=target",
            f"dataset.features={json.dumps(features)}", "search.num_samples=1", "search.metric=null", "search.mode=null"]
    cfg = load_config(REPO / "configs" / "shuttle.yaml", base, environ={})
    with pytest.raises(DataError, match="214 distinct whole numbers.*task: regression"):
        tune_and_register(cfg, settings_for(tmp_path), mlflow_server)
    declared = load_config(REPO / "configs" / "shuttle.yaml", [*base, "task=regression"], environ={})
    result = tune_and_register(declared, settings_for(tmp_path), mlflow_server)
    assert result.metrics["test_rmse"] > 0 and "val_rmse" in result.trials[0]


# --- served over HTTP, and scored in batch -----------------------------------------------------------
def raw_rows(deliveries: pd.DataFrame) -> pd.DataFrame:
    """Held-out rows as a client has them, a gap in the text and in the number columns."""
    rows = deliveries[FEATURES].iloc[-ROWS:].reset_index(drop=True).astype(object)
    rows.loc[1, "weather"] = None
    rows.loc[2, "kitchen_queue"] = None
    return rows.where(rows.notna(), None)


DATATYPES = {"items": "INT64", "hour": "INT64", "zone": "BYTES", "weather": "BYTES", "express": "BOOL"}


def oip_columns(rows: pd.DataFrame) -> dict:
    def value(c, v):
        if v is None:
            return None
        kind = DATATYPES.get(c, "FP64")
        return bool(v) if kind == "BOOL" else int(v) if kind == "INT64" else str(v) if kind == "BYTES" else float(v)

    return {"id": "regression-1", "inputs": [
        {"name": c, "shape": [len(rows)], "datatype": DATATYPES.get(c, "FP64"), "data": [value(c, v) for v in rows[c]]}
        for c in rows.columns]}


@pytest.fixture(scope="module")
def served(registered, mlflow_server, tmp_path_factory):
    from serving import ServingControl, load_serving_config

    from .conftest import free_port

    result, *_ = registered
    port = free_port()
    live = tmp_path_factory.mktemp("regression-live")
    cfg = load_serving_config(None, [f"gateway.port={port}", "live_log.flush_seconds=0.5", "gateway.cpus=0.1",
                                     "version_defaults.cpus=0.1"], environ={})
    control = ServingControl(Registry(mlflow_server), cfg, str(live))
    control.serve_model(NAME)
    yield control, port, live, result
    control.unserve(NAME)


def test_every_way_in_answers_the_pyfuncs_values_in_minutes(served, mlflow_server, deliveries, tmp_path):
    """MLflow's own pyfunc, OIP v2 JSON, tritonclient with binary outputs, the MLflow payloads and batch
    inference give the same predicted minutes for the same raw rows."""
    import torch
    import tritonclient.http as httpclient

    from serving import BatchConfig, predict_table

    from .load import call

    control, port, _, result = served
    rows = raw_rows(deliveries)
    typed = rows.astype({"distance_km": "float64", "kitchen_queue": "float64", "items": "int64", "hour": "int64",
                         "express": bool})
    torch.set_num_threads(1)
    mlflow.set_tracking_uri(mlflow_server)
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/{result.version}").predict(typed)
    assert expected.shape == (ROWS,) and expected.dtype == np.float64  # numbers, as MLflow's regressors answer
    assert 5 < expected.mean() < 150  # minutes, not a standardised score
    expected32 = expected.astype(np.float32)

    status, _, metadata = call(port, f"/v2/models/{NAME}", None, method="GET")
    assert status == 200 and metadata["parameters"]["task"] == "regression"
    assert metadata["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}]

    status, headers, answer = call(port, f"/v2/models/{NAME}/infer", oip_columns(rows))
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert output["name"] == "prediction" and output["shape"] == [ROWS, 1] and output["datatype"] == "FP32"
    assert np.array_equal(np.asarray(output["data"], dtype=np.float32), expected32)

    status, _, refused = call(port, f"/v2/models/{NAME}/infer", {**oip_columns(rows), "outputs": [{"name": "label"}]})
    assert status == 400 and "not one of this model's outputs ['prediction']" in refused["error"]

    complete = rows.iloc[[0, 3, 4]].reset_index(drop=True)  # tritonclient sends no nulls
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = []
    for c in complete.columns:
        kind = DATATYPES.get(c, "FP64")
        dtype = {"BYTES": np.object_, "BOOL": np.bool_, "INT64": np.int64, "FP64": np.float64}[kind]
        tensor = httpclient.InferInput(c, [len(complete)], kind)
        tensor.set_data_from_numpy(complete[c].to_numpy().astype(dtype), binary_data=True)
        inputs.append(tensor)
    got = client.infer(NAME, inputs, outputs=[httpclient.InferRequestedOutput("prediction", binary_data=True)])
    assert np.array_equal(got.as_numpy("prediction")[:, 0], expected32[[0, 3, 4]])

    records = [[None if v is None else (v.item() if hasattr(v, "item") else v) for v in r]
               for r in rows.itertuples(index=False)]
    status, _, scored = call(port, f"/v2/models/{NAME}/invocations",
                             {"dataframe_split": {"columns": list(rows.columns), "data": records}})
    assert status == 200 and all(isinstance(v, float) for v in scored["predictions"]), scored
    assert np.array_equal(np.asarray(scored["predictions"], dtype=np.float32), expected32)

    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(rows.assign(row_id=range(ROWS)).convert_dtypes(), preserve_index=False), source)
    done = predict_table(Registry(mlflow_server), NAME, str(source), str(tmp_path / "scored"),
                         config=BatchConfig(actors=1, cpus_per_actor=0.5), progress=False)
    assert done.rows_out == ROWS
    out = pd.read_parquet(tmp_path / "scored").sort_values("row_id")
    assert [c for c in out.columns if c not in rows.columns] == ["row_id", "prediction", "version"]
    assert out["prediction"].dtype == np.float64
    assert np.array_equal(out["prediction"].to_numpy(dtype=np.float32), expected32)


def test_labels_are_numbers_and_anything_else_is_a_4xx_naming_it(served):
    from .load import call

    _, port, live, _ = served
    status, _, answer = call(port, f"/v2/models/{NAME}/infer", oip_columns(raw_rows(deliveries_table(50).to_pandas())))
    assert status == 200
    status, _, taken = call(port, f"/v2/models/{NAME}/feedback",
                            {"labels": [{"request_id": answer["id"], "label": 41.5}]})
    assert status == 200 and taken["accepted"] == 1
    status, _, refused = call(port, f"/v2/models/{NAME}/feedback",
                              {"labels": [{"request_id": answer["id"], "label": "41.5 minutes"}]})
    assert status == 422 and "is not a number" in refused["error"]
