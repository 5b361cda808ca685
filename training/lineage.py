"""Lineage of a registered version: code, data, config, seed, environment and the search behind it."""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
from pathlib import Path

TAG_PREFIX = "handoff."
_VERSIONED = {"torch": "torch", "numpy": "numpy", "ray": "ray", "mlflow": "mlflow"}


def package_versions() -> dict[str, str]:
    """Python, torch, numpy, Ray and MLflow versions of this process."""
    versions = {"python": platform.python_version()}
    for key, dist in _VERSIONED.items():
        try:
            versions[key] = md.version(dist)
        except md.PackageNotFoundError:
            versions[key] = "not installed"
    return versions


def installed_packages() -> str:
    """`name==version` of every installed distribution, sorted: the environment as a requirements file."""
    names = {f"{d.metadata['Name']}=={d.version}" for d in md.distributions() if d.metadata["Name"]}
    return "\n".join(sorted(names, key=str.lower)) + "\n"


def lineage_tags(*, commit: str, dirty: bool, data_fingerprint: str, data_uri: str, config_hash: str,
                 seed: int, versions: dict[str, str], experiment_path: str, trial_id: str,
                 trial_params: str, epochs_trained: int, weights_sha256: str, threads: int,
                 device: str, search_run_id: str, classes: list | None = None,
                 columns: dict[str, str] | None = None, task: str | None = None,
                 requirements: list[str] | None = None, answer_code: str | None = None) -> dict[str, str]:
    """The `handoff.*` tags set on a model version (all strings, as MLflow stores them); `requirements`
    and `answer_code` are its environment (training/environment.py)."""
    tags = {
        "git_commit": commit, "git_dirty": str(dirty).lower(),
        "data_fingerprint": data_fingerprint, "data_uri": data_uri,
        "config_hash": config_hash, "seed": str(seed),
        **{f"{k}_version": v for k, v in versions.items()},
        "tune_experiment_path": experiment_path, "tune_trial_id": trial_id,
        "trial_params": trial_params, "epochs_trained": str(epochs_trained),
        "weights_sha256": weights_sha256, "torch_threads": str(threads), "train_device": device,
        "search_run_id": search_run_id,
    }
    if classes is not None and task != "regression":
        tags["classes"] = json.dumps(list(classes))
    if task is not None:
        tags["task"] = task
    if columns is not None:  # each feature's kind, in input order
        tags["columns"] = json.dumps(columns)
    if requirements is not None:  # what the model's code needs beyond Handoff
        tags["requirements"] = json.dumps(list(requirements))
    if answer_code is not None:  # the digest of the code that prepares rows and computes answers
        tags["answer_code"] = answer_code
    return {TAG_PREFIX + k: v for k, v in tags.items()}
