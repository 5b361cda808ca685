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


def mlflow_server_command(artifacts_dir: Path | str, host: str, port: int) -> list[str]:
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
    ]


def start_mlflow_server(
    backend_store_uri: str, artifacts_dir: Path | str, *, host: str = "127.0.0.1", port: int = 5000,
    log_path: Path, timeout_s: float = 90.0,
) -> subprocess.Popen:
    """Start the server in its own session (so it outlives the caller) and wait until it answers."""
    if "://" not in str(artifacts_dir):  # a local path; object stores need no directory
        Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        mlflow_server_command(artifacts_dir, host, port),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", BACKEND_ENV: backend_store_uri},
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
