"""The `ModelVersion` Serve deployment: one registered version, loaded once per replica.

Each version is its own Serve application (`NAME-vV`), so deploying, resizing or removing one
version never touches the replicas of another (re-running a Serve application from Python gives
every deployment in it a new code version, which restarts them all).
"""

from __future__ import annotations

import os

import numpy as np
from ray import serve

from serving.autoscale import DIRECT_LOAD_METRIC, POLICY_PATH
from serving.config import VersionDeployment
from serving.endpoints import Registration
from serving.replica_server import ReplicaServer

DEPLOYMENT = "ModelVersion"


def app_name(model: str, version: int) -> str:
    return f"{model}-v{version}"


def served_versions(model: str, apps) -> list[int]:
    """The versions of `model` among Serve application names (the inverse of `app_name`)."""
    prefix = f"{model}-v"
    return sorted(int(a[len(prefix):]) for a in apps if a.startswith(prefix) and a[len(prefix):].isdigit())


def replica_device(gpu_ids: list) -> str:
    """The device a replica predicts on: the first GPU Ray assigned it, else the CPU."""
    return "cuda:0" if gpu_ids else "cpu"


def weights_device(python_model, assigned: str) -> str:
    """Where the loaded model's weights really are (its first parameter's device): what `handoff
    status` shows, so a GPU replica whose model stayed on the CPU is visible. `assigned` when the
    model exposes no torch module."""
    parameters = getattr(getattr(python_model, "model", None), "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return str(first.device) if first is not None else assigned


@serve.deployment(name=DEPLOYMENT)
class ModelVersion:
    """Loads `models:/NAME/V` through MLflow's pyfunc loader and predicts class probabilities."""

    def __init__(self, model: str, version: int, tracking_uri: str, registry_uri: str | None = None):
        import mlflow
        import ray
        import torch

        self.model, self.version = model, int(version)
        self.device = replica_device(ray.get_gpu_ids())
        os.environ["HANDOFF_DEVICE"] = self.device  # read by the model's load_context
        torch.set_num_threads(1)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri or tracking_uri)
        loaded = mlflow.pyfunc.load_model(f"models:/{model}/{self.version}")
        python_model = loaded.unwrap_python_model()
        self.features = tuple(python_model.features)
        self.num_classes = int(python_model.num_classes)
        self.device = weights_device(python_model, self.device)
        self._proba = getattr(python_model, "predict_proba", None) or self._proba_from_frame(loaded)
        self._endpoint = ReplicaServer(self._proba, ray.util.get_node_ip_address())
        self._registration = Registration(app_name(model, self.version), self._endpoint.endpoint())

    def _proba_from_frame(self, loaded):
        """Versions registered before `predict_proba` existed: go through the pyfunc frame API."""
        import pandas as pd

        columns = [f"probability_{k}" for k in range(self.num_classes)]

        def proba(x: np.ndarray) -> np.ndarray:
            out = loaded.predict(pd.DataFrame(x, columns=list(self.features)))
            return out[columns].to_numpy(dtype=np.float32)
        return proba

    def signature(self) -> dict:
        return {"features": list(self.features), "num_classes": self.num_classes, "device": self.device,
                "version": self.version, "pid": os.getpid()}

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for a float32 matrix in feature order (the Serve handle path)."""
        return self._proba(x)

    def record_autoscaling_stats(self) -> dict:
        """Requests in flight on the direct path, which Serve's own count does not see."""
        return {DIRECT_LOAD_METRIC: float(self._endpoint.load())}

    def __del__(self):
        """Graceful shutdown: unlisted first, then direct clients are told to go away after their answers."""
        if getattr(self, "_registration", None) is not None:
            self._registration.close()
        if getattr(self, "_endpoint", None) is not None:
            self._endpoint.close()


def version_app(model: str, version: int, tracking_uri: str, registry_uri: str | None,
                sizing: VersionDeployment, code_version: str):
    """The bound Serve application for one version, sized from the config.

    `code_version` pins Serve's deployment version (private `_internal` option: Serve's public
    Python API gives every `serve.run` a random one, which restarts replicas on any change)."""
    options: dict = {
        "ray_actor_options": {"num_cpus": sizing.cpus, "num_gpus": sizing.gpus},
        "max_ongoing_requests": sizing.max_ongoing_requests,
        "health_check_period_s": 5,
        # one log line per request was ~5% of a replica's CPU; the gateway counts requests instead
        "logging_config": {"enable_access_log": False},
    }
    if sizing.autoscaling is not None:
        options["autoscaling_config"] = {**sizing.autoscaling.model_dump(),
                                         "policy": {"policy_function": POLICY_PATH}}
    else:
        options["num_replicas"] = sizing.replicas
    deployment = ModelVersion.options(**options).options(_internal=True, version=code_version)
    return deployment.bind(model, version, tracking_uri, registry_uri)
