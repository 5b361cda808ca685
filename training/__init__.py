"""Training half of Handoff: data, models, Ray Tune search, MLflow tracking and registry.

The public registry API (used by serving, monitoring and the CLI) is exported here, imported on
first use: a Tune trial imports `training.trial`, and pulling MLflow into every trial worker
would add seconds to each worker's start. Importing this package starts nothing.
"""

from __future__ import annotations

import importlib

__all__ = ["CHALLENGER", "CHAMPION", "Registry", "RegistryError", "VersionInfo", "alias_for_new_version"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("training.registry"), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
