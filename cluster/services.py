"""`handoff up` / `handoff down`: the embedded default as long-lived local services.

`up` starts a persistent Ray head (token authentication on, dashboard on 127.0.0.1) and a real
`mlflow server` over the store under HANDOFF_HOME, and records their addresses in
HANDOFF_HOME/services.json; later commands read that file to connect. `down` stops both.

The head publishes where results belong: it runs with `HANDOFF_HOME` (absolute) and
`HANDOFF_MLFLOW__TRACKING_URI` (the MLflow server) in its environment, which Ray passes to every
worker and job entry point it starts, so a job submitted to it registers into this store and keeps
its Tune results under this home, never in its throwaway working directory.

Every service listens on 127.0.0.1 only. `ray start` turns `--node-ip-address=127.0.0.1` into the
machine's address (it assumes other nodes will join), which makes the GCS, the raylet and the Ray
client server listen on every address; with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` Ray keeps its
single-machine mode (the default on macOS and Windows): the node's address is 127.0.0.1 and Ray's
gRPC servers bind to it. The head is single-node by design (`ray up` is for clusters).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from cluster.head_services import free_port, port_open
from cluster.process_identity import ProcessIdentity, identity_of, still_the_same
from cluster.mlflow_server import is_healthy, start_mlflow_server, stop_process_group, terminate_process_group
from cluster.ray_head_stop import stop_ray_head
from cluster.local_paths import file_in_the_way
from cluster.settings import HOW_TO_SET, Settings, SettingsError
from cluster.storage import absolute


class ServicesState(BaseModel):
    ray_address: str
    dashboard_url: str
    mlflow_uri: str
    mlflow_pid: int
    ray_pid: int
    #: Ray's ports that are fixed by default (10001, 52365) and chosen free here, so a second Ray on
    #: the machine neither stops the head from starting nor leaves its jobs API without an agent
    client_server_port: int | None = None
    agent_port: int | None = None
    #: who the two pids were when `up` started them: `down` signals a pid only while it is still them
    ray_process: ProcessIdentity | None = None
    mlflow_process: ProcessIdentity | None = None


#: seconds the Ray head's processes get to stop after SIGTERM before they are killed (`handoff down`)
RAY_GRACE_S = 8.0


def read_services(settings: Settings) -> ServicesState | None:
    """The services `handoff up` recorded, or None when it has not run (or `down` has)."""
    path = settings.services_file
    if not path.is_file():
        return None
    return ServicesState.model_validate_json(path.read_text())


def resolve_tracking_uri(configured: str | None, settings: Settings, services: ServicesState | None) -> str:
    """Config > HANDOFF_MLFLOW__TRACKING_URI > the server `handoff up` started > embedded store.

    Inside a Ray job there is no embedded fallback: a job that finds no tracking URI fails, naming how
    to give it one, rather than registering into a store nobody will read."""
    uri = configured or settings.tracking_uri or (services.mlflow_uri if services else None)
    if uri is None and settings.job_working_dir is not None:
        raise SettingsError(f"this Ray job found no MLflow tracking URI (no --tracking-uri, no "
                            f"HANDOFF_MLFLOW__TRACKING_URI, no `handoff up` services under {settings.home}), and a "
                            f"job never falls back to a local store: {HOW_TO_SET}")
    uri = uri or settings.embedded_tracking_uri
    settings.refuse_in_working_dir("the MLflow store", uri)
    return uri


def head_environment(settings: Settings, mlflow_uri: str, environ=None) -> dict[str, str]:
    """The Ray head's environment: the caller's without its `HANDOFF_*` variables, plus what jobs need
    (state directory, MLflow server, the interpreter, token auth, Ray's single-machine mode).

    The caller's `HANDOFF_*` variables stay out: experiment overrides (HANDOFF_SEARCH__…) or an
    address belong to the command they were set for, not to every job the head will ever run."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if not k.startswith("HANDOFF_")}
    env.update({
        "HANDOFF_HOME": str(settings.home),
        "HANDOFF_MLFLOW__TRACKING_URI": mlflow_uri,
        "HANDOFF_PYTHON": sys.executable,  # the job entry point's interpreter (cluster/jobs.py)
        "RAY_AUTH_MODE": "token",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address 127.0.0.1: Ray binds loopback only
    })
    return env


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _auth_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token"}


ARTIFACTS_FILE = "mlflow-artifacts-destination"  # under HANDOFF_HOME: where this store's MLflow artifacts live


def artifacts_destination(settings: Settings, requested: str | None) -> str:
    """Where the MLflow server keeps this store's artifacts: chosen at the first `handoff up` that
    started (a local path, default HANDOFF_HOME/mlartifacts, or an object-store URI such as
    s3://bucket/prefix) and kept in HANDOFF_HOME, because the versions registered so far can only be
    read from there (the store may be a database elsewhere: the record binds whether or not this home
    holds mlflow.db). Another destination later is refused (SettingsError), not followed. Reads only:
    `up` records the choice once its services started, so a failed start binds nothing."""
    recorded = settings.home / ARTIFACTS_FILE
    chosen = (recorded.read_text().strip() or None) if recorded.is_file() else None
    if chosen is None and (settings.home / "mlflow.db").exists():  # a store begun before the choice was kept
        chosen = str(settings.artifacts_dir.absolute())
    wanted = None if requested is None else absolute(requested)
    if chosen is not None and wanted is not None and wanted != chosen:
        raise SettingsError(f"this store's MLflow artifacts are at {chosen} (its registered versions are read from "
                         f"there): --artifacts {requested} would lose them; use another --home for another store")
    return chosen or wanted or str(settings.artifacts_dir.absolute())


def keep_artifacts_destination(settings: Settings, chosen: str) -> None:
    """Record `chosen` as this home's artifacts destination (whole or not at all); called just before
    the MLflow server starts with it (it may write the store from then on), so that a start that
    fails before that records nothing."""
    recorded = settings.home / ARTIFACTS_FILE
    if recorded.is_file() and recorded.read_text().strip() == chosen:
        return
    staged = recorded.with_name(f".{recorded.name}.tmp")
    staged.write_text(chosen + "\n")
    staged.replace(recorded)


def _refuse_bad_options(ports: dict[str, int], num_cpus: int | None) -> None:
    """Refuse (SettingsError, naming the flag) what `up` cannot start with: a port outside 1-65535, one
    port for two services, fewer than one CPU. `ports`: flag → port."""
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise SettingsError(f"{flag} {port}: a port is a number from 1 to 65535")
    for port in sorted(set(ports.values())):
        flags = [flag for flag, p in ports.items() if p == port]
        if len(flags) > 1:
            raise SettingsError(f"{', '.join(flags)}: the same port {port}; each service needs its own")
    if num_cpus is not None and num_cpus < 1:
        raise SettingsError(f"--num-cpus {num_cpus}: the Ray head needs at least 1 CPU")


def make_state_directory(settings: Settings) -> None:
    """Make HANDOFF_HOME, or refuse (SettingsError) a path that is, or lies under, a file or cannot be made."""
    home = settings.home
    blocker = file_in_the_way(home)
    if blocker is not None:
        raise SettingsError(f"the state directory {home} (--home, HANDOFF_HOME): {blocker} is a file, not a directory")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"the state directory {home} (--home, HANDOFF_HOME) cannot be made: "
                            f"{exc.filename}: {exc.strerror}") from None


