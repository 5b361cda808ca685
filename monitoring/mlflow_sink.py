"""The monitor's windows in MLflow: one monitoring run per model and version, a step per window.

`window_metrics` (pure) turns a monitor event into (metric, value, step) triples: for a scored
window its rows, verdict and each column's corrected p-value, PSI and Wasserstein distance; for
a window's joined labels its accuracy and log loss (a regression model's live RMSE and MAE); for a declaration a `drift_declared` mark at
its last window. `MlflowSink` finds or creates the run (experiment `handoff-monitoring`, tagged
with the model and version) and logs them in batches; a failing tracking server never stops the
monitor: what could not be logged is kept (bounded) and sent with the next pass.
"""

from __future__ import annotations

import logging
import re
import time

import numpy as np

EXPERIMENT = "handoff-monitoring"
MAX_PENDING = 50_000
log = logging.getLogger(__name__)


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts (characters MLflow refuses become `_`)."""
    return ".".join(re.sub(r"[^A-Za-z0-9_\-. /]", "_", p) for p in parts)


def window_metrics(event: dict) -> list[tuple[str, float, int]]:
    """(metric, value, step) for one monitor event; [] for kinds that carry no per-window figure."""
    kind = event.get("kind")
    if kind == "window_scored":
        out = [("rows", float(event["rows"]), event["window"]), ("drifted", float(event["drifted"]), event["window"]),
               ("drifted_features", float(len(event["drifted_features"])), event["window"])]
        if event.get("estimated_accuracy") is not None:
            out.append(("estimated_accuracy", float(event["estimated_accuracy"]), event["window"]))
        for column, score in sorted(event["scores"].items()):
            for statistic in ("adjusted_p", "psi", "wasserstein"):
                if score.get(statistic) is not None:
                    out.append((metric_key(column, statistic), float(score[statistic]), event["window"]))
        return out
    if kind == "window_labels" and event["labelled"] and "squared_error_sum" in event:  # regression
        n = event["labelled"]
        return [("labelled", float(n), event["window"]),
                ("live_rmse", float(np.sqrt(event["squared_error_sum"] / n)), event["window"]),
                ("live_mae", event["absolute_error_sum"] / n, event["window"])]
    if kind == "window_labels" and event["labelled"]:
        out = [("labelled", float(event["labelled"]), event["window"]),
               ("live_accuracy", event["correct"] / event["labelled"], event["window"])]
        if event.get("log_loss_sum") is not None:
            out.append(("live_log_loss", event["log_loss_sum"] / event["labelled"], event["window"]))
        return out
    if kind == "drift_declared":
        return [("drift_declared", 1.0, event["last_window"])]
    return []


class MlflowSink:
    def __init__(self, tracking_uri: str, model: str):
        from mlflow import MlflowClient

        self.client, self.model = MlflowClient(tracking_uri), model
        self._runs: dict[int, str] = {}
        self._pending: list[dict] = []

    def run_id(self, version: int) -> str:
        """The version's monitoring run, found by its tags or created."""
        if version not in self._runs:
            from mlflow.exceptions import MlflowException

            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                try:
                    experiment_id = self.client.create_experiment(EXPERIMENT)
                except MlflowException:  # created meanwhile by another monitor
                    experiment_id = self.client.get_experiment_by_name(EXPERIMENT).experiment_id
            else:
                experiment_id = experiment.experiment_id
            found = self.client.search_runs(
                [experiment_id], f"tags.`handoff.model` = '{self.model}' and tags.`handoff.version` = '{version}'",
                max_results=1)
            self._runs[version] = found[0].info.run_id if found else self.client.create_run(
                experiment_id, run_name=f"monitor-{self.model}-v{version}",
                tags={"handoff.model": self.model, "handoff.version": str(version), "handoff.kind": "monitoring"},
            ).info.run_id
        return self._runs[version]

    def log(self, events: list[dict]) -> None:
        """Log the events' figures (and any kept from a failed pass); keep them if MLflow fails."""
        from mlflow.entities import Metric

        todo, self._pending = self._pending + [e for e in events if window_metrics(e)], []
        by_version: dict[int, list] = {}
        now = int(time.time() * 1000)
        for e in todo:
            by_version.setdefault(int(e["version"]), []).extend(
                Metric(k, v, now, step) for k, v, step in window_metrics(e))
        for i, (version, metrics) in enumerate(by_version.items()):
            try:
                run = self.run_id(version)
                for start in range(0, len(metrics), 1000):  # MLflow's batch limit
                    self.client.log_batch(run, metrics=metrics[start:start + 1000])
            except Exception as exc:  # noqa: BLE001 - the monitor goes on; these are sent next pass
                log.warning("monitor %s: logging to MLflow failed (%s); kept for the next pass", self.model, exc)
                self._pending = [e for e in todo if int(e["version"]) in list(by_version)[i:]][-MAX_PENDING:]
                return

    def tag_loop(self, records: list[dict]) -> None:
        """The loop's steps as tags of the monitoring run of the version each concerns (the MLflow UI
        shows the chain: `handoff.loop.EVENT.KIND` = why); a failing server is logged, not raised."""
        for r in records:
            if r.get("version") is None or not r.get("event_id"):
                continue
            try:
                self.client.set_tag(self.run_id(int(r["version"])), metric_key("handoff.loop", r["event_id"], r["kind"]),
                                    (r.get("reason") or r.get("job_id") or "")[:5000])
            except Exception as exc:  # noqa: BLE001 - the event log has it; MLflow is a view
                log.warning("monitor %s: tagging loop step %s failed: %s", self.model, r["kind"], exc)

    def log_artifact_dir(self, version: int, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id(version), local_dir, artifact_path)
