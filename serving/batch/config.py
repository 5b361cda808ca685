"""Typed config of batch inference (`handoff predict`): how the actor pool is sized and what it does
with rows it cannot score.

Loaded once by the CLI (`configs/predict.yaml` when present, then `HANDOFF_PREDICT__A=v`
variables, then flags) and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.config_layers import PREDICT_ENV_PREFIX, load_layered


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(1024, ge=1, description="rows per model call")
    actors: int | None = Field(None, ge=1, description="actors in the pool, each loading the model once; "
                               "null: from one up to as many as the cluster's free CPUs/GPUs allow")
    cpus_per_actor: float | None = Field(None, gt=0, description="CPUs each actor asks Ray for (its torch threads); "
                                         "null: one, or what the cluster has free beside a read task when less")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs (or a share of one) each actor asks Ray for; "
                                  "an actor given one predicts on it")
    on_invalid: Literal["refuse", "skip"] = Field("refuse", description="rows with a NaN, infinite or null "
                                                  "feature: refuse the run (nothing written), or skip them "
                                                  "and write them to the rejected-rows directory")
    columns: list[str] | None = Field(None, description="input columns carried into the output (ids); "
                                      "null: every column that is not a feature")
    experiment: str = Field("handoff-batch", min_length=1, description="MLflow experiment of the runs")

    @model_validator(mode="after")
    def _whole_gpus_or_one_share(self):
        if self.gpus_per_actor > 1 and not float(self.gpus_per_actor).is_integer():
            raise ValueError(f"gpus_per_actor {self.gpus_per_actor}: more than one GPU must be a whole number")
        return self


def load_batch_config(path: str | Path | None, overrides: list[str] = (), environ=None) -> BatchConfig:
    """The batch config from `path` (if given), `HANDOFF_PREDICT__*` and `field=value` overrides."""
    return load_layered(BatchConfig, path, overrides, environ, env_prefix=PREDICT_ENV_PREFIX)
