"""Commands that run a model's own code (search, reproduce, batch scoring) run where its requirements are met.

A model's `requirements` (training/environment.py) may name packages this process lacks. The
command then runs as a Ray job on the cluster with a `runtime_env` that installs only those
(cluster/runtime_env.py): the same command line, its logs streamed here, its exit code returned.
Its trials, batch actors and registration run in that environment; nothing of the model's is
imported here. Without a jobs API to send it to (no `handoff up` head) it is refused, naming the
packages, before any work.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path


class RequirementsUnmet(ValueError):
    """A model's requirements are missing here and there is no cluster to run the command on."""


def jobs_address(services) -> str | None:
    """Where to send a job: the jobs API of the `handoff up` head this command found."""
    return services.dashboard_url if services is not None else None


def run_where_met(requirements: Sequence[str], services, what: str,
                  argv: Sequence[str] | None = None) -> int | None:
    """None when the command runs here: this process has every requirement, or it is a Ray job given
    an environment with each of the model's packages (a requirement by URL or with extras cannot be
    checked against versions: there, installed is enough); else the exit code of the command run as a
    Ray job that installs the missing ones. Refused (`RequirementsUnmet`) with no jobs API to send it
    to, or inside a job that lacks a package (a `reproduce` or `predict` sent with `--address http://…`)."""
    from cluster.settings import inside_ray_job
    from handoff.remote import run_as_job, without_address
    from training import absent, installed_versions, unmet

    if inside_ray_job(os.environ):
        lacking = absent(requirements, installed_versions())
        if lacking:
            raise RequirementsUnmet(
                f"{what} needs {', '.join(lacking)}, which this Ray job's environment lacks (a `reproduce` or "
                "`predict` sent with --address http://… installs no model packages: its version is read on the "
                "cluster); run it on the head (it then sends itself as a job that installs them) or install them "
                "on the cluster")
        return None
    missing = unmet(requirements, installed_versions())
    if not missing:
        return None
    target = jobs_address(services)
    if target is None:
        raise RequirementsUnmet(
            f"{what} needs {', '.join(missing)}, not installed here, and there is no cluster to run it on with "
            f"them: start one with `handoff up` (the command then runs as a Ray job that installs them), "
            f"or install them into this environment")
    args = with_absolute_paths(without_address(list(argv if argv is not None else sys.argv[1:])))
    print(f"{what} needs {', '.join(missing)} (not installed here): running it as a Ray job that installs them",
          file=sys.stderr)
    return run_as_job(args, target, pip=missing, env=forwarded(os.environ))


#: options whose value is a path of this machine (a URI, `s3://…`, is left as it is)
PATH_OPTIONS = ("--input", "--output", "--config", "--serving-config", "--home", "--experiment-path")
#: what the head publishes to every job itself: never the caller's copy
CLUSTER_VARIABLES = ("HANDOFF_HOME", "HANDOFF_PYTHON", "HANDOFF_ADDRESS", "HANDOFF_MLFLOW__TRACKING_URI",
                     "HANDOFF_MLFLOW__REGISTRY_URI")


def with_absolute_paths(argv: Sequence[str]) -> list[str]:
    """The command line a job runs: a job's working directory is a copy of the repository, so each
    local path (the value of `PATH_OPTIONS`, and `tune`'s config file) is made absolute from here."""
    def absolute(value: str) -> str:
        return value if "://" in value else str(Path(value).expanduser().resolve())

    out, i = list(argv), 0
    while i < len(out):
        arg = out[i]
        name, eq, value = arg.partition("=")
        if eq and name in PATH_OPTIONS:
            out[i] = f"{name}={absolute(value)}"
        elif arg in PATH_OPTIONS and i + 1 < len(out):
            out[i + 1] = absolute(out[i + 1])
            i += 1
        i += 1
    if out and out[0] == "tune" and len(out) > 1 and not out[1].startswith("-"):
        out[1] = absolute(out[1])
    return out


def forwarded(environ) -> dict[str, str]:
    """The caller's `HANDOFF_*` settings (config overrides such as HANDOFF_SEARCH__NUM_SAMPLES) for the
    job, less what the head publishes to every job itself."""
    return {k: v for k, v in environ.items() if k.startswith("HANDOFF_") and k not in CLUSTER_VARIABLES}


def requirements_of(argv: Sequence[str]) -> list[str]:
    """What a command line sent to a cluster (`--address http://…`) needs installed: for `handoff tune`,
    its config's `model.requirements` (the config is read here, with its `--set` overrides); none for
    another command, or a config that does not load (the job then says why). All of them: what the
    cluster's nodes have is not known here, and pip installs only what is missing."""
    from handoff.options import DEFAULT_CONFIG
    from training import load_config

    if not argv or argv[0] != "tune":
        return []
    config = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else str(DEFAULT_CONFIG)
    sets = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--set"] + \
        [a.split("=", 1)[1] for a in argv if a.startswith("--set=")]
    try:
        return list(load_config(Path(config), sets).model.requirements)
    except Exception:  # noqa: BLE001 - the job loads it again and names the problem
        return []
