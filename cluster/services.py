"""`handoff up` / `handoff down`: the embedded default as long-lived local services.

`up` starts a persistent Ray head (token authentication on, dashboard on 127.0.0.1) and a real
`mlflow server` over the store under HANDOFF_HOME, and records their addresses in
HANDOFF_HOME/services.json; later commands read that file to connect. `down` stops both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from cluster.head_services import port_open
from cluster.mlflow_server import is_healthy, start_mlflow_server, stop_process_group
from cluster.settings import Settings


class ServicesState(BaseModel):
    ray_address: str
    dashboard_url: str
    mlflow_uri: str
    mlflow_pid: int
    ray_pid: int


def read_services(settings: Settings) -> ServicesState | None:
    """The services `handoff up` recorded, or None when it has not run (or `down` has)."""
    path = settings.services_file
    if not path.is_file():
        return None
    return ServicesState.model_validate_json(path.read_text())


def resolve_tracking_uri(configured: str | None, settings: Settings, services: ServicesState | None) -> str:
    """Config > HANDOFF_MLFLOW__TRACKING_URI > the server `handoff up` started > embedded store."""
    return configured or settings.tracking_uri or (services.mlflow_uri if services else None) \
        or settings.embedded_tracking_uri


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _auth_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def up(settings: Settings, *, ray_port: int = 6379, dashboard_port: int = 8265, mlflow_port: int = 5000,
       num_cpus: int | None = None) -> ServicesState:
    """Start the Ray head and the MLflow server unless already running; return their addresses."""
    existing = read_services(settings)
    if existing is not None and is_healthy(existing.mlflow_uri):
        return existing
    settings.home.mkdir(parents=True, exist_ok=True)
    logs = settings.home / "logs"
    # A token must exist before `ray start`, or the head comes up without authentication.
    subprocess.run([_ray_bin(), "get-auth-token", "--generate"], check=True, capture_output=True,
                   env=_auth_env(), timeout=60)
    # `--block` keeps the head in one process group of ours, so `down` stops exactly this head
    # (a plain `ray stop` would stop every Ray on the machine).
    cmd = [_ray_bin(), "start", "--head", "--block", f"--port={ray_port}", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "ray-head.log", "ab") as log:
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=_auth_env())
    try:
        _wait_for_ports(head, [ray_port, dashboard_port], logs / "ray-head.log")
        proc = start_mlflow_server(settings.embedded_tracking_uri, settings.artifacts_dir,
                                   port=mlflow_port, log_path=logs / "mlflow-server.log")
    except BaseException:
        stop_process_group(head.pid)
        raise
    state = ServicesState(ray_address=f"127.0.0.1:{ray_port}",
                          dashboard_url=f"http://127.0.0.1:{dashboard_port}",
                          mlflow_uri=f"http://127.0.0.1:{mlflow_port}", mlflow_pid=proc.pid,
                          ray_pid=head.pid)
    settings.services_file.write_text(state.model_dump_json(indent=2))
    return state


def down(settings: Settings) -> bool:
    """Stop what `up` started; False when nothing was recorded as running."""
    state = read_services(settings)
    if state is None:
        return False
    stop_process_group(state.mlflow_pid)
    stop_process_group(state.ray_pid, timeout_s=60)
    _forget_head(state.ray_address)
    settings.services_file.unlink(missing_ok=True)
    return True


def _forget_head(address: str) -> None:
    """Remove Ray's "current cluster" file when it names the head we stopped, so that a later
    `ray.init()` does not try to reach a dead cluster."""
    from ray._common.utils import get_ray_address_file, reset_ray_address

    path = Path(get_ray_address_file(None))
    port = address.rsplit(":", 1)[-1]
    if path.is_file() and path.read_text().strip().endswith(f":{port}"):
        reset_ray_address()


def _wait_for_ports(proc: subprocess.Popen, ports: list[int], log: Path, timeout_s: float = 120) -> None:
    """Wait until every port accepts connections on 127.0.0.1, or fail naming the log."""
    deadline = time.monotonic() + timeout_s
    pending = list(ports)
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start --head` exited with code {proc.returncode}; see {log}")
        if port_open(pending[0]):
            pending.pop(0)
            continue
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"the Ray head did not open port(s) {pending} within {timeout_s:.0f}s; see {log}")
