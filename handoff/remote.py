"""`handoff COMMAND ... --address http://HEAD:8265`: run the command on the cluster as a Ray job.

A dashboard URL as the address (flag or HANDOFF_ADDRESS) means "run it there": the same command
line, without `--address`, becomes the entry point of a Ray job with this repository as its
`working_dir` (cluster/jobs.py); its logs stream here and the exit code is the job's. A `HOST:PORT`
address keeps the old meaning: this process joins the cluster as a Ray driver.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

#: commands that only make sense on this machine (they start or stop local services)
LOCAL_ONLY = {"up", "down", "demo"}


def job_address(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The jobs API URL this command line should be submitted to, or None to run it here (always
    inside a Ray job: it runs where it was sent, and never submits itself again)."""
    from cluster.settings import inside_ray_job

    if inside_ray_job(environ):
        return None
    if not argv or argv[0] in LOCAL_ONLY or argv[0].startswith("-") or {"--help", "-h"} & set(argv):
        return None
    address = environ.get("HANDOFF_ADDRESS")
    for i, arg in enumerate(argv):
        if arg == "--address" and i + 1 < len(argv):
            address = argv[i + 1]
        elif arg.startswith("--address="):
            address = arg.split("=", 1)[1]
    return address if address and address.startswith(("http://", "https://")) else None


def without_address(argv: Sequence[str]) -> list[str]:
    """The command line as the job runs it: `--address` (both spellings) removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--address":
            skip = True
        elif not arg.startswith("--address="):
            out.append(arg)
    return out


def run_as_job(argv: Sequence[str], address: str, pip: Sequence[str] = (), env: dict[str, str] | None = None) -> int:
    """Submit, stream the logs until the job ends, return 0 only when it succeeded (`pip`: packages
    the job's environment installs beyond the cluster's; `env`: variables the job gets)."""
    from cluster.jobs import JobError, JobRunner
    from handoff.jobs import cli_job

    err = sys.stderr
    args = without_address(argv)
    try:
        runner = JobRunner(address)
        job_id = runner.submit(cli_job(args[0], args, pip=pip, env=env))
    except JobError as exc:
        print(f"error: {exc}", file=err)
        return 1
    extra = f" with {', '.join(pip)} installed" if pip else ""
    print(f"submitted `handoff {' '.join(args)}` as Ray job {job_id} to {address}{extra}; its logs follow "
          f"(Ctrl-C detaches, the job keeps running: `ray job stop {job_id}` stops it)", file=err)
    try:
        status = runner.follow(job_id, lambda chunk: (sys.stdout.write(chunk), sys.stdout.flush()))
    except KeyboardInterrupt:
        print(f"\ndetached from job {job_id} (still running)", file=err)
        return 130
    print(f"job {job_id}: {status}" + ("" if status == "SUCCEEDED" else f": {runner.message(job_id)}"), file=err)
    return 0 if status == "SUCCEEDED" else 1
