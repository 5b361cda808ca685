"""Start, probe and stop a real `mlflow server` process (used by `handoff up` and by the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: where `mlflow server` reads its database URI (never its command line: see mlflow_server_command)
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"


#: the credentials every client of an authenticated server sends (MLflow's clients read them themselves)
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def auth_environment(auth_db: str, config_dir: Path, environ=None) -> dict[str, str]:
    """What MLflow's basic-auth app needs, from the cluster's credentials in the environment
    (MLFLOW_TRACKING_USERNAME / _PASSWORD, delivered to every node like the Ray token, so every
    process's MLflow client sends them): its admin is that user, its users live in `auth_db`, its
    config file (written in `config_dir`, readable by this user only) names them; a secret key for
    its sessions. ValueError naming what is missing."""
    import secrets

    environ = os.environ if environ is None else environ
    missing = [k for k in (USERNAME_ENV, PASSWORD_ENV) if not environ.get(k)]
    if missing:
        raise ValueError(f"an authenticated MLflow server needs {' and '.join(missing)} in its environment "
                         "(the cluster's credentials file: `handoff credentials` writes one)")
    config_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / "mlflow-basic-auth.ini"
    config.touch(mode=0o600, exist_ok=True)
    config.chmod(0o600)
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = {auth_db.replace('%', '%%')}\n"  # configparser interpolates %
                      f"admin_username = {environ[USERNAME_ENV].replace('%', '%%')}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": environ[USERNAME_ENV],
            "MLFLOW_AUTH_ADMIN_PASSWORD": environ[PASSWORD_ENV],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}


def mlflow_server_command(artifacts_dir: Path | str, host: str, port: int, auth: bool = False) -> list[str]:
    """The command line of a tracking + registry server that proxies artifacts from `artifacts_dir`
    (a local path or an object-store URI such as s3://bucket/prefix). The database URI is not on
    it: it holds a password on a real cluster, and any user of the machine reads a command line
    (`ps`); it goes through the environment (`MLFLOW_BACKEND_STORE_URI`, which `mlflow server` reads)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [
        str(mlflow), "server",
        "--artifacts-destination", str(artifacts_dir),
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        *(["--app-name", "basic-auth"] if auth else []),
    ]


def start_mlflow_server(
    backend_store_uri: str, artifacts_dir: Path | str, *, host: str = "127.0.0.1", port: int = 5000,
    log_path: Path, timeout_s: float = 90.0, auth: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start the server in its own session (so it outlives the caller) and wait until it answers;
    with `auth` (from `auth_environment`), MLflow's basic-auth app: every request but its health
    check needs the credentials."""
    if "://" not in str(artifacts_dir):  # a local path; object stores need no directory
        Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        mlflow_server_command(artifacts_dir, host, port, auth=auth is not None),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", BACKEND_ENV: backend_store_uri, **(auth or {})},
    )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode} before answering; see {log_path}"
            )
        if is_healthy(url):
            return proc
        time.sleep(0.5)
    stop_process_group(proc.pid)
    raise TimeoutError(f"mlflow server at {url} did not answer within {timeout_s:.0f}s; see {log_path}")


def is_healthy(url: str) -> bool:
    """True when the server at `url` answers its health endpoint."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def terminate_process_group(pid: int) -> None:
    """SIGTERM the process group led by `pid`, without waiting (none: nothing to do)."""
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except ProcessLookupError:
        pass


def stop_process_group(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group led by `pid` (gunicorn/uvicorn workers included), then SIGKILL."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        try:  # reap our own child if it is one
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
