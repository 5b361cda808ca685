"""A real `ray up` of cluster/onprem.yaml over SSH: a head on 127.0.0.1 and a worker on 127.0.0.2.

The test makes an SSH key, starts its own `sshd` on both loopback addresses (installing
openssh-server and rsync where missing, as root), launches the cluster with the on-prem config
(only the machine-specific values changed: addresses, user, key, paths, ports), submits a short
search through Ray's Python job submission API (cluster/jobs.py), checks that trials ran on the
worker and that a version was registered in the cluster's MLflow server, then `ray down` and
checks that nothing is left running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cluster.head_services import port_open
from cluster.jobs import JobRunner, cluster_token
from handoff.jobs import retrain_job, tune_job
from handoff.demo_loop import ROW
from tests.integration.conftest import REPO, SMALL, free_port

HEAD, WORKER = "127.0.0.1", "127.0.0.2"
RAY = str(Path(sys.executable).with_name("ray"))
TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def _ensure_ssh_tools() -> None:
    missing = [p for p, exe in (("openssh-server", "/usr/sbin/sshd"), ("rsync", "rsync"))
               if not (Path(exe).exists() or shutil.which(exe))]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"{' and '.join(missing)} missing and not root to install them: "
                    f"`sudo apt-get install -y {' '.join(missing)}`")
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, timeout=600,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True)


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """Our own sshd on both loopback addresses, key-only login for this user, stopped at the end."""
    _ensure_ssh_tools()
    if os.geteuid() != 0:
        pytest.fail("the ray up test starts sshd on port 22 and needs root (CI runs as root)")
    for host in (HEAD, WORKER):
        if port_open(22, host):
            pytest.fail(f"something already listens on {host}:22; stop it to run this test")
    d = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "sshd_config").write_text("\n".join([
        f"ListenAddress {HEAD}:22", f"ListenAddress {WORKER}:22", f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        f"PidFile {d / 'sshd.pid'}", "MaxStartups 100", "MaxSessions 100", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=open(d / "sshd.log", "wb"), stderr=subprocess.STDOUT)
    _wait(lambda: port_open(22, HEAD) and port_open(22, WORKER), 30, "sshd on both addresses")
    yield d / "client_key"
    proc.terminate()
    proc.wait(timeout=30)


def onprem_config(tmp: Path, key: Path, ports: dict[str, int], worker_temp: Path) -> dict:
    """cluster/onprem.yaml with this machine's values: addresses, user, key, directories, ports.

    Two nodes on one machine also need what two machines never do: the worker's own agent and
    metrics ports and node address, its own temp dir (else its runtime-env agent deletes the job's
    working_dir under the head's feet when its trials end), and no `ray stop` on the worker (it
    would stop the head)."""
    text = (REPO / "cluster" / "onprem.yaml").read_text()
    text = text.replace("~/handoff", str(tmp / "handoff")).replace("/mnt/handoff", str(tmp / "shared"))
    text = text.replace("--port=6379", f"--port={ports['gcs']}").replace("--ray-port 6379", f"--ray-port {ports['gcs']}")
    text = text.replace("$RAY_HEAD_IP:6379", f"$RAY_HEAD_IP:{ports['gcs']}")
    text = text.replace("--dashboard-port=8265", f"--dashboard-port={ports['dashboard']}")
    text = text.replace("--port 5000", f"--port {ports['mlflow']}").replace("10.0.0.10:5000", f"{HEAD}:{ports['mlflow']}")
    text = text.replace("--host 10.0.0.10", f"--host {HEAD}")
    cfg = yaml.safe_load(text)
    credentials = tmp / "mlflow-credentials.env"  # the cluster's MLflow user, as `handoff credentials` writes it
    made = subprocess.run([sys.executable, "-m", "handoff", "credentials", "--path", str(credentials)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    mount = next(k for k in cfg["file_mounts"] if k.endswith("handoff-mlflow-credentials.env"))
    cfg["file_mounts"][mount] = str(credentials)
    cfg["cluster_name"] = f"handoff-test-{os.getpid()}"
    cfg["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    cfg["auth"] = {"ssh_user": os.environ.get("USER") or "root", "ssh_private_key": str(key)}
    # the project's environment already exists here: link it instead of installing it again
    cfg["setup_commands"] = [f"ln -sfn {REPO / '.venv'} {tmp / 'handoff' / '.venv'}"] + [
        c for c in cfg["setup_commands"] if "pip install" not in c and "-m venv" not in c]
    head_start = cfg["head_start_ray_commands"]
    head_start[1] += f" --node-ip-address={HEAD} --num-cpus=1"
    worker_start = [c for c in cfg["worker_start_ray_commands"] if not c.endswith("ray stop")]
    worker_start[-1] += (f" --node-ip-address={WORKER} --num-cpus=2 --dashboard-agent-listen-port={free_port()}"
                         f" --dashboard-agent-grpc-port={free_port()} --metrics-export-port={free_port()}"
                         f" --runtime-env-agent-port={free_port()} --node-manager-port={free_port()}"
                         f" --object-manager-port={free_port()} --min-worker-port=20000 --max-worker-port=20999"
                         f" --temp-dir={worker_temp}")
    cfg["worker_start_ray_commands"] = worker_start
    return cfg


def _ray(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=check,
                          env={**os.environ, "RAY_AUTH_MODE": "token"})


def _alive_nodes(dashboard: str) -> dict[str, str]:
    """Live nodes' address → node id, from the dashboard's state API (with the token)."""
    request = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100",
                                     headers={"Authorization": f"Bearer {cluster_token()}"})
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            nodes = json.load(r)["data"]["result"]["result"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return {}
    return {n["node_ip"]: n["node_id"] for n in nodes if n["state"] == "ALIVE"}


def _post_job(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"entrypoint": "echo should-not-run"}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/jobs/", body, {
                "content-type": "application/json", **headers}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _last_json_object(text: str) -> dict:
    """The last JSON object in the text that starts at the beginning of a line."""
    decoder, found = json.JSONDecoder(), None
    for match in re.finditer(r"^\{", text, re.MULTILINE):
        try:
            found = decoder.raw_decode(text, match.start())[0]
        except json.JSONDecodeError:
            continue
    assert found is not None, f"no JSON result in the job's logs: {text[-3000:]}"
    return found


def _ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [p for p in out if ("raylet" in p or "gcs_server" in p) and "ps -eo" not in p]


#: the serving parts and the monitor stay on the head (Ray's own head resource): the worker's two CPUs
#: are the retraining trial's (two CPUs each, as the search's)
ON_HEAD = "{node:__internal_head__: 0.01}"
#: the monitor's settings for one quick step of the loop (windows of 300 rows, drift in two of them)
LOOP_STEP = ["window_rows=300", "min_rows=50", "persistence=2", "poll_seconds=0.5", "loop.tick_seconds=1",
             "loop.retrain.cooldown_s=0", "loop.data.recent_rows=600", "loop.retrain.max_attempts=1"]


def _loop_step(runner: JobRunner, gateway: int, mlflow: str, champion: int) -> dict:
    """Replay Shuttle rows with labels, a sensor recalibrated after 900, until the monitor's retraining
    job has succeeded and registered a version after `champion`; that job's details."""
    import threading

    from mlflow import MlflowClient

    from handoff.replay import LiveReplay, Recalibration
    from training.datasets import BUILTIN_DATASETS

    frame = BUILTIN_DATASETS["shuttle"][0]().to_pandas().iloc[20000:26000]
    features = [f"f{i}" for i in range(1, 10)]
    replay = LiveReplay(gateway, "onprem", features, frame[features].to_numpy(), frame["anomaly"].astype(int).tolist(),
                        Recalibration({"f1": (1.0, 20.0), "f3": (1.0, -10.0)}), change_at=900, prefix="onprem-r")
    sender = threading.Thread(target=replay.run, kwargs={"seconds": 420}, daemon=True)
    sender.start()
    client = MlflowClient(mlflow, registry_uri=mlflow)

    def retrained():
        jobs = [j for j in runner.client.list_jobs() if (j.metadata or {}).get("handoff.kind") == "retrain"
                and (j.metadata or {}).get("handoff.model") == "onprem"]
        done = [j for j in jobs if str(getattr(j.status, "value", j.status)) == "SUCCEEDED"]
        newer = [v for v in client.search_model_versions("name='onprem'") if int(v.version) > champion]
        failed = [j for j in jobs if str(getattr(j.status, "value", j.status)) in ("FAILED", "STOPPED")]
        if failed:
            raise AssertionError(f"the monitor's retraining failed: {runner.logs(failed[0].submission_id)[-4000:]}")
        return {"driver_node_id": done[0].driver_node_id, "version": int(newer[0].version)} if done and newer else None

    try:
        return _wait(retrained, 480, "the monitor's retraining job to register a version", poll_s=3)
    finally:
        replay.stop()
        sender.join(timeout=60)
        assert replay.before.failed == replay.after.failed == 0, replay.errors[:5]


