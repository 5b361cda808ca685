"""Every Tune trial as an MLflow child run, written in batches off Tune's event loop.

Ray's `MLflowLoggerCallback` writes each metric of each result with its own `log_metric` call
inside Tune's controller loop; against a SQLite store that is ~12 ms a metric, ~0.2 s a result,
and every trial waits on it in `tune.report` (measured: half the wall time of a 0.3-s-epoch search).
This callback hands results to one writer thread that sends one `log_batch` per run every
`flush_seconds` and when a trial ends, so the controller never waits on MLflow.

A resumed search (`Tuner.restore`) continues each trial's existing run (found by its
`handoff.trial_id` tag under the same parent) instead of opening a second one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from numbers import Number

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from training.tracking import ensure_experiment

log = logging.getLogger(__name__)

# Tune's bookkeeping fields that say nothing about the model; the rest of a result is logged.
_NOT_METRICS = frozenset({
    "pid", "timestamp", "time_since_restore", "iterations_since_restore", "done", "should_checkpoint",
    "checkpoint_dir_name", "training_iteration",
})
_MLFLOW_BATCH_LIMIT = 1000  # metrics per log_batch call (MLflow's own limit)


def result_metrics(result: dict, step: int, timestamp_ms: int) -> list[Metric]:
    """The numeric model metrics of one Tune result, as MLflow metrics at `step` (bools excluded)."""
    return [Metric(key, float(value), timestamp_ms, step) for key, value in result.items()
            if key not in _NOT_METRICS and isinstance(value, Number) and not isinstance(value, bool)]


def flat_params(config: dict, prefix: str = "") -> list[Param]:
    """A trial's sampled configuration as MLflow params, nested keys joined with '/'."""
    params: list[Param] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params.extend(flat_params(value, f"{name}/"))
        else:
            params.append(Param(name, str(value)[:6000]))
    return params


class _Writer(threading.Thread):
    """Drains queued operations in order; metrics are held per run and flushed by time or trial end."""

    def __init__(self, client: MlflowClient, flush_seconds: float):
        super().__init__(name="handoff-mlflow-trial-logger", daemon=True)
        self.client, self.flush_seconds = client, flush_seconds
        self.ops: queue.Queue = queue.Queue()
        self._pending: dict[str, list[Metric]] = {}

    def run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                op = self.ops.get(timeout=self.flush_seconds)
            except queue.Empty:
                op = None
            if op is not None:
                kind, run_id, payload = op
                if kind == "metrics":
                    self._pending.setdefault(run_id, []).extend(payload)
                elif kind == "end":
                    self._flush(run_id)
                    self._call(self.client.set_terminated, run_id, status=payload)
                elif kind == "stop":
                    break
            if time.monotonic() - last_flush >= self.flush_seconds:
                for pending_run in list(self._pending):
                    self._flush(pending_run)
                last_flush = time.monotonic()
        for pending_run in list(self._pending):
            self._flush(pending_run)

    def _flush(self, run_id: str) -> None:
        metrics = self._pending.pop(run_id, [])
        for i in range(0, len(metrics), _MLFLOW_BATCH_LIMIT):
            self._call(self.client.log_batch, run_id, metrics=metrics[i:i + _MLFLOW_BATCH_LIMIT])

    @staticmethod
    def _call(fn, *args, **kwargs) -> None:
        # A tracking-server hiccup must not kill a search that is training fine: say so and go on.
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any MLflow/HTTP failure is reported the same way
            log.warning("MLflow trial logging failed (%s): %s", getattr(fn, "__name__", fn), exc)


class MLflowTrialLogger(Callback):
    """One MLflow child run per trial (params at start, metrics per epoch, status at end)."""

    def __init__(self, tracking_uri: str, experiment_name: str, parent_run_id: str, tags: dict[str, str],
                 flush_seconds: float = 2.0):
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.parent_run_id, self.tags, self.flush_seconds = parent_run_id, dict(tags), flush_seconds
        self._runs: dict[str, str] = {}
        self._client: MlflowClient | None = None
        self._writer: _Writer | None = None

    # Tune pickles its run config (callbacks included) for `Tuner.restore`: the client and the
    # writer thread are rebuilt in `setup`, and trial→run ids are found again by tag.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_runs": {}, "_client": None, "_writer": None}

    def setup(self, **info) -> None:
        self._client = MlflowClient(self.tracking_uri)
        self._experiment_id = ensure_experiment(self._client, self.experiment_name, None)
        self._writer = _Writer(self._client, self.flush_seconds)
        self._writer.start()

    def _run_for(self, trial) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is not None:
            return run_id
        found = self._client.search_runs(
            [self._experiment_id],
            filter_string=(f"tags.`handoff.trial_id` = '{trial.trial_id}' and "
                           f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'"),
            max_results=1)
        if found:
            run_id = found[0].info.run_id
            self._client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            tags = {**self.tags, "mlflow.parentRunId": self.parent_run_id, "handoff.trial_id": trial.trial_id,
                    "trial_name": str(trial)}
            run_id = self._client.create_run(self._experiment_id, run_name=str(trial), tags=tags).info.run_id
            self._client.log_batch(run_id, params=flat_params(trial.config))
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        step = int(result.get("training_iteration", 0))
        metrics = result_metrics(result, step, int(time.time() * 1000))
        self._writer.ops.put(("metrics", self._run_for(trial), metrics))

    def _end(self, trial, status: str) -> None:
        self._writer.ops.put(("end", self._run_for(trial), status))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials, **info) -> None:
        """Wait until everything queued is in MLflow: the registration step reads these runs."""
        if self._writer is not None:
            self._writer.ops.put(("stop", None, None))
            self._writer.join()
            self._writer = None
