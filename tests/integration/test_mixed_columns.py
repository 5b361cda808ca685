"""A table as users have one (strings, booleans, an integer code, gaps), on a real local Ray and a real
`mlflow server`: tuned and registered with its preparation inside the model, answered from raw rows by
the MLflow pyfunc, reproduced bit for bit, its column kinds recorded and shown."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from training.columns import CATEGORICAL, NUMERIC
from training.datasets import loans_table
from training.pipeline import tune_and_register
from training.prepare import DataError
from training.registry import Registry
from training.reproduction import reproduce
from training.serving_load import load_version

from .conftest import REPO, SMALL, settings_for, write_parquet

pytestmark = pytest.mark.integration

NAME = "loans-it"
KINDS = {"salary": NUMERIC, "commission": NUMERIC, "age": NUMERIC, "education": CATEGORICAL, "car": CATEGORICAL,
         "zipcode": CATEGORICAL, "senior": CATEGORICAL, "house_value": NUMERIC, "house_years": NUMERIC,
         "loan": NUMERIC}


def loans_config(data: str, *extra: str, name: str = NAME):
    from training.config_loader import load_config

    return load_config(REPO / "configs" / "loans.yaml",
                       [*SMALL, f"name={name}", f"dataset.uri={data}", "search.num_samples=1", *extra], environ={})


@pytest.fixture(scope="module")
def loans(tmp_path_factory) -> pd.DataFrame:
    return loans_table(rows=4000, seed=11).to_pandas()


@pytest.fixture(scope="module")
def registered(ray_local, mlflow_server, loans, tmp_path_factory):
    home = tmp_path_factory.mktemp("mixed-home")
    data = write_parquet(loans, home / "loans.parquet")
    said = io.StringIO()
    result = tune_and_register(loans_config(str(data)), settings_for(home), mlflow_server,
                               console=Console(file=said, width=400))
    return result, settings_for(home), data, said.getvalue()


def test_the_kinds_are_printed_at_the_start_and_recorded_with_the_version(registered, mlflow_server):
    result, _, _, said = registered
    assert "columns: salary numeric, commission numeric (" in said and "zipcode categorical (9 values)" in said
    info = Registry(mlflow_server).version(NAME, result.version)
    assert json.loads(info.lineage["columns"]) == KINDS
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.search_run_id)
    assert json.loads(run.data.params["columns"]) == KINDS
    assert run.data.metrics["missing_values.commission"] > 0 and run.data.metrics["missing_values.education"] > 0


def test_the_mlflow_signature_has_the_columns_real_types(registered, mlflow_server):
    result, *_ = registered
    mlflow.set_tracking_uri(mlflow_server)
    signature = mlflow.models.get_model_info(f"models:/{NAME}/{result.version}").signature
    types = {c.name: c.type.name for c in signature.inputs.inputs}
    assert types["education"] == "string" and types["car"] == "string" and types["senior"] == "boolean"
    assert types["zipcode"] == "long" and types["salary"] == "double"


def test_the_pyfunc_answers_raw_rows_with_gaps_and_an_unseen_category(registered, mlflow_server, loans):
    result, *_ = registered
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{result.version}")
    rows = loans.drop(columns=["approved"]).iloc[:6].copy()
    rows.loc[rows.index[0], "car"] = "make 99"              # never seen in training
    rows.loc[rows.index[1], "commission"] = np.nan           # a gap where training had gaps
    rows.loc[rows.index[2], "education"] = None
    answer = model.predict(rows)
    assert list(answer.columns) == ["prediction", "label", "probability_False", "probability_True"]
    assert answer["label"].isin([False, True]).all() and np.allclose(
        answer[["probability_False", "probability_True"]].sum(axis=1), 1, atol=1e-5)
    loaded = load_version(NAME, result.version, mlflow_server)
    prepared = loaded.preparation.transform(rows)
    assert prepared.other == {"car": 1} and prepared.imputed["commission"] >= 1
    direct = loaded.outputs(prepared.x)
    assert np.array_equal(direct[:, 1].astype("float64"), answer["probability_True"].to_numpy())  # one preparation


def test_a_mixed_version_reproduces_bit_for_bit(registered, mlflow_server):
    result, settings, _, _ = registered
    again = reproduce(NAME, result.version, settings, Registry(mlflow_server))
    assert again.identical, (again.registered_weights_sha256, again.reproduced_weights_sha256)


def test_handoff_models_shows_each_versions_columns(registered, mlflow_server, tmp_path):
    shown = subprocess.run([str(Path(sys.executable).with_name("handoff")), "models", NAME, "--tracking-uri",
                            mlflow_server, "--home", str(tmp_path), "--no-lineage"], capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "numeric salary, commission, age, house_value, house_years, loan; categorical education, car, " \
           "zipcode, senior" in " ".join(shown.stdout.split())


def test_gaps_are_refused_when_asked_and_a_missing_label_always_is(ray_local, mlflow_server, loans, tmp_path):
    data = write_parquet(loans, tmp_path / "loans.parquet")
    name = "loans-refused"
    with pytest.raises(DataError, match="'commission' has .* NaN/missing value.*dataset.missing: refuse"):
        tune_and_register(loans_config(str(data), "dataset.missing=refuse", name=name), settings_for(tmp_path),
                          mlflow_server)
    unlabelled = write_parquet(loans.assign(approved=loans["approved"].astype(object).where(loans.index > 2, None)),
                               tmp_path / "unlabelled.parquet")
    with pytest.raises(DataError, match="label 'approved' is missing in 3 row"):
        tune_and_register(loans_config(str(unlabelled), name=name), settings_for(tmp_path), mlflow_server)
    assert not MlflowClient(mlflow_server).search_registered_models(f"name = '{name}'")  # nothing registered


# --- served over HTTP, and scored in batch -----------------------------------------------------------
ROWS = 6


def raw_rows(loans: pd.DataFrame) -> pd.DataFrame:
    """Held-out rows as a client has them: a gap in each kind of column and a car never seen."""
    rows = loans.drop(columns=["approved"]).iloc[-ROWS:].reset_index(drop=True).astype(object)
    rows.loc[0, "car"] = "make 99"
    rows.loc[1, "commission"] = None
    rows.loc[2, "education"] = None
    rows.loc[3, "house_value"] = None
    return rows.where(rows.notna(), None)


def oip_columns(rows: pd.DataFrame) -> dict:
    datatypes = {"education": "BYTES", "car": "BYTES", "senior": "BOOL", "zipcode": "INT64"}
    return {"id": "mixed-1", "inputs": [
        {"name": c, "shape": [len(rows)], "datatype": datatypes.get(c, "FP64"),
         "data": [None if v is None else (bool(v) if c == "senior" else int(v) if c in ("zipcode", "age", "house_years")
                                          else v if isinstance(v, str) else float(v)) for v in rows[c]]}
        for c in rows.columns]}


@pytest.fixture(scope="module")
def served(registered, mlflow_server, tmp_path_factory):
    from serving import ServingControl, load_serving_config

    from .conftest import free_port

    result, settings, _, _ = registered
    port = free_port()
    live = tmp_path_factory.mktemp("mixed-live")
    cfg = load_serving_config(None, [f"gateway.port={port}", "live_log.flush_seconds=0.5", "gateway.cpus=0.1",
                                     "version_defaults.cpus=0.1"], environ={})
    control = ServingControl(Registry(mlflow_server), cfg, str(live))
    control.serve_model(NAME)
    yield control, port, live, result
    control.unserve(NAME)


def test_every_way_in_gives_the_pyfunc_s_answer_bit_for_bit(served, mlflow_server, loans, tmp_path):
    """The in-process pyfunc, OIP v2 (binary outputs, and JSON), tritonclient with BYTES tensors, the
    MLflow payloads and `handoff predict` answer the same raw rows alike: one preparation everywhere."""
    import tritonclient.http as httpclient

    from serving import BatchConfig, predict_table

    from .load import call

    control, port, _, result = served
    rows = raw_rows(loans)
    mlflow.set_tracking_uri(mlflow_server)
    typed = rows.astype({**{c: "float64" for c in ("salary", "commission", "house_value", "loan")},
                         **{c: "int64" for c in ("age", "zipcode", "house_years")}, "senior": bool})
    import torch

    torch.set_num_threads(1)  # as a replica and a batch actor predict: the same rows in the same shape and
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}/{result.version}")  # threads give the same bits

    def expected(index) -> np.ndarray:
        return pyfunc.predict(typed.iloc[index].reset_index(drop=True))["probability_True"].to_numpy(dtype=np.float32)

    p_true = expected(list(range(ROWS)))

    body = oip_columns(rows)
    status, headers, answer = call(port, f"/v2/models/{NAME}/infer", body)
    assert status == 200 and answer["id"] == "mixed-1", answer
    probability = np.asarray(next(o for o in answer["outputs"] if o["name"] == "probability")["data"]).reshape(ROWS, 2)
    assert np.allclose(probability[:, 1], p_true, atol=1e-7)  # JSON answers carry 7 decimals

    complete = rows.iloc[[0, 4, 5]].reset_index(drop=True)  # tritonclient sends no nulls
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    for binary in (True, False):
        inputs = []
        for c in complete.columns:
            kind = {"education": "BYTES", "car": "BYTES", "senior": "BOOL", "zipcode": "INT64", "age": "INT64",
                    "house_years": "INT64"}.get(c, "FP64")
            dtype = {"BYTES": np.object_, "BOOL": np.bool_, "INT64": np.int64, "FP64": np.float64}[kind]
            tensor = httpclient.InferInput(c, [len(complete)], kind)
            tensor.set_data_from_numpy(complete[c].to_numpy().astype(dtype), binary_data=binary)
            inputs.append(tensor)
        got = client.infer(NAME, inputs, outputs=[httpclient.InferRequestedOutput("probability", binary_data=binary)])
        three = expected([0, 4, 5])
        assert np.array_equal(got.as_numpy("probability")[:, 1], three) if binary else \
            np.allclose(got.as_numpy("probability")[:, 1], three, atol=1e-7), (binary, got.as_numpy("probability"), three)

    for payload in ({"dataframe_split": {"columns": list(rows.columns), "data": body_rows(rows)}},
                    {"dataframe_records": [dict(zip(rows.columns, r)) for r in body_rows(rows)]}):
        status, _, scored = call(port, f"/v2/models/{NAME}/invocations", payload)
        assert status == 200, scored
        assert np.array_equal(np.array([r["probability_True"] for r in scored["predictions"]], dtype=np.float32), p_true)
    # the same rows as pandas writes them to CSV (a gap an empty cell, an integer column with a gap as 3.0)
    status, _, scored = call(port, f"/v2/models/{NAME}/invocations", raw=rows.to_csv(index=False).encode(),
                             headers={"content-type": "text/csv"})
    assert status == 200, scored
    assert np.array_equal(np.array([r["probability_True"] for r in scored["predictions"]], dtype=np.float32), p_true)

    source = tmp_path / "rows.parquet"
    pq_write(rows.assign(row_id=range(ROWS)), source)
    done = predict_table(Registry(mlflow_server), NAME, str(source), str(tmp_path / "scored"),
                         config=BatchConfig(actors=1, cpus_per_actor=0.5), progress=False)
    assert done.rows_out == ROWS
    scored = pd.read_parquet(tmp_path / "scored").sort_values("row_id")
    assert np.array_equal(scored["probability_True"].to_numpy(dtype=np.float32), p_true)


def body_rows(rows: pd.DataFrame) -> list[list]:
    return [[None if v is None else (v.item() if hasattr(v, "item") else v) for v in r] for r in rows.itertuples(index=False)]


def pq_write(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame.convert_dtypes(), preserve_index=False), path)


def test_metadata_bad_input_unseen_counts_and_the_live_log_s_raw_values(served, loans):
    import pyarrow.dataset as ds

    from .load import call

    control, port, live, _ = served
    status, _, meta = call(port, f"/v2/models/{NAME}")
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert inputs["education"]["datatype"] == "BYTES" and "bachelor" in inputs["education"]["parameters"]["categories"]
    assert inputs["senior"]["datatype"] == "BOOL" and inputs["zipcode"]["datatype"] == "INT64"
    body = oip_columns(raw_rows(loans))
    wrong = json.loads(json.dumps(body))
    next(t for t in wrong["inputs"] if t["name"] == "salary")["data"][0] = "a lot"
    status, _, refused = call(port, f"/v2/models/{NAME}/infer", wrong)
    assert status == 422 and "'salary' takes numbers" in refused["error"], refused
    missing = {"inputs": [t for t in body["inputs"] if t["name"] != "car"]}
    status, _, refused = call(port, f"/v2/models/{NAME}/infer", missing)
    assert status == 422 and "missing column(s) ['car']" in refused["error"]
    for i in range(3):
        body["id"] = f"mixed-log-{i}"
        assert call(port, f"/v2/models/{NAME}/infer", body)[0] == 200
    counts = {(c["what"]): c["n"] for c in control.describe()["gateway"]["counts"]}
    assert counts["unseen"] >= 3 and counts["imputed"] >= 9  # make 99 each time; three gaps each time
    control.unserve(NAME)  # the gateway writes its live log
    logged = ds.dataset(str(live / f"model={NAME}"), partitioning="hive").to_table()
    assert str(logged.schema.field("car").type).startswith("dictionary<values=string")
    row = logged.filter(ds.field("request_id") == "mixed-log-0").to_pylist()[0]
    assert row["car"] == "make 99" and row["commission"] is not None and row["education"] is not None
    gap = logged.filter(ds.field("request_id") == "mixed-log-0#1").to_pylist()[0]
    assert gap["commission"] is None  # as received: the gap, not the median it was answered with
    control.serve_model(NAME)
