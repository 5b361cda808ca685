"""What a version was trained on, for whoever profiles it (monitoring), without importing them.

`TrainingView` carries the training split, the model's answers for it (class probabilities, or
for regression the predicted values as one column), the feature order, the classes, the task, the
data fingerprint and the seed. Registration hands one to the `on_registered`
hook of `tune_and_register`; `training_view` rebuilds it later for a version registered before
(the recorded config and data, refused when the data changed, and the registered model itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cluster.settings import Settings


@dataclass(frozen=True)
class TrainingView:
    name: str
    version: int
    x_train: np.ndarray      # the numeric feature columns of the training split, as the data has them (NaN: a gap)
    proba_train: np.ndarray
    features: list[str]      # their names
    classes: list
    fingerprint: str
    seed: int
    y_val: np.ndarray | None = None      # the validation split's labels and the model's answers for
    proba_val: np.ndarray | None = None  # it: where calibration is checked (None: not available)
    categories: dict = field(default_factory=dict)  # categorical column → its training values (None: a gap)
    task: str = "classification"         # regression: proba_* are predicted values (rows × 1), y_val numbers


def view_of(name: str, version: int, raw: pd.DataFrame, preparation, proba_train: np.ndarray, classes: list,
            fingerprint: str, seed: int, y_val=None, proba_val=None, task: str = "classification") -> TrainingView:
    """The view of raw training rows (feature columns as the data has them), split into numeric and
    categorical columns the way the live log keeps them, so the monitor compares like with like."""
    features, x, categories = preparation.raw_columns(raw)
    return TrainingView(name, version, x, proba_train, features, list(classes), fingerprint, seed, y_val, proba_val,
                        categories, task)


def training_view(name: str, version: int, settings: Settings, registry) -> TrainingView:
    """The view of a registered version: its recorded data read again (refused when the fingerprint
    changed) and the registered model's probabilities for the training split."""
    from training.pipeline import load_data
    from training.reproduction import DataChanged, recorded_config
    from training.serving_load import load_version

    info = registry.version(name, version)
    cfg = recorded_config(registry, info.run_id)
    data = load_data(cfg, settings)
    recorded = info.lineage.get("data_fingerprint")
    if recorded and data.fingerprint != recorded:
        raise DataChanged(f"the data at {cfg.dataset.uri} changed since {name}/{version} was trained "
                          f"(fingerprint {data.fingerprint[:16]}…, recorded {recorded[:16]}…): no profile of it")
    loaded = load_version(name, version, registry.tracking_uri)
    return view_of(name, version, data.raw_train, data.preparation,
                   loaded.outputs(np.ascontiguousarray(data.x_train)), data.classes, data.fingerprint, cfg.seed,
                   data.y_val, loaded.outputs(np.ascontiguousarray(data.x_val)), data.task)