def up(settings: Settings, *, ray_port: int = 6379, dashboard_port: int = 8265, mlflow_port: int = 5000,
       num_cpus: int | None = None, artifacts: str | None = None) -> ServicesState:
    """Start the Ray head and the MLflow server unless already running; return their addresses.
    `artifacts`: where the MLflow server keeps artifacts (see `artifacts_destination`), recorded only
    as MLflow starts with it. Bad options are refused (SettingsError) before anything starts."""
    _refuse_bad_options({"--ray-port": ray_port, "--dashboard-port": dashboard_port, "--mlflow-port": mlflow_port},
                        num_cpus)
    make_state_directory(settings)
    destination = artifacts_destination(settings, artifacts)
    existing = read_services(settings)
    if existing is not None and is_healthy(existing.mlflow_uri) and \
            still_the_same(existing.ray_process, existing.ray_pid, "ray")[0]:
        keep_artifacts_destination(settings, destination)
        return existing
    for port, what, flag in ((ray_port, "the Ray GCS", "--ray-port"), (dashboard_port, "the dashboard and jobs API",
                             "--dashboard-port"), (mlflow_port, "the MLflow server", "--mlflow-port")):
        if port_open(port):
            raise RuntimeError(f"port {port} on 127.0.0.1, for {what}, is in use (another `handoff up` or Ray "
                               f"or MLflow?): stop what holds it, or pass another {flag}")
    logs = settings.home / "logs"
    # A token must exist before `ray start`, or the head comes up without authentication.
    subprocess.run([_ray_bin(), "get-auth-token", "--generate"], check=True, capture_output=True,
                   env=_auth_env(), timeout=60)
    # `--block` keeps the head in one process group of ours, so `down` stops exactly this head
    # (a plain `ray stop` would stop every Ray on the machine).
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
    client_port, agent_port = free_port(), free_port()
    cmd = [_ray_bin(), "start", "--head", "--block", f"--port={ray_port}", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--disable-usage-stats",
           f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "ray-head.log", "ab") as log:
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=head_environment(settings, mlflow_uri))
    try:
        _wait_for_ports(head, [ray_port, dashboard_port], logs / "ray-head.log")
        # kept from the moment MLflow may write the store (its database and Default experiment name this
        # destination): a start that fails earlier binds nothing, one that fails later keeps it
        keep_artifacts_destination(settings, destination)
        proc = start_mlflow_server(settings.embedded_tracking_uri, destination,
                                   port=mlflow_port, log_path=logs / "mlflow-server.log")
    except BaseException:
        stop_process_group(head.pid)
        raise
    state = ServicesState(ray_address=f"127.0.0.1:{ray_port}",
                          dashboard_url=f"http://127.0.0.1:{dashboard_port}",
                          mlflow_uri=mlflow_uri, mlflow_pid=proc.pid, ray_pid=head.pid,
                          client_server_port=client_port, agent_port=agent_port,
                          ray_process=identity_of(head.pid), mlflow_process=identity_of(proc.pid))
    settings.services_file.write_text(state.model_dump_json(indent=2))
    return state


