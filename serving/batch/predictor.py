"""The Ray Data side of batch inference: the actor that scores batches, and the task that picks the
rows it may not score.

`VersionPredictor` is a callable class, so `map_batches` runs it in an actor pool: each actor
holds the version once (shipped by the driver, which loaded it with `training.load_version`, the
same loader as a serving replica, or else loaded from the registry), on the GPU Ray assigned it or
on the CPU, and turns Arrow blocks into output blocks (`schema`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from serving.batch.schema import INVALID, META_DEVICE, META_NODE, invalid_rows, output_table, prepared_matrix
from serving.device import replica_device


class InvalidFeatureRows(ValueError):
    """A batch holds rows with infinite values, or gaps the version does not impute, and the run refuses them."""


class VersionPredictor:
    """One actor of the pool: the version held once, then `__call__` per block."""

    def __init__(self, name: str, version: int, tracking_uri: str, registry_uri: str | None,
                 carry: Sequence[str], metadata: dict[str, str], skip_invalid: bool, threads: int = 1,
                 shipped: list | None = None, batch_size: int = 1024):
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
        self.carry, self.skip_invalid, self.batch_size = list(carry), skip_invalid, int(batch_size)
        # every file says where its rows were predicted (the node, the device the weights are on)
        self.metadata = {**metadata, META_NODE: ray.get_runtime_context().get_node_id(),
                         META_DEVICE: self.model.device}

    def __call__(self, block: pa.Table) -> pa.Table:
        """The scored rows of one block (Ray Data hands the actor whole blocks: one feature matrix,
        one validity check and one output table per block), the model called `batch_size` rows at
        a time."""
        bad = invalid_rows(block, self.model.preparation)
        if bad.any():
            if not self.skip_invalid:
                raise InvalidFeatureRows(f"{int(bad.sum())} row(s) of a block have {INVALID}")
            block = block.filter(pa.array(~bad))
        x = prepared_matrix(block, self.model.preparation)
        proba = predict_in_batches(self.model.outputs, x, self.batch_size, self.model.n_outputs)
        return output_table(block.select(self.carry), proba, self.model.classes, self.model.version, self.metadata,
                            self.model.task)


def predict_in_batches(outputs: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int,
                       n_outputs: int) -> np.ndarray:
    """`outputs` over the rows of `x`, `batch_size` rows per call (what bounds a GPU's memory),
    stacked in row order; no call for no rows."""
    if not len(x):
        return np.zeros((0, n_outputs), dtype=np.float32)
    x = np.ascontiguousarray(x)
    return np.concatenate([outputs(x[start:start + batch_size]) for start in range(0, len(x), batch_size)])


def rejected_rows(batch: pa.Table, preparation) -> pa.Table:
    """The rows of `batch` that cannot be scored, every input column kept (the rejected-rows file)."""
    return batch.filter(pa.array(invalid_rows(batch, preparation)))


def invalid_count(batch: pa.Table, preparation) -> dict[str, np.ndarray]:
    """How many rows of `batch` cannot be scored (summed over the table to name the count)."""
    return {"invalid": np.array([int(invalid_rows(batch, preparation).sum())], dtype=np.int64)}
