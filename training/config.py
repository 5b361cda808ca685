"""The typed experiment configuration: one YAML file per experiment (see configs/shuttle.yaml).

Every model rejects unknown keys, so a typo fails at load time with the field's dotted path.
`ExperimentConfig` is built once at the entry point (`training.config_loader.load_config`) and
passed down; nothing below it reads files or the environment.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.placement import RESOURCES_HELP, Resources

_STRICT = ConfigDict(extra="forbid", frozen=True)


ColumnKind = Literal["numeric", "categorical"]
#: dataset fields added after versions had been registered with hashes of their configs
LATER_DATASET_DEFAULTS = {"kinds": {}, "missing": "impute", "min_frequency": 5, "max_categories": 100}


def _column_name(value, where: str):
    """A column name as the YAML gave it: text as is, a whole number as its digits; a boolean or a
    fraction refused (ValueError) asking for quotes."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{where}: {value!r} is not a column name: YAML read an unquoted "
                         f"{'yes/no/on/off/true/false' if isinstance(value, bool) else 'number'} as "
                         f"{type(value).__name__}; quote the column's name as the data spells it")
    return str(value) if isinstance(value, int) else value


def _column_names(value, where: str):
    """`_column_name` over a label, a list of features or a mapping of features to kinds."""
    if isinstance(value, list):
        return [_column_name(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {_column_name(k, f"{where}: key {k!r}"): v for k, v in value.items()}
    return _column_name(value, where)


class DatasetConfig(BaseModel):
    """Where the rows come from and what they must look like."""

    model_config = _STRICT

    uri: str = Field(description="Parquet file or directory: a local path, any pyarrow filesystem "
                     "URI (s3://, gs://, hdfs://, file://), or builtin://shuttle")
    label: str = Field(description="label column: class ids 0..K-1, booleans or class names (strings), or the "
                       "number to predict (regression; see `task`)")
    features: list[str] = Field(min_length=1, description="feature columns, in model input order; a mapping "
                                "`name: numeric | categorical` declares kinds (otherwise inferred from the data)")
    kinds: dict[str, ColumnKind] = Field(default_factory=dict, description="declared column kinds (the mapping "
                                         "form of `features` fills this); a column not named is inferred")
    missing: Literal["impute", "refuse"] = Field(
        default="impute", description="a missing feature value: imputed by the model (numeric: the training "
        "median plus a missing indicator; categorical: a category of its own), or refused as before")
    min_frequency: int = Field(default=5, ge=1, description="a category seen fewer times in the training split "
                               "shares the 'other' bucket with values never seen")
    max_categories: int = Field(default=100, ge=1, description="at most this many of a column's most frequent "
                                "categories get an input of their own; the rest are 'other'")
    validation_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)
    max_rows: int | None = Field(default=None, gt=0, description="use a seeded subset of this many rows")

    @model_validator(mode="before")
    @classmethod
    def _features_as_mapping(cls, data: Any) -> Any:
        """`features: {name: kind, ...}` is the list of names (in that order) plus declared kinds. Column
        names YAML read as whole numbers are taken as their digits (`features: [2019]` is the column
        "2019"; YAML reads 0123 as 83, so quote a name that starts with 0); one it read as a boolean or a
        fraction is refused, asking for quotes (which of yes, Yes, on, true was written is lost)."""
        if isinstance(data, dict):
            data = {**data, **{key: _column_names(data[key], f"dataset.{key}") for key in ("features", "label", "kinds")
                               if key in data}}
        if isinstance(data, dict) and isinstance(data.get("features"), dict):
            declared = data["features"]
            data = {**data, "features": list(declared),
                    "kinds": {**dict(data.get("kinds") or {}), **{k: v for k, v in declared.items() if v is not None}}}
        return data

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({f for f in v if v.count(f) > 1})
        if dup:
            raise ValueError(f"duplicate feature columns: {dup}")
        return v

    @model_validator(mode="after")
    def _fractions(self) -> DatasetConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError("validation_fraction + test_fraction must leave at least 10% for training")
        if self.label in self.features:
            raise ValueError(f"label column {self.label!r} is also listed as a feature")
        unknown = sorted(set(self.kinds) - set(self.features))
        if unknown:
            raise ValueError(f"kinds are declared for column(s) that are not features: {unknown}")
        return self


class ModelConfig(BaseModel):
    """The model family (or a user factory) and its fixed parameters."""

    model_config = _STRICT

    family: str = Field(default="mlp", description="a built-in family ('mlp') or 'package.module:callable'")
    params: dict[str, Any] = Field(default_factory=dict, description="fixed factory parameters")
    code_paths: list[str] = Field(default_factory=list,
                                  description="extra source dirs packaged with the model (user factories)")
    requirements: list[str] = Field(default_factory=list, description=(
        "pip requirement strings the model's own code needs beyond Handoff (e.g. 'scikit-learn>=1.5'): "
        "trials, the registered model, its replicas, batch actors, reproduce and retraining jobs run with "
        "them, installed by Ray where the cluster lacks them"))

    @field_validator("requirements")
    @classmethod
    def _pip_requirements(cls, value: list[str]) -> list[str]:
        from training.environment import check_requirements

        return check_requirements(value)


class TrainConfig(BaseModel):
    """Fixed optimiser parameters; a search-space entry with the same name overrides one."""

    model_config = _STRICT

    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=256, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    loss: Literal["mse", "huber", "l1"] | None = Field(
        default=None, description="regression only: what training minimises on the standardised target "
        "(default mse; huber with delta one standard deviation); classification always uses cross-entropy")


class Choice(BaseModel):
    model_config = _STRICT
    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


class Grid(BaseModel):
    model_config = _STRICT
    type: Literal["grid"]
    values: list[Any] = Field(min_length=1)


class Uniform(BaseModel):
    model_config = _STRICT
    type: Literal["uniform", "loguniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


class RandInt(BaseModel):
    model_config = _STRICT
    type: Literal["randint"]
    low: int
    high: int = Field(description="exclusive")

    @model_validator(mode="after")
    def _bounds(self) -> RandInt:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


Distribution = Annotated[Choice | Grid | Uniform | RandInt, Field(discriminator="type")]


class SchedulerConfig(BaseModel):
    """ASHA stops weak trials early; FIFO runs every trial to the end."""

    model_config = _STRICT

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(default=1, ge=1, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: float = Field(default=3, gt=1, description="ASHA: keep 1/reduction_factor per rung")


class SearchConfig(BaseModel):
    model_config = _STRICT

    space: dict[str, Distribution] = Field(default_factory=dict)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    num_samples: int = Field(default=8, ge=1)
    epochs: int = Field(default=10, ge=1, description="maximum epochs per trial")
    metric: Literal["val_loss", "val_accuracy", "val_rmse", "val_mae", "val_r2"] | None = Field(
        default=None, description="what picks the best trial: default val_loss for classification, val_rmse "
        "for regression; val_accuracy is classification's, val_rmse/val_mae/val_r2 regression's")
    mode: Literal["min", "max"] | None = Field(default=None, description="follows from the metric (max for "
                                               "accuracy and R², else min); a contradicting mode is refused")
    max_failures: int = Field(default=2, ge=0, description="retries of a failed trial")
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    checkpoints_to_keep: int | None = Field(
        default=None, ge=1, description="per trial; None keeps each improving checkpoint. Setting it "
        "makes Tune snapshot the experiment state at every checkpoint, which costs time on short epochs")

    @model_validator(mode="after")
    def _mode_matches_metric(self) -> SearchConfig:
        if self.metric is not None and self.mode is not None and self.mode != metric_mode(self.metric):
            raise ValueError(f"metric {self.metric!r} is optimised with mode {metric_mode(self.metric)!r}, "
                             f"not {self.mode!r}")
        return self

    def objective(self, task: str) -> tuple[str, str]:
        """(metric, mode) that picks the best trial for `task`: the configured metric, else the task's
        default; a metric of the other task is a `ValueError` naming both."""
        metric = self.metric or TASK_METRICS[task][0]
        if metric != "val_loss" and metric not in TASK_METRICS[task]:
            raise ValueError(f"search.metric {metric!r} does not measure {task}; use one of {list(TASK_METRICS[task])}")
        return metric, metric_mode(metric)


#: each task's search metrics, its default first (val_loss fits both: the training loss on validation)
TASK_METRICS = {"classification": ("val_loss", "val_accuracy"),
                "regression": ("val_rmse", "val_mae", "val_r2", "val_loss")}


def metric_mode(metric: str) -> str:
    """Whether a search metric is maximised (accuracy, R²) or minimised (losses, errors)."""
    return "max" if metric in ("val_accuracy", "val_r2") else "min"


class ResourcesConfig(BaseModel):
    """Resources of one trial (and of the final model's training)."""

    model_config = _STRICT

    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0, description="a fraction shares one GPU between trials")
    custom: Resources = Field(default_factory=dict, description="each trial's " + RESOURCES_HELP)


class MLflowConfig(BaseModel):
    """`None` URIs mean: the server `handoff up` started, else the embedded store under HANDOFF_HOME."""

    model_config = _STRICT

    tracking_uri: str | None = None
    registry_uri: str | None = Field(default=None, description=(
        "not supported apart from the tracking server: set only to the tracking URI, or leave out"))
    experiment: str | None = Field(default=None, description="MLflow experiment; default: handoff-<name>")

    @model_validator(mode="after")
    def _one_registry(self) -> "MLflowConfig":
        """Versions live in the tracking server's own registry: serving, the monitor, batch inference,
        `handoff models` and the loop read them there, so a registry set apart would register versions
        none of them find (it was honoured at registration only); refused, naming why."""
        if self.registry_uri is not None and self.registry_uri != self.tracking_uri:
            raise ValueError(f"mlflow.registry_uri {self.registry_uri!r}: a model registry apart from the tracking "
                             "server is not supported (serving, the monitor, batch inference and the loop read "
                             "versions from the tracking server's registry); leave registry_uri out")
        return self


class ExperimentConfig(BaseModel):
    """One experiment: data, model, search, resources, seed and tracking."""

    model_config = _STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="registered model name")
    seed: int = Field(default=0, ge=0)
    dataset: DatasetConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    mlflow: MLflowConfig = Field(default_factory=MLflowConfig)
    storage_path: str | None = Field(default=None, description="Tune results; default HANDOFF_HOME/tune")
    task: Literal["classification", "regression"] | None = Field(
        default=None, description="what the label is: classes, or a number to predict; left out, inferred only "
        "where the data leaves no doubt (training/task.py), else refused asking for it")

    @model_validator(mode="after")
    def _space_keys_are_not_fixed_twice(self) -> ExperimentConfig:
        both = sorted(set(self.search.space) & set(self.model.params))
        if both:
            raise ValueError(f"search.space and model.params both set {both}: keep one")
        if self.task is not None:
            self.search.objective(self.task)
            self.check_loss(self.task)
        return self

    def check_loss(self, task: str) -> None:
        """`train.loss` is regression's choice; set for a classifier it is a `ValueError`."""
        if self.train.loss is not None and task != "regression":
            raise ValueError(f"train.loss {self.train.loss!r} is for regression; a classifier trains on cross-entropy")

    @property
    def experiment_name(self) -> str:
        return self.mlflow.experiment or f"handoff-{self.name}"

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the config: two runs with equal hashes asked for the same work."""
        dumped = self.model_dump(mode="json")
        for key, default in LATER_DATASET_DEFAULTS.items():  # left out at their defaults: earlier configs keep their hash
            if dumped["dataset"].get(key) == default:
                dumped["dataset"].pop(key)
        if dumped.get("task") is None:  # left out: earlier configs keep their hash
            dumped.pop("task", None)
        dumped["resources"].pop("custom", None)  # where trials run is not what they compute
        if not dumped["model"].get("requirements"):  # left out when empty: earlier configs keep their hash
            dumped["model"].pop("requirements", None)
        if dumped["train"].get("loss") is None:
            dumped["train"].pop("loss", None)
        search = dumped["search"]  # the metric left out: as the classification default always was
        if search.get("metric") is None and dumped.get("task") != "regression":
            search["metric"] = "val_loss"
        if search.get("mode") is None and search.get("metric") is not None:
            search["mode"] = metric_mode(search["metric"])
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
