"""The `handoff` CLI as users run it: real processes, a real local Ray, a real mlflow server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import EXAMPLE, SMALL, free_port, write_parquet
from .load import serve_replicas, unchanged_except_new

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
        assert "reference profile of services-it v1 stored" in " ".join(tuned.stderr.split())
        shown = run(["models", "services-it", "--home", str(home)])
        assert shown.returncode == 0 and "champion" in shown.stdout, shown.stderr
        lineage = json.loads(run(["models", "services-it", "--home", str(home), "--json"]).stdout)["versions"][0]["lineage"]
        # calibration, checked at registration (a 2-epoch model is far from calibrated: its ECE is what it is)
        assert 0 <= float(lineage["ece"]) <= 1 and float(lineage["temperature"]) > 0
        assert float(lineage["ece_with_temperature"]) <= float(lineage["ece"]) or float(lineage["temperature"]) == 1
    finally:
        stopped = run(["down", "--home", str(home)], timeout=180)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    from cluster.ray_head_stop import group_members

    def left() -> list:  # every process of the head's group (its leader's pid), not only the leader
        return [m for m in group_members(state["ray_pid"]) if not m.zombie]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (left() or alive(state["mlflow_pid"])):
        time.sleep(0.5)
    assert not left() and not alive(state["ray_pid"]) and not alive(state["mlflow_pid"]), left()
    assert not (home / "services.json").exists()


def test_serving_commands_on_the_cluster_handoff_up_started(shuttle_frame, tmp_path):
    """serve → infer → canary → status (Ray's Prometheus metrics) → promote → rollback → unserve.

    Only `serve` names the serving config (a port and CPUs of its own): the later commands keep it in
    force without repeating it, one of them run as a Ray job through the jobs API, and none of them
    restarts a replica (their actor ids are read before and after each)."""
    import urllib.request

    data = write_parquet(shuttle_frame.iloc[:3000], tmp_path / "d.parquet")
    home = tmp_path / "home"
    ports = [f"--mlflow-port={free_port()}", f"--ray-port={free_port()}", f"--dashboard-port={free_port()}"]
    http_port = free_port()
    serving = ["--home", str(home), "--set", f"gateway.port={http_port}", "--set", "gateway.cpus=0.2",
               "--set", "version_defaults.cpus=0.2"]
    assert run(["up", "--home", str(home), "--num-cpus=2", *ports], timeout=300).returncode == 0
    try:
        for seed in (7, 8):
            tuned = run(["tune", str(EXAMPLE), "--home", str(home), "--json",
                         *sets(*SMALL, "name=cli-serve", f"dataset.uri={data}", "search.num_samples=1", f"seed={seed}")])
            assert tuned.returncode == 0, tuned.stderr
        served = run(["serve", "cli-serve", "--json", *serving])
        assert served.returncode == 0, served.stderr
        assert json.loads(served.stdout)["weights"] == {"1": 1.0}
        monitor = run(["monitor", "cli-serve", "status", "--json", "--home", str(home)])
        assert monitor.returncode == 0 and json.loads(monitor.stdout)["running"], monitor.stderr
        body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32",
                                       "data": [50, 0, 80, 0, 20, 0, 30, 60, 30]}]}).encode()
        url = f"http://127.0.0.1:{http_port}/v2/models/cli-serve/infer"
        for _ in range(20):
            with urllib.request.urlopen(urllib.request.Request(url, body, {"content-type": "application/json"}),
                                        timeout=30) as r:
                assert r.status == 200 and r.headers["x-model-version"] == "1"
        dashboard = json.loads((home / "services.json").read_text())["dashboard_url"]
        replicas = serve_replicas(dashboard)
        assert set(replicas) == {"handoff-gateway", "cli-serve-v1"}, replicas
        restarted = run(["monitor", "cli-serve", "stop", "--home", str(home)]), \
            run(["monitor", "cli-serve", "start", "--home", str(home)])
        assert all(r.returncode == 0 for r in restarted), [r.stderr for r in restarted]
        canaried = run(["canary", "cli-serve", "2", "--percent", "10", "--json", "--home", str(home)])
        assert json.loads(canaried.stdout)["weights"] == {"1": 0.9, "2": 0.1}, canaried.stderr
        after = serve_replicas(dashboard)
        assert not unchanged_except_new(replicas, after, {"cli-serve-v2"}) and after.get("cli-serve-v2"), after
        replicas = after
        deadline, rows = time.monotonic() + 90, []
        while time.monotonic() < deadline:  # the agent exports recorded metrics every few seconds
            shown = run(["status", "--json", "--home", str(home)])
            assert shown.returncode == 0, shown.stderr
            rows = json.loads(shown.stdout)["versions"]
            if any(r["version"] == 1 and r["requests"] >= 20 for r in rows):
                break
            time.sleep(3)
        by_version = {r["version"]: r for r in rows}
        assert json.loads(shown.stdout)["monitors"]["cli-serve"]["running"]
        assert by_version[1]["drift"] == "no window yet" and by_version[1]["live_accuracy"] == "-"
        assert by_version[1]["requests"] >= 20 and by_version[1]["weight"] == pytest.approx(0.9)
        assert by_version[2]["replicas"] == 1 and by_version[1]["status"] == "RUNNING"
        assert by_version[1]["device"] == by_version[2]["device"] == "cpu"  # where the weights are
        # as a Ray job: a caller with a runtime environment of its own (the uploaded working_dir)
        promoted = run(["promote", "cli-serve", "2", "--json", "--home", str(home), "--address", dashboard])
        assert promoted.returncode == 0 and '"champion": 2' in promoted.stdout, promoted.stderr[-3000:]
        assert serve_replicas(dashboard) == replicas
        rolled = run(["rollback", "cli-serve", "--json", "--home", str(home)])
        assert json.loads(rolled.stdout) == {"weights": {"1": 1.0}, "shadow": {}, "champion": 1}
        assert serve_replicas(dashboard) == {app: ids for app, ids in replicas.items() if app != "cli-serve-v2"}
        with urllib.request.urlopen(urllib.request.Request(url, body, {"content-type": "application/json"}),
                                    timeout=30) as r:
            assert r.status == 200 and r.headers["x-model-version"] == "1"  # the port it was served on
        again = run(["rollback", "cli-serve", *serving])
        assert again.returncode == 2 and "no previous champion" in again.stderr
        unserved = run(["unserve", "cli-serve", *serving])
        assert unserved.returncode == 0 and "monitor stopped" in unserved.stdout, unserved.stderr
        twice = run(["unserve", "cli-serve", *serving])  # no longer "no longer served", exit 0: not served
        assert twice.returncode == 2 and "'cli-serve' is not served" in twice.stderr, twice.stdout + twice.stderr
        stopped = run(["monitor", "cli-serve", "status", "--json", "--home", str(home)])
        assert stopped.returncode == 0 and not json.loads(stopped.stdout)["running"], stopped.stderr
        assert run(["events", "cli-serve", "--json", "--home", str(home)]).returncode == 0
        bad = run(["monitor", "cli-serve", "restart", "--home", str(home)])
        assert bad.returncode == 2 and "usage: handoff monitor NAME start|stop|status" in bad.stderr
        live = home / "live" / "model=cli-serve"
        written = pq.read_table(live, columns=["request_id"]).num_rows
        assert written >= 20
        # served again with a live log that only a graceful stop writes: `handoff down` must write it
        assert run(["serve", "cli-serve", *serving, "--set", "live_log.flush_seconds=3600"]).returncode == 0
        for _ in range(7):
            with urllib.request.urlopen(urllib.request.Request(url, body, {"content-type": "application/json"}),
                                        timeout=30) as r:
                assert r.status == 200
        down = run(["down", "--home", str(home)], timeout=300)
        assert down.returncode == 0 and "live logs written" in down.stdout, down.stderr
        assert pq.read_table(live, columns=["request_id"]).num_rows == written + 7
    finally:
        assert run(["down", "--home", str(home)], timeout=180).returncode == 0
