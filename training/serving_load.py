"""Load a registered version for serving, onto the device its replica was given (MLflow pyfunc)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import numpy as np
import pandas as pd

from training.contract import LoadedVersion, probability_columns
from training.task import CLASSIFICATION


def load_version(name: str, version: int, tracking_uri: str, registry_uri: str | None = None,
                 device: str = "cpu") -> LoadedVersion:
    """`models:/NAME/V` loaded once, its weights on `device` (the model reads it from its pyfunc
    `model_config`). Versions registered before their answer function existed answer through the
    pyfunc frame API; versions whose loader predates `model_config` choose the GPU only where Ray made one
    visible to the process."""
    with _store(tracking_uri, registry_uri or tracking_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{int(version)}", model_config={"device": device})
    python_model = loaded.unwrap_python_model()
    features = tuple(python_model.features)
    # versions registered before class names were kept: ids 0..K-1
    classes = tuple(getattr(python_model, "classes", None) or range(int(python_model.num_classes)))
    # a Handoff torch version answers through its scorer (picklable without MLflow: batch inference
    # ships it to its actors); others through their own predict_proba or the pyfunc frame API
    outputs = (getattr(python_model, "scorer", None) or getattr(python_model, "predict_proba", None)
               or _proba_from_frame(loaded, features, classes))
    return LoadedVersion(name=name, version=int(version), features=features, classes=classes,
                         device=weights_device(python_model, device), outputs=outputs,
                         preparation=getattr(python_model, "preparation", None),
                         task=getattr(python_model, "task", CLASSIFICATION))


@contextmanager
def _store(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs pointed at this store while a version loads,
    then put back as the caller had them: `models:/` URIs resolve only through those globals, and a
    library call (batch inference from a notebook, a test) must not re-point the caller's MLflow.
    MLflow's setters also write MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI, which are restored too."""
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = (tracking_state._tracking_uri, registry_state._registry_uri, {n: os.environ.get(n) for n in names})
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        tracking_state._tracking_uri, registry_state._registry_uri = saved[0], saved[1]
        for name, value in saved[2].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _proba_from_frame(loaded, features: tuple[str, ...], classes: tuple):
    columns = probability_columns(classes)

    def proba(x: np.ndarray) -> np.ndarray:
        out = loaded.predict(pd.DataFrame(x, columns=list(features)))
        return out[columns].to_numpy(dtype=np.float32)
    return proba


def weights_device(python_model, assigned: str) -> str:
    """Where the loaded model's weights really are (its first parameter's device), so a GPU replica
    whose model stayed on the CPU is visible; `assigned` when the model exposes no torch module."""
    parameters = getattr(getattr(python_model, "model", None), "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return str(first.device) if first is not None else assigned
