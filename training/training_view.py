"""What a version was trained on, for whoever profiles it (monitoring), without importing them.

`TrainingView` carries the training split, the model's class probabilities for it, the feature
order, the classes, the data fingerprint and the seed. Registration hands one to the `on_registered`
hook of `tune_and_register`; `training_view` rebuilds it later for a version registered before
(the recorded config and data, refused when the data changed, and the registered model itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cluster.settings import Settings


@dataclass(frozen=True)
class TrainingView:
    name: str
    version: int
    x_train: np.ndarray
    proba_train: np.ndarray
    features: list[str]
    classes: list
    fingerprint: str
    seed: int
    y_val: np.ndarray | None = None      # the validation split's labels and the model's probabilities for
    proba_val: np.ndarray | None = None  # it: where calibration is checked (None: not available)


def training_view(name: str, version: int, settings: Settings, registry) -> TrainingView:
    """The view of a registered version: its recorded data read again (refused when the fingerprint
    changed) and the registered model's probabilities for the training split."""
    from training.pipeline import load_data
    from training.reproduce import DataChanged, recorded_config
    from training.serving_load import load_version

    info = registry.version(name, version)
    cfg = recorded_config(registry, info.run_id)
    data = load_data(cfg, settings)
    recorded = info.lineage.get("data_fingerprint")
    if recorded and data.fingerprint != recorded:
        raise DataChanged(f"the data at {cfg.dataset.uri} changed since {name}/{version} was trained "
                          f"(fingerprint {data.fingerprint[:16]}…, recorded {recorded[:16]}…): no profile of it")
    loaded = load_version(name, version, registry.tracking_uri)
    return TrainingView(name, version, data.x_train, loaded.predict_proba(np.ascontiguousarray(data.x_train)),
                        list(data.features), list(data.classes), data.fingerprint, cfg.seed, data.y_val,
                        loaded.predict_proba(np.ascontiguousarray(data.x_val)))
