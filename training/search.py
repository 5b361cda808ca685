"""Run (or resume) a Ray Tune search over the configured space; every trial is logged to MLflow."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.search.basic_variant import BasicVariantGenerator

from training.config import ExperimentConfig
from training.prepare import PreparedData
from training.search_space import param_space, scheduler, trial_count
from cluster.storage import join
from training.trial import run_trial
from training.trial_logger import MLflowTrialLogger


@dataclass(frozen=True)
class SearchOutcome:
    results: tune.ResultGrid
    experiment_path: str
    wall_seconds: float
    expected_trials: int

    def unfinished_trials(self) -> int:
        """Trials neither terminated nor errored, or never started: more than zero means the search
        was interrupted.

        Read from the experiment state Tune saved last: on Ctrl-C Tune snapshots the state with
        the interrupted trials still running, then stops them (which marks the in-memory trials
        TERMINATED, so the returned `ResultGrid` cannot tell an interrupted search from a finished one).
        Trials the search had not yet generated (Ctrl-C between two trials with a concurrency limit)
        are not in that state at all, hence the count against `expected_trials`.
        """
        trials = tune.ExperimentAnalysis(self.experiment_path).trials
        never_started = max(0, self.expected_trials - len(trials))
        return sum(t.status not in (Trial.TERMINATED, Trial.ERROR) for t in trials) + never_started


def _trainable(cfg: ExperimentConfig, data: PreparedData):
    trainable = tune.with_parameters(run_trial, cfg=cfg, data=data)
    return tune.with_resources(trainable, {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu, **cfg.resources.custom})


def _run_config(cfg: ExperimentConfig, task: str, storage_path: str, run_name: str, tracking_uri: str,
                parent_run_id: str, callbacks: list) -> tune.RunConfig:
    metric, mode = cfg.search.objective(task)
    mlflow_cb = MLflowTrialLogger(tracking_uri, cfg.experiment_name, parent_run_id,
                                  tags={"handoff.model": cfg.name, "handoff.role": "trial"})
    return tune.RunConfig(
        name=run_name, storage_path=storage_path,
        callbacks=[mlflow_cb, *callbacks],
        failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=cfg.search.checkpoints_to_keep, checkpoint_score_attribute=metric,
            checkpoint_score_order=mode,
        ),
        verbose=0,
    )


def run_search(cfg: ExperimentConfig, data: PreparedData, *, storage_path: str, run_name: str,
               tracking_uri: str, parent_run_id: str, callbacks: list = ()) -> SearchOutcome:
    """Start a new search named `run_name` under `storage_path`."""
    metric, mode = cfg.search.objective(data.task)
    tuner = tune.Tuner(
        _trainable(cfg, data),
        param_space=param_space(cfg.search),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=cfg.search.num_samples,
            scheduler=scheduler(cfg.search.scheduler, cfg.search.epochs),
            search_alg=BasicVariantGenerator(random_state=cfg.seed,
                                             max_concurrent=cfg.search.max_concurrent_trials or 0),
            reuse_actors=True,
        ),
        run_config=_run_config(cfg, data.task, storage_path, run_name, tracking_uri, parent_run_id, list(callbacks)),
    )
    return _fit(tuner, join(storage_path, run_name), trial_count(cfg.search))


def resume_search(cfg: ExperimentConfig, data: PreparedData, experiment_path: str,
                  callbacks: list = ()) -> SearchOutcome:
    """Continue an interrupted search: unfinished trials resume, errored ones restart from checkpoints."""
    if not tune.Tuner.can_restore(experiment_path):
        raise FileNotFoundError(f"no Tune experiment to resume at {experiment_path}")
    tuner = tune.Tuner.restore(experiment_path, trainable=_trainable(cfg, data),
                               resume_unfinished=True, resume_errored=True)
    return _fit(tuner, experiment_path, trial_count(cfg.search))


def _quiet_tune() -> None:
    """Per-epoch checkpoints are the design (exact resume); Tune's warning about frequent experiment
    snapshots would repeat once per epoch, so it is switched off for this driver process."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _fit(tuner: tune.Tuner, experiment_path: str, expected_trials: int) -> SearchOutcome:
    _quiet_tune()
    start = time.perf_counter()
    results = tuner.fit()
    return SearchOutcome(results, experiment_path, time.perf_counter() - start, expected_trials)
