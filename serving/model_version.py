"""The `ModelVersion` Serve deployment: one registered version, loaded once per replica.

Each version is its own Serve application (`NAME-vV`), so deploying, resizing or removing one
version never touches the replicas of another (re-running a Serve application from Python gives
every deployment in it a new code version, which restarts them all).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ray import serve

from serving.autoscale import DIRECT_LOAD_METRIC, POLICY_PATH
from serving.config import VersionDeployment, actor_options
from serving.device import replica_device
from serving.endpoints import Registration
from serving.replica_server import ReplicaServer

DEPLOYMENT = "ModelVersion"


def app_name(model: str, version: int) -> str:
    return f"{model}-v{version}"


def served_versions(model: str, apps) -> list[int]:
    """The versions of `model` among Serve application names (the inverse of `app_name`)."""
    prefix = f"{model}-v"
    return sorted(int(a[len(prefix):]) for a in apps if a.startswith(prefix) and a[len(prefix):].isdigit())


@serve.deployment(name=DEPLOYMENT)
class ModelVersion:
    """Loads `models:/NAME/V` once per replica (through `training.load_version`, the one owner of
    the training→serving contract) and answers with its outputs (class probabilities, or predicted
    values)."""

    def __init__(self, model: str, version: int, tracking_uri: str, registry_uri: str | None = None):
        import ray
        import torch

        from training import load_version

        torch.set_num_threads(1)
        self.loaded = load_version(model, int(version), tracking_uri, registry_uri,
                                   device=replica_device(ray.get_gpu_ids()))
        self._proba = self.loaded.outputs
        self._endpoint = ReplicaServer(self._proba, ray.util.get_node_ip_address())
        self._registration = Registration(app_name(model, self.loaded.version), self._endpoint.endpoint())

    def signature(self) -> dict:
        """What the gateway and `handoff status` need: inputs (the raw columns and the preparation
        that makes them this version's input), classes, where the weights are."""
        loaded = self.loaded
        return {"features": list(loaded.features), "classes": list(loaded.classes), "task": loaded.task,
                "num_classes": loaded.num_classes, "device": loaded.device,
                "version": loaded.version, "pid": os.getpid(), "preparation": loaded.preparation.to_json()}

    async def predict(self, x: np.ndarray) -> np.ndarray:
        """The version's outputs for a prepared float32 matrix (the Serve handle path)."""
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
                sizing: VersionDeployment, code_version: str, packages: Sequence[str] = ()):
    """The bound Serve application for one version, sized from the config, its replicas in a runtime
    environment that installs `packages` (what the version needs beyond the cluster's).

    `code_version` pins Serve's deployment version (private `_internal` option: Serve's public
    Python API gives every `serve.run` a random one, which restarts replicas on any change)."""
    options: dict = {
        "ray_actor_options": actor_options(sizing.cpus, sizing.gpus, sizing.resources, packages),
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
