"""Typed settings of the closed loop: when to retrain, on what, the gate, the canary, the promotion.

A section of the monitoring config (`loop:` in configs/monitoring.yaml, `HANDOFF_MONITORING__LOOP__…`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cluster.placement import RESOURCES_HELP, Resources


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrainPolicyConfig(_Strict):
    on_drift: bool = Field(True, description="retrain when the monitor declares drift")
    min_accuracy: float | None = Field(None, ge=0, le=1, description="retrain when live accuracy over the last "
                                       "accuracy_rows labelled rows falls below this (null: never on accuracy)")
    accuracy_rows: int = Field(500, ge=10, description="labelled rows the live accuracy trigger looks at")
    min_estimated_accuracy: float | None = Field(None, ge=0, le=1, description="retrain when the accuracy the "
                                                 "champion's last window expects from its calibrated probabilities "
                                                 "falls below this, before labels arrive (null: never)")
    max_rmse: float | None = Field(None, gt=0, description="regression: retrain when live RMSE over the last "
                                   "accuracy_rows labelled rows exceeds this (the target's units; null: never)")
    max_rmse_ratio: float | None = Field(None, gt=0, description="regression: retrain when live RMSE exceeds this "
                                         "multiple of the champion's own test RMSE (1.5: half again; null: never)")
    cooldown_s: float = Field(600, ge=0, description="no new retraining this long after one ended")
    max_attempts: int = Field(3, ge=1, description="tries of a failing retraining job per event")
    backoff_s: float = Field(30, ge=0, description="wait before retry k: backoff_s · 2^(k-1)")
    job_timeout_s: float = Field(1800, gt=0, description="a retraining job still running after this long is "
                                 "stopped and counts as failed (a trial the cluster cannot place waits forever)")
    job_resources: Resources = Field(default_factory=dict, description="the retraining job's driver's "
                                     + RESOURCES_HELP + "; its trials ask for the experiment's resources.custom")


class RetrainDataConfig(_Strict):
    recent_rows: int = Field(3000, ge=10, description="most recent labelled live rows the retraining takes")
    holdout_fraction: float = Field(0.3, gt=0, lt=1, description="of those, kept out of training for the gate")
    recent_weight: int = Field(3, ge=1, description="times each recent training row counts (original rows: once)")
    search_samples: int = Field(1, ge=1, description="1: the champion's hyperparameters; more: a short search")
    root: str | None = Field(None, description="where each retraining's table is written (default "
                             "HANDOFF_HOME/retrain; on a cluster a URI every node reaches, such as s3://bucket/"
                             "prefix: the new version's lineage names it, and `handoff reproduce` reads it)")


class GateConfig(_Strict):
    """Classification compares accuracy (differences in points); regression compares RMSE as relative
    changes (0.05: 5% of the champion's RMSE)."""

    min_gain_recent: float = Field(0.0, description="the candidate must beat the champion on the recent held-out "
                                   "rows by more than this: accuracy points, or for regression the relative fall in "
                                   "RMSE")
    max_loss_original: float = Field(0.05, ge=0, description="and may lose at most this much on the champion's "
                                     "original test split: accuracy points, or for regression the relative rise in "
                                     "RMSE")


class CanaryConfig(_Strict):
    """The online decision: an always-valid sequential test of the canary against the live champion
    over the same period (monitoring/sequential.py), checked at every tick without inflating its error."""

    percent: float = Field(20, gt=0, lt=100, description="traffic share of a candidate that passed the gate")
    alpha: float = Field(0.05, gt=0, lt=1, description="chance of promoting a canary worse by the minimum effect, "
                         "and of rolling back one as good as the champion")
    min_effect_errors: float = Field(0.01, gt=0, lt=1, description="error-rate increase worth acting on")
    min_effect_accuracy: float = Field(0.01, gt=0, lt=1, description="live-accuracy loss worth acting on")
    min_requests: int = Field(200, ge=1, description="canary requests before any decision")
    min_effect_mae_ratio: float = Field(0.05, gt=0, description="regression: a rise in live mean absolute error "
                                        "worth acting on, as a share of the champion's test MAE (fixed before the "
                                        "canary starts, as the test needs)")
    min_labels: int = Field(100, ge=1, description="labelled canary rows before any decision on accuracy")
    require_labels: bool = Field(True, description="promote only with evidence on live accuracy (false: error "
                                 "rate alone when no labels come)")
    max_p99_ratio: float = Field(2.0, gt=0, description="guard: roll back when the canary's p99 exceeds the "
                                 "champion's by this factor")
    require_latency: bool = Field(True, description="promote only once both sides' p99 latency is known (the "
                                  "gateways export it every few seconds)")
    latency_warmup_s: float = Field(15.0, ge=0, description="latency is compared from this long after the canary "
                                    "started (its replica's first requests take the Serve handle while the gateway "
                                    "connects to it, and its first forward passes are cold)")
    timeout_s: float = Field(1800, gt=0, description="the longest a canary runs without a decision")
    on_timeout: Literal["rollback", "promote"] = Field("rollback", description="what a canary still without a "
                                                       "decision at timeout_s gets")


class LoopConfig(_Strict):
    enabled: bool = Field(True, description="act on drift: retrain, gate, canary, promote (false: only report)")
    retrain: RetrainPolicyConfig = Field(default_factory=RetrainPolicyConfig)
    data: RetrainDataConfig = Field(default_factory=RetrainDataConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    promotion: Literal["auto", "manual"] = Field("auto", description="manual: stop at the canary; "
                                                 "`handoff promote` finishes it")
    tick_seconds: float = Field(5.0, gt=0, description="how often the loop looks at jobs and the canary")
