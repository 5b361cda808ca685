"""The `handoff` CLI as users run it: real processes, a real local Ray, a real mlflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import EXAMPLE, SMALL, free_port, write_parquet

pytestmark = pytest.mark.integration

HANDOFF = [str(Path(sys.executable).with_name("handoff"))]


def run(args: list[str], timeout: float = 400, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*HANDOFF, *args], capture_output=True, text=True, timeout=timeout, **kw)


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_interrupted_search_resumes_and_registers(mlflow_server, shuttle_frame, tmp_path):
    data = write_parquet(shuttle_frame.iloc[:3000], tmp_path / "d.parquet")
    home = tmp_path / "home"
    args = ["tune", str(EXAMPLE), "--home", str(home), "--tracking-uri", mlflow_server,
            *sets(*SMALL, "name=resume-it", f"dataset.uri={data}", "search.num_samples=4", "search.epochs=3",
                  "search.max_concurrent_trials=1")]
    proc = subprocess.Popen([*HANDOFF, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(home.glob("tune/resume-it-*/*/checkpoint_*")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    assert list(home.glob("tune/resume-it-*/*/checkpoint_*")), "no trial checkpointed in time"
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, output
    assert "search interrupted" in output and "nothing registered" in output

    resumed = run([*args, "--resume", "--json"])
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["version"] == 1 and result["alias"] == "champion"
    assert len(result["trials"]) == 4 and all(t["status"] == "ok" for t in result["trials"])
    assert len(list(home.glob("tune/resume-it-*"))) == 1  # the same experiment, continued

    shown = run(["models", "resume-it", "--json", "--tracking-uri", mlflow_server, "--home", str(home)])
    assert shown.returncode == 0, shown.stderr
    versions = json.loads(shown.stdout)["versions"]
    assert versions[0]["aliases"] == ["champion"] and versions[0]["lineage"]["seed"] == "7"


def test_resume_with_a_changed_config_is_refused(mlflow_server, tmp_path):
    home = tmp_path / "home"
    missing = run(["tune", str(EXAMPLE), "--home", str(home), "--tracking-uri", mlflow_server, "--resume"])
    assert missing.returncode == 2 and "no earlier search of 'shuttle'" in missing.stderr


def test_unknown_model_is_a_clear_error(mlflow_server, tmp_path):
    shown = run(["models", "no-such-model", "--tracking-uri", mlflow_server, "--home", str(tmp_path)])
    assert shown.returncode == 2 and "no registered model named 'no-such-model'" in shown.stderr


def test_up_tune_models_down(shuttle_frame, tmp_path):
    """`handoff up` starts a token-authenticated Ray head and an MLflow server; later commands find them."""
    data = write_parquet(shuttle_frame.iloc[:3000], tmp_path / "d.parquet")
    home = tmp_path / "home"
    ports = [f"--mlflow-port={free_port()}", f"--ray-port={free_port()}", f"--dashboard-port={free_port()}"]
    started = run(["up", "--home", str(home), "--num-cpus=2", *ports], timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((home / "services.json").read_text())
    try:
        assert state["ray_address"].startswith("127.0.0.1:") and state["mlflow_uri"].startswith("http://127.0.0.1:")
        tuned = run(["tune", str(EXAMPLE), "--home", str(home), "--json",
                     *sets(*SMALL, "name=services-it", f"dataset.uri={data}", "search.num_samples=2")])
        assert tuned.returncode == 0, tuned.stderr
        assert json.loads(tuned.stdout)["tracking_uri"] == state["mlflow_uri"]
        shown = run(["models", "services-it", "--home", str(home)])
        assert shown.returncode == 0 and "champion" in shown.stdout, shown.stderr
    finally:
        stopped = run(["down", "--home", str(home)], timeout=180)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (alive(state["ray_pid"]) or alive(state["mlflow_pid"])):
        time.sleep(0.5)
    assert not alive(state["ray_pid"]) and not alive(state["mlflow_pid"])
    assert not (home / "services.json").exists()
