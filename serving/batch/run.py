"""A batch-inference run in MLflow: what was scored, with which version, into where, and how fast.

One run per `handoff predict` (experiment `handoff-batch` unless configured): the model version
(tags and params), the input URI and fingerprint, the output URI, the pool's sizing, then the row
counts, duration and rows/s. A run that fails or is refused ends FAILED with its reason.
"""

from __future__ import annotations

import time


class BatchRun:
    """The MLflow client calls of one batch-inference run (the one side effect of lineage)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(
            experiment, artifact_location=f"{artifact_root.rstrip('/')}/{experiment}" if artifact_root else None)
        self.run_id = ""

    def start(self, model: str, version: int, params: dict[str, object]) -> str:
        """Create the run, tagged with the model and version; its id names the output's files."""
        run = self.client.create_run(self.experiment_id, run_name=f"predict-{model}-v{version}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={"handoff.model": model, "handoff.version": str(version),
                                           "handoff.role": "batch-predict", "mlflow.source.name": "handoff predict"})
        self.run_id = run.info.run_id
        self.log_params(params)
        return self.run_id

    def log_params(self, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def finish(self, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_terminated(self.run_id, status="FINISHED")

    def fail(self, reason: str) -> None:
        """End the run FAILED with the reason (never raises: the caller is already handling an error)."""
        try:
            self.client.set_tag(self.run_id, "handoff.failure", reason[:5000])
            self.client.set_terminated(self.run_id, status="FAILED")
        except Exception:  # noqa: BLE001 - the original error matters more than the bookkeeping
            pass
