"""The closed loop's hands: what the monitor actor calls to act (`monitoring.LoopPort`).

Composed here, above every package: retraining is submitted as a Ray job (`handoff retrain`,
handoff/jobs.py) to the cluster's jobs API, the candidate and its gate verdict are read from the
registry, traffic moves through the serving control plane (deploy, switch, then remove: no request
fails) with the serving config in force on the cluster, read at each change (never a copy taken when
the monitor started), and the canary's figures come from the gateways' Prometheus metrics and the labelled live
rows. The monitor gets an instance when it is started (pickled with its arguments), so the
monitoring package itself never imports serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class HandoffLoopPort:
    tracking_uri: str
    jobs_address: str
    live_root: str
    retrain_sets: list[str] = field(default_factory=list)  # `--set` of the monitoring config the job needs
    job_resources: dict[str, float] = field(default_factory=dict)  # where the retraining job's driver runs
    # per model, the labelled rows' reader of its canary, kept between ticks: each file is read once, not every tick
    _readers: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _registry(self):
        from training import Registry

        return Registry(self.tracking_uri)

    def _control(self):
        from serving import ServingControl

        return ServingControl(self._registry())  # the serving config in force, read under the serving lock

    def champion(self, model: str) -> int | None:
        from training import CHAMPION

        return self._registry().aliases(model).get(CHAMPION)

    def submit_retrain(self, model: str, event_id: str, attempt: int) -> str:
        from cluster.jobs import JobRunner
        from handoff.jobs import retrain_job

        args = ["--attempt", str(attempt), "--live-root", self.live_root]
        for item in self.retrain_sets:
            args += ["--set", item]
        return JobRunner(self.jobs_address).submit(retrain_job(model, event_id, attempt, args, self.job_resources,
                                                               pip=self.extra_packages(model)))

    def extra_packages(self, model: str) -> list[str]:
        """The champion's recorded requirements this process's environment (the cluster's: the monitor
        runs in it) lacks: what the retraining job installs to train and register the model's code."""
        from training import installed_versions, recorded_requirements, unmet

        champion = self.champion(model)
        if champion is None:
            return []
        return unmet(recorded_requirements(self._registry().version(model, champion).lineage), installed_versions())

    def job_status(self, job_id: str) -> str:
        from cluster.jobs import JobRunner

        return JobRunner(self.jobs_address).status(job_id)

    def job_message(self, job_id: str) -> str:
        from cluster.jobs import JobRunner

        return JobRunner(self.jobs_address).message(job_id)

    def stop_job(self, job_id: str) -> None:
        from cluster.jobs import JobRunner

        JobRunner(self.jobs_address).stop(job_id)

    def candidate(self, model: str, event_id: str):
        from monitoring import Candidate

        info = self._registry().caused_by(model, event_id)
        if info is None or "gate" not in info.lineage:
            return None
        return Candidate(info.version, info.lineage["gate"] == "passed",
                         json.loads(info.lineage.get("gate_scores", "{}")), info.lineage.get("gate_reason", ""))

    def canary(self, model: str, version: int, percent: float) -> None:
        self._control().canary(model, version, percent)

    def promote(self, model: str, version: int) -> None:
        self._control().promote(model, version)

    def rollback(self, model: str, version: int, champion: int) -> None:
        """The canary out, the champion back at all traffic (the champion was never replaced)."""
        self._control().traffic(model, {champion: 100.0})

    def test_errors(self, model: str, version: int) -> dict | None:
        """A regression version's registered test RMSE and MAE (None for a classifier)."""
        info = self._registry().version(model, version)
        if info.lineage.get("task") != "regression":
            return None
        return {"rmse": info.metrics.get("test_rmse"), "mae": info.metrics.get("test_mae")}

    def figures(self, model: str, champion: int, canary: int, since: float):
        import numpy as np

        from monitoring import LabelledReader, VersionFigures
        from serving import scrape, summarize

        served = summarize(scrape())
        reference = self.test_errors(model, champion)  # None: a classifier
        key = (since, champion, canary)
        if self._readers.get(model, (None,))[0] != key:  # a new canary: the last one's reader goes
            self._readers[model] = (key, LabelledReader(self.live_root, model, since=since, versions={champion, canary},
                                                        with_features=False, regression=reference is not None))
        rows = self._readers[model][1].rows()  # each tick reads only the files that came since the last
        out = {}
        for role, version in (("champion", champion), ("canary", canary)):
            f = served.get((model, version), {})
            mine = rows.version == version
            counts = (int(f.get("requests", 0)), int(f.get("errors", 0)), f.get("p99_ms_at_most"), int(mine.sum()))
            buckets = tuple(tuple(pair) for pair in f.get("latency_buckets", ()))
            if reference is None:
                out[role] = VersionFigures(*counts, int((rows.prediction[mine] == rows.y[mine]).sum()),
                                           latency_buckets=buckets)
            else:
                error = np.abs(rows.prediction[mine].astype(np.float64) - rows.y[mine])
                out[role] = VersionFigures(*counts, abs_error_sum=float(error.sum()),
                                           abs_error_sq_sum=float((error ** 2).sum()), test_mae=reference.get("mae"),
                                           latency_buckets=buckets)
        return out