def down(settings: Settings, warn=lambda message: None) -> bool:
    """Stop what `up` started; False when nothing was recorded as running. A recorded pid is signalled
    only while it is still the process `up` started (start time and command line); otherwise it is
    left alone and `warn` says why."""
    state = read_services(settings)
    if state is None:
        return False
    mlflow_ok, why_not_mlflow = still_the_same(state.mlflow_process, state.mlflow_pid, "mlflow")
    ray_ok, why_not_ray = still_the_same(state.ray_process, state.ray_pid, "ray")
    for ok, why, what in ((mlflow_ok, why_not_mlflow, "MLflow server"), (ray_ok, why_not_ray, "Ray head")):
        if not ok and "not running" not in why:
            warn(f"the recorded {what} is gone and {why}: left alone")
    # both asked to stop at once: the MLflow server drains while Ray's processes stop in Ray's order
    # (cluster/ray_head_stop.py); what is left after a grace period is killed (the store and Tune
    # results are not theirs; `handoff down` has stopped what is served gracefully before this)
    if mlflow_ok:
        terminate_process_group(state.mlflow_pid)
    if ray_ok:
        stop_ray_head(state.ray_pid, grace_s=RAY_GRACE_S)
    if mlflow_ok:
        stop_process_group(state.mlflow_pid)
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
