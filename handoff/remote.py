"""`handoff COMMAND ... --address http://HEAD:8265`: run the command on the cluster as a Ray job.

A dashboard URL as the address (flag or HANDOFF_ADDRESS) means "run it there": the same command
line, without `--address`, becomes the entry point of a Ray job with this repository as its
`working_dir` (cluster/jobs.py); its logs stream here and the exit code is the job's. A `HOST:PORT`
address keeps the old meaning: this process joins the cluster as a Ray driver.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence

#: commands that only make sense on this machine: they start or stop local services, write a file
#: here (credentials) or read one here and talk to the gateway over HTTP (feedback)
LOCAL_ONLY = {"up", "down", "demo", "credentials", "feedback"}
#: commands whose output is files on this machine, which a job on the cluster cannot write
WRITES_HERE = {"report": "it writes its report files on the machine it runs on, and a job's working "
                         "directory is removed when the job ends: run it on the head (`ray attach cluster.yaml`)"}
_EXIT_CODE = re.compile(r"exit code (\d+)")


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


def refusal(argv: Sequence[str], command) -> str | None:
    """Why this command line cannot be sent to a cluster, checked here before anything is submitted
    (None: it can): a usage error (an unknown option, a value of the wrong type, a missing argument),
    in click's words, or a command whose output would stay on the cluster (`WRITES_HERE`)."""
    import typer
    from typer.exceptions import TyperException  # typer's usage errors (it carries its own click)

    args = without_address(argv)
    if args and args[0] in WRITES_HERE:
        return f"handoff {args[0]} cannot run on a cluster through --address / HANDOFF_ADDRESS: {WRITES_HERE[args[0]]}"
    parent = typer.Context(command, info_name="handoff")  # the group has no options of its own but --help
    sub = command.get_command(parent, args[0]) if args else None
    if sub is None:
        return f"no such command {args[0]!r} (`handoff --help` lists them)" if args else "no command given"
    try:
        sub.make_context(f"handoff {args[0]}", list(args[1:]), parent=parent).close()
    except typer.Exit:  # an eager option answered (nothing to send)
        return None
    except TyperException as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"{message} (`handoff {args[0]} --help` explains)"
    return None


def exit_code(status: str, message: str) -> int:
    """The command's own exit code as the job's message reports it (2: the command refused its input),
    0 when the job succeeded, 1 when it failed with no code (stopped, or its environment failed)."""
    if status == "SUCCEEDED":
        return 0
    found = _EXIT_CODE.search(message)
    return int(found.group(1)) if found and found.group(1) != "0" else 1


def run_as_job(argv: Sequence[str], address: str, pip: Sequence[str] = (), env: dict[str, str] | None = None) -> int:
    """Submit, stream the logs until the job ends, return the command's exit code (0 only when it
    succeeded; `pip`: packages the job's environment installs beyond the cluster's; `env`: variables
    the job gets)."""
    from cluster.jobs import JobError, JobRunner
    from cluster.runtime_env import installer_failure
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
    message = "" if status == "SUCCEEDED" else runner.message(job_id)
    if message.startswith("runtime_env setup failed"):  # Ray's wording: pip's lines, not the agent's traceback
        message = f"installing {', '.join(pip) or 'its environment'} failed: {installer_failure(message)}"
    print(f"job {job_id}: {status}" + (f": {message}" if message else ""), file=err)
    return exit_code(status, message)
