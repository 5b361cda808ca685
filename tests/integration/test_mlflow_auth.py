"""The head's MLflow server for other nodes (`cluster.head_services mlflow --auth`), for real: MLflow's
basic-auth app with the cluster's credentials from the environment, never on a command line;
anonymous and wrong-password requests refused, Handoff's registry working with the credentials; it
stops when the Ray head (here: a port it follows) goes away."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cluster.head_services import free_port
from cluster.mlflow_server import is_healthy

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def request(url: str, user: str | None = None, password: str | None = None) -> int:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def group_cmdlines(pgid: int) -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) == pgid:
                    lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, ProcessLookupError):
                pass
    return lines


def test_an_authenticated_head_server_refuses_strangers_and_serves_the_cluster(tmp_path):
    credentials = tmp_path / "mlflow-credentials.env"
    made = subprocess.run([str(Path(sys.executable).with_name("handoff")), "credentials", "--path", str(credentials)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert credentials.stat().st_mode & 0o777 == 0o600
    env_lines = dict(line.removeprefix("export ").split("=", 1) for line in credentials.read_text().splitlines())
    user, password = env_lines["MLFLOW_TRACKING_USERNAME"], env_lines["MLFLOW_TRACKING_PASSWORD"]
    again = subprocess.run([str(Path(sys.executable).with_name("handoff")), "credentials", "--path", str(credentials)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "kept" in again.stderr and credentials.read_text().count(password) == 1

    head = socket.socket()  # the Ray head's port the server follows
    head.bind(("127.0.0.1", 0))
    head.listen()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "cluster.head_services", "mlflow", "--auth", "--backend-store-uri",
         f"sqlite:///{tmp_path}/mlflow.db", "--auth-db", f"sqlite:///{tmp_path}/auth.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--ray-port", str(head.getsockname()[1]), "--log", str(tmp_path / "logs" / "server.log"), "--poll-s", "0.5"],
        cwd=REPO, env={**os.environ, **env_lines}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not is_healthy(url):  # the health check needs no credentials (load balancers, `handoff up`)
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()[-3000:]
            time.sleep(0.5)
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=10"
        assert request(search) == 401
        assert request(search, user, "wrong") == 401
        assert request(search, user, password) == 200
        assert not any(password in line for line in group_cmdlines(os.getpgid(server.pid)))  # never on a command line
        script = ("import mlflow, json; from mlflow import MlflowClient; mlflow.set_tracking_uri(%r); "
                  "c = MlflowClient(); c.create_registered_model('authed'); "
                  "print(json.dumps([m.name for m in c.search_registered_models()]))") % url
        ok = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env_lines}, capture_output=True,
                            text=True, timeout=120)
        assert ok.returncode == 0 and json.loads(ok.stdout.strip().splitlines()[-1]) == ["authed"], ok.stderr[-2000:]
        stranger = subprocess.run([sys.executable, "-c", script.replace("'authed'", "'other'")],
                                  env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
                                  capture_output=True, text=True, timeout=120)
        assert stranger.returncode != 0 and "401" in stranger.stderr + stranger.stdout
        head.close()  # the Ray head stops: so does the server
        server.wait(timeout=60)
        assert not is_healthy(url)
    finally:
        head.close()
        if server.poll() is None:
            os.killpg(os.getpgid(server.pid), 9)