def test_ray_up_onprem_search_on_the_worker_then_ray_down(sshd, tmp_path, monkeypatch):
    if not TOKEN_FILE.exists():
        _ray("get-auth-token", "--generate")
    # a cluster an earlier module shut down may take a while to exit on a busy machine; one still there
    # after a minute is another Ray, which `ray up` would stop
    _wait(lambda: not _ray_processes(), 60, f"the Ray processes of an earlier test to exit: {_ray_processes()}")
    ports = {"gcs": free_port(), "dashboard": free_port(), "mlflow": free_port()}
    cfg_path = tmp_path / "onprem.yaml"
    worker_temp = Path(tempfile.mkdtemp(prefix="hw", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    cfg_path.write_text(yaml.safe_dump(onprem_config(tmp_path, sshd, ports, worker_temp)))
    dashboard, mlflow = f"http://{HEAD}:{ports['dashboard']}", f"http://{HEAD}:{ports['mlflow']}"
    try:
        up = _ray("up", "-y", "--no-config-cache", str(cfg_path), check=False)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        # (the head may name itself by the machine's own address rather than 127.0.0.1)
        _wait(lambda: len(_alive_nodes(dashboard)) == 2 and WORKER in _alive_nodes(dashboard), 240,
              "the worker on 127.0.0.2 to join", poll_s=3)
        _wait(lambda: port_open(ports["mlflow"], HEAD), 120, "the MLflow server on the head")
        # MLflow answers no one without the cluster's credentials; this process acts with them, as every node's do
        try:
            urllib.request.urlopen(f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
            raise AssertionError("MLflow answered a request without credentials")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        for line in (tmp_path / "mlflow-credentials.env").read_text().splitlines():
            monkeypatch.setenv(*line.removeprefix("export ").split("=", 1))

        # secure by default: the jobs API refuses a submission without the token, or with a wrong one
        assert _post_job(dashboard, {}) == 401
        assert _post_job(dashboard, {"Authorization": "Bearer not-the-token"}) == 403

        runner = JobRunner(dashboard)  # with the token (~/.ray/auth_token), as every Ray client
        # two CPUs per trial: only the worker (2 CPUs; the head has 1) can run one
        overrides = [*SMALL, "name=onprem", "search.num_samples=3", "resources.cpu=2"]
        job_id = runner.submit(replace(tune_job("configs/shuttle.yaml", overrides), env={"HANDOFF_DEBUG": "1"}))
        statuses: list[str] = []
        final = runner.wait(job_id, timeout_s=600, on_status=statuses.append)
        logs = runner.logs(job_id)
        assert final == "SUCCEEDED", logs[-6000:]
        assert statuses[-1] == "SUCCEEDED" and len(statuses) >= 2  # progress was reported on the way
        result = _last_json_object(logs)  # `handoff tune --json` prints the result last
        # trials ran on the worker node (by node id: on one machine every process reports the
        # machine's own address as its `node_ip`)
        worker_id = _alive_nodes(dashboard)[WORKER]
        ran_on = {t["node_id"] for t in result["trials"]}
        assert ran_on == {worker_id}, (worker_id, ran_on)
        from mlflow import MlflowClient

        versions = MlflowClient(mlflow, registry_uri=mlflow).search_model_versions("name='onprem'")
        assert [int(v.version) for v in versions] == [result["version"]]
        # the shared storage held the search (checkpoints included)
        assert list((tmp_path / "shared" / "tune").glob("onprem-*/*/checkpoint_*"))

        # the CLI with a jobs API address runs the command there (logs streamed, the job's exit code)
        shown = subprocess.run([sys.executable, "-m", "handoff", "models", "onprem", "--json", "--address", dashboard],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
        assert _last_json_object(shown.stdout)["versions"][0]["version"] == result["version"]
        assert "as Ray job" in shown.stderr and "SUCCEEDED" in shown.stderr

        # deploy as a job: the champion is served on the head, and answers over HTTP; its monitor's loop
        # places retraining jobs on the worker by Ray's own node resource
        gateway = free_port()
        served = subprocess.run([sys.executable, "-m", "handoff", "serve", "onprem", "--address", dashboard,
                                 "--set", f"gateway.port={gateway}", "--set", "live_log.flush_seconds=0.5",
                                 *[a for p in [f"gateway.resources={ON_HEAD}", f"version_defaults.resources={ON_HEAD}",
                                               "gateway.cpus=0.2", "version_defaults.cpus=0.2"] for a in ("--set", p)],
                                 *[a for m in [*LOOP_STEP, f"resources={ON_HEAD}",
                                               f"loop.retrain.job_resources={{node:{WORKER}: 0.01}}"]
                                   for a in ("--monitoring-set", m)]],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        assert served.returncode == 0, served.stdout[-3000:] + served.stderr[-3000:]
        body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32",
                                       "data": ROW}]}).encode()
        request = urllib.request.Request(f"http://{HEAD}:{gateway}/v2/models/onprem/infer", body,
                                         {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.status == 200 and r.headers["x-model-version"] == str(result["version"])

        # one step of the loop there: drifted traffic with labels; the monitor submits a retraining job,
        # which runs on the worker and registers a new version in the head's MLflow
        retrained = _loop_step(runner, gateway, mlflow, result["version"])
        assert retrained["driver_node_id"] == worker_id, (retrained, worker_id)

        # a retraining job for one drift event runs at most once; a job can be stopped
        first = runner.submit(retrain_job("onprem", "event-1"))
        again = runner.submit(retrain_job("onprem", "event-1"))
        assert first == again and first.startswith("handoff-retrain-")
        assert sum(j.submission_id == first for j in runner.client.list_jobs()) == 1
        runner.stop(first)
        assert runner.wait(first, timeout_s=120) == "STOPPED"
    finally:
        down = _ray("down", "-y", str(cfg_path), check=False)
        try:
            assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
            # nothing left: no raylet or GCS, the MLflow server stopped with the head, ports closed
            _wait(lambda: not _ray_processes(), 60, "Ray processes to end")
            _wait(lambda: not port_open(ports["mlflow"], HEAD), 60, "the MLflow server to stop with the head")
            assert not any(port_open(p, HEAD) for p in ports.values())
        finally:  # whatever failed above, leave the machine clean for the tests after this one
            if _ray_processes():
                _ray("stop", "--force", check=False)
            shutil.rmtree(worker_temp, ignore_errors=True)
            bashrc = Path.home() / ".bashrc"  # the setup command's PATH line for this test's directory
            if bashrc.exists():
                bashrc.write_text("".join(line for line in bashrc.read_text().splitlines(keepends=True)
                                          if str(tmp_path) not in line))
