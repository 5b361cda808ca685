"""`handoff up/down/credentials`: the services of the embedded default, and a `ray up` cluster's MLflow user.

`up` starts a Ray head (token auth) and an MLflow server on 127.0.0.1, which every later command
finds through HANDOFF_HOME/services.json; `down` stops serving gracefully, then stops them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from handoff.common import command_settings, err, fail, out
from handoff.options import HomeOpt


def up(home: HomeOpt = None,
       mlflow_port: Annotated[int, typer.Option(help="MLflow server port (127.0.0.1)")] = 5000,
       ray_port: Annotated[int, typer.Option(help="Ray GCS port (127.0.0.1)")] = 6379,
       dashboard_port: Annotated[int, typer.Option(help="Ray dashboard and jobs API port (127.0.0.1)")] = 8265,
       num_cpus: Annotated[int | None, typer.Option(help="CPUs the Ray head offers (default: all)")] = None,
       artifacts: Annotated[str | None, typer.Option(
           help="where MLflow keeps artifacts: a path or an object-store URI (s3://bucket/prefix, credentials "
                "and endpoint from the usual AWS variables); chosen at the first `up` of a home and kept "
                "(default HANDOFF_HOME/mlartifacts)")] = None) -> None:
    """Start the embedded default as services: a Ray head with token auth and an MLflow server.

    Both listen on 127.0.0.1 only. Later commands (`tune`, `models`, …) find them through
    HANDOFF_HOME/services.json; `handoff down` stops them.
    """
    from cluster.services import artifacts_destination
    from cluster.services import up as start
    from cluster.settings import SettingsError

    settings = command_settings(home)
    with err.status("starting Ray head and MLflow server …"):
        try:
            state = start(settings, ray_port=ray_port, dashboard_port=dashboard_port,
                          mlflow_port=mlflow_port, num_cpus=num_cpus, artifacts=artifacts)
        except SettingsError as exc:
            fail(str(exc))
        except (RuntimeError, TimeoutError) as exc:
            fail(str(exc), 1)
    out.print(f"Ray head      {state.ray_address}  (dashboard {state.dashboard_url}, token auth on)")
    out.print(f"MLflow server {state.mlflow_uri}  (artifacts {artifacts_destination(settings, None)})")
    out.print(f"state         {settings.services_file}")


def down(home: HomeOpt = None) -> None:
    """Stop the Ray head and MLflow server that `handoff up` started (the stored data stays).

    What is served is stopped first, gracefully: each gateway finishes its requests in flight and
    writes its buffered live log."""
    from cluster.services import down as stop
    from cluster.services import read_services

    settings = command_settings(home)
    services = read_services(settings)
    if services is not None:
        _stop_serving_first(services.ray_address)
    out.print("stopped" if stop(settings, warn=err.print) else f"nothing to stop: no {settings.services_file}")


def credentials(path: Annotated[Path, typer.Option(help="the file to write (what a `ray up` config's file_mounts "
                                                      "copy to every node)")] = Path("~/.handoff/mlflow-credentials.env"),
                username: Annotated[str, typer.Option(help="the MLflow user every process of the cluster acts as")] = "handoff",
                ) -> None:
    """Write a `ray up` cluster's MLflow credentials: a user and a random password, readable by you only.

    `ray up` copies the file to every node (file_mounts, as the Ray token) and each node's
    environment reads it, so every process's MLflow client sends them, and the head's MLflow server
    (`cluster.head_services mlflow --auth`) makes that user its admin. An existing file is kept:
    the server keeps the password it first started with (change it through MLflow's API first)."""
    import secrets

    import re

    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", username):
        fail(f"--username {username!r}: letters, digits and _ . @ - only (the file is sourced by a shell)")
    target = path.expanduser()
    if target.is_dir():
        fail(f"--path {target} is a directory: name the file to write (e.g. {target / 'mlflow-credentials.env'})")
    if target.exists():
        fail(f"{target} exists: kept (the cluster's MLflow server knows that password; change it through "
             "MLflow's update-password API, then edit the file)")
    from cluster.local_paths import file_in_the_way

    blocker = file_in_the_way(target.parent)
    if blocker is not None:
        fail(f"--path {target}: {blocker} is a file, not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"--path {target}: cannot be written ({exc.filename}: {exc.strerror})")
    with os.fdopen(fd, "w") as f:
        f.write(f"export MLFLOW_TRACKING_USERNAME={username}\nexport MLFLOW_TRACKING_PASSWORD={secrets.token_urlsafe(24)}\n")
    out.print(f"wrote {target} (mode 600): user {username}, a random password")


def _stop_serving_first(address: str) -> None:
    """Stop what is served on the head at `address` gracefully before its processes are stopped, so that
    each gateway writes its buffered live log (killed, it would lose the last seconds of rows). A head
    that does not answer is stopped all the same, with a warning."""
    from cluster.connect import connect_ray
    from cluster.head_services import port_open

    if not port_open(int(address.rsplit(":", 1)[-1])):
        err.print(f"the Ray head at {address} does not answer: stopping its processes (a gateway's buffered "
                  "live-log rows, if any, are lost)")
        return
    try:
        import ray

        from serving import stop_serving

        connect_ray(address)
        stopped = stop_serving()
        ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - the cluster is stopped either way
        err.print(f"could not stop serving gracefully ({type(exc).__name__}: {exc}); stopping the cluster anyway",
                  markup=False)
        return
    if stopped:
        out.print(f"stopped serving {', '.join(stopped)} (live logs written)")
