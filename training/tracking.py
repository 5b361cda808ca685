"""MLflow side effects of a search: its experiment and parent run, and the final pyfunc model."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from training.config import ExperimentConfig
from training.lineage import installed_packages
from training.pyfunc import HandoffTorchModel, model_spec

CONFIG_ARTIFACT = "handoff/config.json"
MODEL_ARTIFACT = "model"


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The experiment id for `name`, created (with `artifact_root` for a local store) if missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def start_search_run(client: MlflowClient, experiment_id: str, cfg: ExperimentConfig, run_name: str,
                     data_fingerprint: str, data_sizes: dict[str, int], columns: dict[str, str] | None = None,
                     imputed: dict[str, int] | None = None) -> str:
    """The parent run of a search: the config, its hash, the data fingerprint and the environment;
    each column's kind (param `columns`) and how many values of each were missing in the rows used
    (metrics `missing_values.COLUMN`: what the model imputes)."""
    run = client.create_run(experiment_id, run_name=run_name, tags={
        "handoff.model": cfg.name, "handoff.role": "search", "handoff.config_hash": cfg.config_hash(),
        "handoff.data_fingerprint": data_fingerprint,
    })
    run_id = run.info.run_id
    client.log_param(run_id, "seed", cfg.seed)
    client.log_param(run_id, "scheduler", cfg.search.scheduler.type)
    client.log_param(run_id, "num_samples", cfg.search.num_samples)
    client.log_param(run_id, "max_epochs", cfg.search.epochs)
    for split, n in data_sizes.items():
        client.log_param(run_id, f"rows_{split}", n)
    if columns is not None:
        client.log_param(run_id, "columns", json.dumps(columns)[:6000])
    for column, n in (imputed or {}).items():
        client.log_metric(run_id, f"missing_values.{column}", n)
    client.log_dict(run_id, cfg.model_dump(mode="json"), CONFIG_ARTIFACT)
    client.log_text(run_id, installed_packages(), "handoff/requirements.txt")
    return run_id


def _signature(example: pd.DataFrame, example_output: pd.DataFrame, spec: dict):
    """MLflow's signature of the raw columns with their real types (string, boolean, long, double:
    MLflow's pyfunc then refuses, naming the column, a float sent for an integer column), every input
    optional where the model fills a gap in (`dataset.missing: impute`): MLflow's own clients then
    send rows with gaps."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inferred = infer_signature(example, example_output)
    preparation = spec.get("preparation")
    if not preparation or preparation.get("refuse_missing"):
        return inferred
    inputs = Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs])
    return ModelSignature(inputs, inferred.outputs)


def log_model(run_id: str, tracking_uri: str, state_dict: dict, spec: dict, example: pd.DataFrame,
              example_output: pd.DataFrame, code_paths: list[str], requirements: list[str] = ()) -> str:
    """Log the pyfunc model (signature, input example, the `training` package) in `run_id`; its pip
    requirements are Handoff's pinned core and the model's own `requirements` (MLflow's tools, such as
    `mlflow models serve --env-manager`, then build the same environment)."""
    mlflow.set_tracking_uri(tracking_uri)
    training_pkg = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory() as d:
        weights, spec_path = Path(d) / "weights.pt", Path(d) / "spec.json"
        torch.save(state_dict, weights)
        spec_path.write_text(json.dumps(spec, indent=2))
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # the integer `prediction` column is never missing; MLflow's generic hint does not apply
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT, python_model=HandoffTorchModel(),
                artifacts={"weights": str(weights), "spec": str(spec_path)},
                code_paths=[training_pkg, *code_paths],
                signature=_signature(example, example_output, spec),
                input_example=example,
                pip_requirements=[*_pinned_requirements(), *requirements],
                # the loader names the device (a replica's or batch actor's GPU); None: the model's choice
                model_config={"device": None},
            )
    return info.model_uri


def _pinned_requirements() -> list[str]:
    import importlib.metadata as md

    return [f"{pkg}=={md.version(pkg)}" for pkg in ("mlflow", "torch", "pandas", "numpy", "cloudpickle")]


__all__ = ["CONFIG_ARTIFACT", "ensure_experiment", "log_model", "model_spec", "start_search_run"]
