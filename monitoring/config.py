"""Typed monitoring configuration: windows, the drift test and decision, where the monitor keeps state.

Loaded once by the CLI (`configs/monitoring.yaml` if present, then `HANDOFF_MONITORING__A__B`
variables, then `--set a.b=value` flags) and passed down; no defaults are read anywhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.config_layers import MONITORING_ENV_PREFIX, load_layered
from cluster.placement import RESOURCES_HELP, Resources
from monitoring.loop_config import LoopConfig


class MonitoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="`handoff serve` starts the model's monitor")
    window_rows: int = Field(5_000, ge=10, description="rows of one version in a window")
    window_seconds: float = Field(300.0, gt=0, description="a window closes after this long with fewer rows")
    min_rows: int = Field(200, ge=10, description="fewest rows a window closed by time may have")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance after correction")
    correction: Literal["benjamini-hochberg", "bonferroni", "none"] = "benjamini-hochberg"
    min_shift: float = Field(0.1, ge=0, description="least shift (Wasserstein distance in reference standard "
                             "deviations) a significant feature must show to drift; 0: the test alone")
    tolerance_rate: float = Field(0.001, gt=0, lt=1, description="share of windows whose chance shift may exceed "
                                  "a feature's tolerance (calibrated from the reference at each window size)")
    concept_gap: float = Field(0.05, gt=0, lt=1, description="realised accuracy this far from the estimate "
                               "(from calibrated probabilities) is a concept_drift_suspected event")
    concept_min_labels: int = Field(200, ge=10, description="labelled rows of a window before that comparison")
    persistence: int = Field(3, ge=1, description="drifted windows in a row that declare drift")
    label_windows: int = Field(50, ge=1, description="recent windows per version that late labels still join "
                               "(their row ids are kept)")
    label_max_delay_s: float = Field(86_400.0, gt=0, description="labels sent later than this after the answer "
                                     "are not joined by the monitor (it lets go of older labels: its memory "
                                     "stays bounded); they stay in the label files, for retraining")
    mlflow: bool = Field(True, description="log each window to a monitoring run per model and version in MLflow")
    compact: bool = Field(True, description="merge live-log files every version has read into larger ones")
    compact_min_files: int = Field(16, ge=2, description="small files of a day before they are merged")
    compact_target_rows: int = Field(1_000_000, ge=1000, description="rows of a merged file at most")
    poll_seconds: float = Field(2.0, gt=0, description="how often the monitor looks for new live-log files")
    cpus: float = Field(0.1, gt=0, le=1, description="CPUs the monitor actor reserves")
    resources: Resources = Field(default_factory=dict, description="the monitor actor's " + RESOURCES_HELP)
    loop: LoopConfig = Field(default_factory=LoopConfig, description="the closed loop: retrain, gate, canary, promote")
    state_root: str | None = Field(None, description="where monitor state and events live "
                                   "(default HANDOFF_HOME/monitor; a shared URI on a cluster)")

    @model_validator(mode="after")
    def _rows(self) -> MonitoringConfig:
        if self.min_rows > self.window_rows:
            raise ValueError(f"min_rows ({self.min_rows}) is more than window_rows ({self.window_rows})")
        return self


def load_monitoring_config(path: Path | None, overrides: list[str] = (), environ=None) -> MonitoringConfig:
    """`configs/monitoring.yaml` (optional) → `HANDOFF_MONITORING__A__B=v` variables → `--set a.b=v`."""
    return load_layered(MonitoringConfig, path, overrides, environ, env_prefix=MONITORING_ENV_PREFIX)
