"""Ray jobs: run Handoff's work on a cluster through Ray's job submission API.

A job is a `JobSpec`: an entry point run on the head node with this repository as its
`working_dir`, so the cluster runs exactly the code the user has. This module knows nothing of
what runs: the specs of Handoff's own jobs (`handoff tune`, `handoff retrain`, …) live with the
commands they run (handoff/jobs.py). Entry points need no CPU of their own (they coordinate; trials
and replicas ask for theirs), which also keeps them on the head node, next to the MLflow server
bound to its localhost.

Python use (address: the dashboard, reached through `ray dashboard cluster.yaml`):

    from cluster.jobs import JobRunner
    from handoff.jobs import tune_job
    runner = JobRunner("http://127.0.0.1:8265")
    job_id = runner.submit(tune_job("configs/shuttle.yaml", ["search.num_samples=16"]))
    status = runner.wait(job_id, on_status=print)       # or runner.follow(job_id, print): logs too
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster.digest import stable_digest
from cluster.runtime_env import pip_env
from cluster.source import source_env

def _checkout() -> Path | None:
    """The checkout this Handoff runs from, or None for an installed one (a wheel in site-packages,
    whose parent folder is every installed package: never a job's working_dir)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "cluster").is_dir() else None


REPO_ROOT = _checkout()

#: never uploaded with the working_dir (environments, state, build output)
WORKING_DIR_EXCLUDES = [".venv", ".git", ".handoff", "mlruns", ".whl", "*.egg-info", "__pycache__",
                        ".pytest_cache", ".ruff_cache", "bench/results"]

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

#: what the jobs API answers while the head's job agent has not registered yet (a head that just started)
AGENT_NOT_READY = "No available agent to submit job"
AGENT_WAIT_S = 60.0


class JobError(RuntimeError):
    """A job could not be submitted, failed, or did not finish in time; the message says which."""


@dataclass(frozen=True)
class JobSpec:
    """What to run as one Ray job. `submission_id` set: the job runs at most once under that id."""

    kind: str
    entrypoint: str
    num_cpus: float = 0.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)  # custom resources of the driver (cluster/placement.py)
    env: dict[str, str] = field(default_factory=dict)
    submission_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    pip: tuple[str, ...] = ()  # packages the job needs beyond the cluster's (cluster/runtime_env.py)


def deterministic_id(kind: str, *parts: object) -> str:
    """The same work always gets the same submission id (Ray refuses a second job under it)."""
    return f"handoff-{kind}-{stable_digest(kind, *parts)}"


#: the head's interpreter: the cluster configs export HANDOFF_PYTHON (a login shell's PATH may put
#: another `python` first, as pyenv does); plain `python` where it is not set
PYTHON = "${HANDOFF_PYTHON:-python}"


def runtime_env(spec: JobSpec, working_dir: Path | None = REPO_ROOT) -> dict:
    """The repository as `working_dir` (without `.git`, so its commit travels in the environment);
    from an installed Handoff (no checkout) none: the job runs the Handoff installed on the cluster.
    The spec's `pip` packages are installed for the job's driver and every task and actor it starts."""
    env = {"env_vars": {"PYTHONUNBUFFERED": "1", **(source_env(working_dir) if working_dir else {}), **spec.env},
           **pip_env(spec.pip)}
    if working_dir is not None:
        env.update(working_dir=str(working_dir), excludes=list(WORKING_DIR_EXCLUDES))
    return env


def cluster_token(environ=None, home: Path | None = None) -> str | None:
    """The Ray cluster token, found where Ray's own clients look: RAY_AUTH_TOKEN, the file named by
    RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. None when there is none (a cluster without auth)."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_TOKEN", "").strip():
        return environ["RAY_AUTH_TOKEN"].strip()
    path = Path(environ["RAY_AUTH_TOKEN_PATH"]) if environ.get("RAY_AUTH_TOKEN_PATH") else \
        (home or Path.home()) / ".ray" / "auth_token"
    token = path.read_text().strip() if path.is_file() else ""
    return token or None


class JobRunner:
    """Thin wrapper over Ray's `JobSubmissionClient`. The cluster token is sent explicitly (found as
    Ray's clients find it), so this works whatever RAY_AUTH_MODE this process started with."""

    def __init__(self, address: str, token: str | None = None):
        from ray.job_submission import JobSubmissionClient

        token = token or cluster_token()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self.client = JobSubmissionClient(address, headers=headers)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or auth errors here
            hint = ("the cluster refused this token: use the cluster's (`ray get-auth-token` on the head, or "
                    "RAY_AUTH_TOKEN)" if "uthenticat" in str(exc) else
                    "forward the head's dashboard first: `ray dashboard cluster.yaml`")
            raise JobError(f"cannot use the jobs API at {address}: {exc}\n{hint}") from exc
        self.address = address

    def submit(self, spec: JobSpec, working_dir: Path | None = REPO_ROOT) -> str:
        """Submit; with a `submission_id` that exists already, return it without a second run."""
        if spec.submission_id and self._exists(spec.submission_id):
            return spec.submission_id
        kwargs = {"entrypoint": spec.entrypoint, "runtime_env": runtime_env(spec, working_dir),
                  "submission_id": spec.submission_id, "metadata": dict(spec.metadata)}
        if spec.num_cpus:
            kwargs["entrypoint_num_cpus"] = spec.num_cpus
        if spec.num_gpus:
            kwargs["entrypoint_num_gpus"] = spec.num_gpus
        if spec.resources:
            kwargs["entrypoint_resources"] = dict(spec.resources)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return self.client.submit_job(**kwargs)
            except Exception as exc:
                if spec.submission_id and self._exists(spec.submission_id):  # a concurrent submit won
                    return spec.submission_id
                if AGENT_NOT_READY in str(exc) and time.monotonic() < deadline:
                    time.sleep(1.0)  # a head that just started: its job agent registers within seconds
                    continue
                raise JobError(f"submitting {spec.kind} job to {self.address} failed: {exc}") from exc

    def _exists(self, submission_id: str) -> bool:
        try:
            self.client.get_job_info(submission_id)
            return True
        except Exception:
            return False

    def status(self, job_id: str) -> str:
        status = self.client.get_job_status(job_id)
        return str(getattr(status, "value", status))

    def message(self, job_id: str) -> str:
        """Why the job is where it is, in Ray's words (a runtime environment's installer error, an exit code)."""
        return str(self.client.get_job_info(job_id).message or "")

    def wait(self, job_id: str, *, timeout_s: float = 3600.0, poll_s: float = 2.0,
             on_status: Callable[[str], None] = lambda _: None) -> str:
        """Poll until the job ends; `on_status` hears every change. Returns the final status."""
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            status = self.status(job_id)
            if status != last:
                on_status(status)
                last = status
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise JobError(f"job {job_id} still {status} after {timeout_s:.0f}s (it keeps running; "
                               f"`ray job stop {job_id}` stops it)")
            time.sleep(poll_s)

    def follow(self, job_id: str, write: Callable[[str], None]) -> str:
        """Stream the job's logs as they come, then return its final status."""
        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        asyncio.run(tail())
        return self.wait(job_id, poll_s=0.5)

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; False when it had already ended."""
        return bool(self.client.stop_job(job_id))
