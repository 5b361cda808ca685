"""The Ray Data side of batch inference: the actor that scores batches, and the task that picks the
rows it may not score.

`VersionPredictor` is a callable class, so `map_batches` runs it in an actor pool: each actor
holds the version once (shipped by the driver, which loaded it with `training.load_version`, the
same loader as a serving replica, or else loaded from the registry), on the GPU Ray assigned it or
on the CPU, and turns Arrow batches into output batches (`batch_schema`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from serving.batch_schema import META_DEVICE, META_NODE, feature_matrix, invalid_rows, output_table
from serving.device import replica_device


class InvalidFeatureRows(ValueError):
    """A batch holds rows with NaN, infinite or null features and the run refuses them."""


class VersionPredictor:
    """One actor of the pool: the version loaded once, then `__call__` per batch."""

    def __init__(self, name: str, version: int, tracking_uri: str, registry_uri: str | None,
                 carry: Sequence[str], metadata: dict[str, str], skip_invalid: bool, threads: int = 1,
                 shipped: list | None = None):
        """`shipped`: `[ObjectRef]` of the version the driver loaded on the CPU, where it is portable
        (`LoadedVersion.portable`): moved to this actor's device, without MLflow (importing it and
        loading the artifacts were ~1.5 s of each actor's start here). Else the version is loaded
        from the registry, as a serving replica loads it."""
        import ray
        import torch

        torch.set_num_threads(max(1, int(threads)))
        device = replica_device(ray.get_gpu_ids())
        if shipped:
            self.model = ray.get(shipped[0]).on(device)
        else:
            from training import load_version

            self.model = load_version(name, int(version), tracking_uri, registry_uri, device=device)
        self.carry, self.skip_invalid = list(carry), skip_invalid
        # every file says where its rows were predicted (the node, the device the weights are on)
        self.metadata = {**metadata, META_NODE: ray.get_runtime_context().get_node_id(),
                         META_DEVICE: self.model.device}

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = feature_matrix(batch, self.model.features)
        bad = invalid_rows(x)
        if bad.any():
            if not self.skip_invalid:
                raise InvalidFeatureRows(f"{int(bad.sum())} row(s) of a batch have NaN, infinite or null features")
            keep = ~bad
            batch, x = batch.filter(pa.array(keep)), x[keep]
        proba = self.model.predict_proba(np.ascontiguousarray(x)) if len(x) else \
            np.zeros((0, self.model.num_classes), dtype=np.float32)
        return output_table(batch.select(self.carry), proba, self.model.classes, self.model.version, self.metadata)


def rejected_rows(batch: pa.Table, features: Sequence[str]) -> pa.Table:
    """The rows of `batch` that cannot be scored, every input column kept (the rejected-rows file)."""
    return batch.filter(pa.array(invalid_rows(feature_matrix(batch, features))))


def invalid_count(batch: pa.Table, features: Sequence[str]) -> dict[str, np.ndarray]:
    """How many rows of `batch` cannot be scored (summed over the table to name the count)."""
    return {"invalid": np.array([int(invalid_rows(feature_matrix(batch, features)).sum())], dtype=np.int64)}
