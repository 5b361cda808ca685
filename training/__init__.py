"""Training half of Handoff: data, models, Ray Tune search, MLflow tracking and registry.

The public API is exported here, imported on first use: a Tune trial imports `training.trial`,
and pulling MLflow into every trial worker would add seconds to each worker's start. Importing
this package starts nothing. Serving, monitoring and the CLI import only these names:

- the registry (`Registry`, aliases, `VersionInfo`), used by serving, monitoring and the CLI;
- the training→serving contract (`load_version`, how answers are named), used by replicas and batch;
- how a version prepares raw columns, and its environment (requirements, core versions);
- what a version was trained on (`TrainingView`, `view_of`, `training_view`: monitoring profiles it);
- what the CLI runs: `load_config`, `check_model` (a model every trial would fail on, refused before the
  search), `tune_and_register` (search and registration), `load_data`,
  `reproduce`, and the retraining job's steps (`retrain_frame`, `retrain_config`, `split_holdout`,
  `gate_verdict`), with the errors they raise.
"""

from __future__ import annotations

import importlib

#: public name → the module that defines it
_EXPORTS = {
    **dict.fromkeys(["CHALLENGER", "CHAMPION", "Registry", "RegistryError", "VersionInfo",
                     "alias_for_new_version"], "training.registry"),
    # the training→serving contract: what a replica loads and how answers are named
    **dict.fromkeys(["LoadedVersion", "class_labels", "predicted_class", "predicted_values", "prediction_frame",
                     "probability_columns"],
                    "training.contract"),
    "load_version": "training.serving_load",
    **dict.fromkeys(["CLASSIFICATION", "REGRESSION"], "training.task"),
    # how a version prepares raw columns (every caller applies the one inside the model)
    **dict.fromkeys(["ColumnError", "Preparation"], "training.columns"),
    # a version's environment: its extra requirements and the core versions that can change its answers
    **dict.fromkeys(["DRIFT_ACCEPTED_TAG", "Difference", "REQUIREMENTS_TAG", "RequirementError", "absent",
                     "accepted", "describe", "difference_in_words", "differences", "in_words", "installed_versions",
                     "recorded_core", "recorded_requirements", "this_environment", "unaccepted", "unmet"],
                    "training.environment"),
    # what a version was trained on (monitoring profiles it)
    **dict.fromkeys(["TrainingView", "training_view", "view_of"], "training.views"),
    # what the CLI runs: a config, a search and its registration, a reproduction, a retraining's steps
    "load_config": "training.config_loader",
    "DataError": "training.prepare",
    "check_model": "training.trial",
    **dict.fromkeys(["SearchFailed", "SearchInterrupted", "latest_experiment", "load_data", "tune_and_register"],
                    "training.pipeline"),
    **dict.fromkeys(["DataChanged", "recorded_config", "reproduce"], "training.reproduction"),
    **dict.fromkeys(["gate_verdict", "retrain_config", "retrain_frame", "split_holdout"], "training.retrain"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # not cluster.lazy: this package travels inside every registered model (its pyfunc code) and
    # must import where the rest of Handoff is not installed
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
