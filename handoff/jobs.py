"""The specs of Handoff's own Ray jobs: its CLI commands run on the cluster (`cluster.jobs.JobRunner`
submits them). They live here, beside the commands they run, so `cluster/` knows nothing of them.

    from cluster.jobs import JobRunner
    from handoff.jobs import tune_job
    job_id = JobRunner("http://127.0.0.1:8265").submit(tune_job("configs/shuttle.yaml", ["seed=3"]))
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from cluster.jobs import PYTHON, JobSpec, deterministic_id


def _quote(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def cli_job(kind: str, args: Sequence[str], *, submission_id: str | None = None,
            env: dict[str, str] | None = None, pip: Sequence[str] = ()) -> JobSpec:
    """Any `handoff` command run on the cluster as a job (`pip`: what a model needs beyond the cluster).
    A job with packages runs the `python` of the virtualenv Ray made for them (Ray activates it for the
    job's entry point: first on its PATH), never the cluster's own interpreter, which lacks them."""
    python = "python" if pip else PYTHON
    return JobSpec(kind=kind, entrypoint=f"{python} {_quote(['-m', 'handoff', *args])}", env=dict(env or {}),
                   submission_id=submission_id, metadata={"handoff.kind": kind}, pip=tuple(pip))


def tune_job(config: str, overrides: Sequence[str] = (), *, submission_id: str | None = None) -> JobSpec:
    """A search: `handoff tune CONFIG --set ...` (trials ask Ray for their own CPUs/GPUs)."""
    args = ["tune", config, "--json"]
    for o in overrides:
        args += ["--set", o]
    return cli_job("tune", args, submission_id=submission_id)


def retrain_job(model: str, event_id: str, attempt: int = 0, args: Sequence[str] = (),
                resources: dict[str, float] | None = None, pip: Sequence[str] = ()) -> JobSpec:
    """`handoff retrain MODEL --event EVENT` (train on the original and recent labelled data, register,
    gate): one job per (model, event, attempt), however often the monitor asks or replays; `pip`: the
    champion's requirements the cluster lacks (its trials and registration run with them)."""
    spec = cli_job("retrain", ["retrain", model, "--event", event_id, "--json", *args],
                   submission_id=deterministic_id("retrain", model, event_id, attempt),
                   env={"HANDOFF_PARENT_EVENT": event_id}, pip=pip)
    return JobSpec(kind="retrain", entrypoint=spec.entrypoint, env=spec.env, submission_id=spec.submission_id,
                   resources=dict(resources or {}), pip=tuple(pip),
                   metadata={"handoff.kind": "retrain", "handoff.model": model, "handoff.event": event_id,
                             "handoff.attempt": str(attempt)})


def deploy_job(model: str, serving_config: str | None = None) -> JobSpec:
    """Serve `model` with its stored traffic policy (`handoff serve NAME`); idempotent on the cluster."""
    args = ["serve", model] + (["--serving-config", serving_config] if serving_config else [])
    return cli_job("deploy", args)
