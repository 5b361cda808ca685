"""Reference profiles stored with their versions in MLflow (through the registry API training exports)."""

from __future__ import annotations

import numpy as np

from monitoring.reference import ReferenceProfile, build_profile

PROFILE_ARTIFACT = "monitoring/reference_profile.npz"


def save_profile(registry, name: str, version: int, profile: ReferenceProfile) -> None:
    """Store `profile` as an artifact of the version's run."""
    registry.put_version_artifact(name, version, PROFILE_ARTIFACT, profile.to_bytes())


def load_profile(registry, name: str, version: int) -> ReferenceProfile | None:
    """The version's stored profile, or None when it has none (registered before profiles existed)."""
    data = registry.get_version_artifact(name, version, PROFILE_ARTIFACT)
    return ReferenceProfile.from_bytes(data) if data is not None else None


def profile_from_training(x_train: np.ndarray, features: list[str], proba: np.ndarray, classes: list,
                          fingerprint: str, seed: int, categories: dict | None = None, task: str = "classification",
                          predictions_val: np.ndarray | None = None) -> ReferenceProfile:
    """The profile of a version's training split (what registration computes): its numeric columns
    as the data has them (NaN for a gap) and its categorical columns' values; for a regression
    model the reference of its predictions is the validation split's (`predictions_val`)."""
    return build_profile(np.asarray(x_train, dtype=np.float64), features, np.asarray(proba), classes, fingerprint,
                         seed=seed, categories=categories, task=task,
                         predictions=None if predictions_val is None else np.asarray(predictions_val).reshape(-1))
