"""Jobs on the embedded default (`handoff up`): what a job produces lands in the cluster's store.

One `handoff up` for the module (its own ports and state directory). Searches are submitted the
three ways README shows: `JobRunner` from Python, the CLI's `--address`, and README's snippet as
written; each registered version is read back through the head's MLflow server and `handoff
models`, with its Tune results under the cluster's state directory, not in the job's working
directory. A job given no locations fails at once, naming them. Every service the head started
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.source import git_state
from cluster.jobs import JobError, JobRunner, JobSpec
from handoff.jobs import cli_job, tune_job
from tests.integration.conftest import REPO, SMALL, free_port, write_parquet

pytestmark = pytest.mark.integration

HANDOFF = str(Path(sys.executable).with_name("handoff"))
NAME = "jobs-it"


def handoff(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([HANDOFF, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """`handoff up` on free ports; `handoff down` at the end."""
    home = tmp_path_factory.mktemp("jobs-head") / "home"
    ports = {"mlflow": free_port(), "ray": free_port(), "dashboard": free_port()}
    started = handoff("up", "--home", str(home), "--num-cpus=2", f"--mlflow-port={ports['mlflow']}",
                      f"--ray-port={ports['ray']}", f"--dashboard-port={ports['dashboard']}", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((home / "services.json").read_text())
    try:
        yield {"home": home, "ports": ports, **state}
    finally:
        handoff("down", "--home", str(home), timeout=180)


@pytest.fixture(scope="module")
def data(shuttle_frame, tmp_path_factory) -> str:
    return str(write_parquet(shuttle_frame.iloc[:3000], tmp_path_factory.mktemp("jobs-data") / "d.parquet"))


def search_overrides(data: str, seed: int) -> list[str]:
    return [*SMALL, f"name={NAME}", f"dataset.uri={data}", "search.num_samples=2", f"seed={seed}"]


def registered_version(logs: str) -> int:
    """The version the job said it registered (`--json` output: `"version": N`)."""
    found = re.findall(r'"version":\s*(\d+)', logs)
    assert found, f"the job printed no registered version:\n{logs[-3000:]}"
    return int(found[-1])


def assert_stored_in_the_cluster(head: dict, version: int) -> None:
    """The version is in the head's MLflow server, `handoff models` shows it, and its Tune results
    (the experiment path tagged on it) lie under the cluster's state directory."""
    from mlflow import MlflowClient

    mv = MlflowClient(tracking_uri=head["mlflow_uri"]).get_model_version(NAME, str(version))
    experiment = Path(mv.tags["handoff.tune_experiment_path"])
    assert experiment.is_relative_to(head["home"] / "tune"), experiment
    assert "runtime_resources" not in str(experiment) and list(experiment.glob("*/checkpoint_*")), experiment
    assert mv.tags["handoff.git_commit"] == git_state(REPO)[0]  # the job's copy has no .git: the submitter said
    shown = handoff("models", NAME, "--json", "--home", str(head["home"]))
    assert shown.returncode == 0, shown.stderr
    assert version in [v["version"] for v in json.loads(shown.stdout)["versions"]]


def working_dirs_left_with_state() -> list[Path]:
    """State directories inside any unpacked job working_dir of this machine's Ray sessions."""
    root = Path("/tmp/ray")
    return [p for pattern in ("session_*/runtime_resources/working_dir_files/*/.handoff",
                              "session_*/runtime_resources/working_dir_files/*/mlruns")
            for p in root.glob(pattern)]


def test_a_search_submitted_with_jobrunner_registers_in_the_clusters_store(head, data):
    runner = JobRunner(head["dashboard_url"])
    job_id = runner.submit(tune_job("configs/shuttle.yaml", search_overrides(data, 7)))
    logs: list[str] = []
    status = runner.follow(job_id, logs.append)
    text = "".join(logs)
    assert status == "SUCCEEDED", text[-3000:]
    assert f'"tracking_uri": "{head["mlflow_uri"]}"' in text  # what the job says it used is the head's server
    assert_stored_in_the_cluster(head, registered_version(text))
    assert not working_dirs_left_with_state()


def test_a_search_run_with_the_clis_address_registers_in_the_clusters_store(head, data):
    before = json.loads(handoff("models", NAME, "--json", "--home", str(head["home"])).stdout)["versions"]
    args = ["tune", "configs/shuttle.yaml", "--json", "--address", head["dashboard_url"]]
    for item in search_overrides(data, 8):
        args += ["--set", item]
    tuned = handoff(*args)
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    version = registered_version(tuned.stdout)
    assert version == max(v["version"] for v in before) + 1
    assert_stored_in_the_cluster(head, version)
    assert not working_dirs_left_with_state()


def test_batch_inference_runs_on_the_cluster_with_the_clis_address_and_is_an_mlflow_run(head, data, tmp_path):
    """`handoff predict … --address URL` is a Ray job like every other command: the table is scored by
    the cluster, the output's files name the version and the run, and the run is in the head's store."""
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    out = tmp_path / "scored"
    scored = handoff("predict", NAME, "--input", data, "--output", str(out), "--json", "--no-progress",
                     "--address", head["dashboard_url"])
    assert scored.returncode == 0, scored.stdout[-3000:] + scored.stderr[-3000:]
    rows = int(re.findall(r'"rows_out":\s*(\d+)', scored.stdout)[-1])
    run_id = re.findall(r'"run_id":\s*"(\w+)"', scored.stdout)[-1]
    table = pq.read_table(out)
    assert rows == table.num_rows == 3000 and "anomaly" in table.column_names  # non-feature columns carried
    meta = pq.ParquetFile(next(out.glob("*.parquet"))).metadata.metadata
    assert meta[b"handoff.mlflow_run_id"].decode() == run_id and meta[b"handoff.model"] == NAME.encode()
    run = MlflowClient(tracking_uri=head["mlflow_uri"]).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["input"] == data
    assert run.data.params["version"] == meta[b"handoff.version"].decode()
    assert run.data.metrics["rows_out"] == 3000 and run.data.metrics["rows_per_s"] > 0
    assert len(run.data.params["input_fingerprint"]) == 64
    # the same command again is refused before any work: the output exists
    again = handoff("predict", NAME, "--input", data, "--output", str(out), "--address", head["dashboard_url"])
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr


def readme_snippet() -> str:
    """README's Python job-submission example, exactly as README shows it."""
    text = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "JobRunner(" in b]
    assert len(blocks) == 1, "README must show exactly one JobRunner example"
    return blocks[0]


def test_readmes_python_snippet_runs_as_written(head):
    """The snippet as written, on `handoff up`'s cluster; only the address differs (this head's port)."""
    snippet = readme_snippet()
    assert '"http://127.0.0.1:8265"' in snippet
    snippet = snippet.replace('"http://127.0.0.1:8265"', repr(head["dashboard_url"]))
    ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert ran.stdout.rstrip().endswith("SUCCEEDED"), ran.stdout[-3000:]
    version = registered_version(ran.stdout)
    name = re.findall(r'"name":\s*"([^"]+)"', ran.stdout)[-1]
    from mlflow import MlflowClient

    mv = MlflowClient(tracking_uri=head["mlflow_uri"]).get_model_version(name, version)
    assert Path(mv.tags["handoff.tune_experiment_path"]).is_relative_to(head["home"] / "tune")
    shown = handoff("models", name, "--json", "--home", str(head["home"]))
    assert int(version) in [v["version"] for v in json.loads(shown.stdout)["versions"]]


@pytest.mark.parametrize("unset, named", [
    ({"HANDOFF_HOME": "", "HANDOFF_MLFLOW__TRACKING_URI": ""}, "HANDOFF_HOME"),
    ({"HANDOFF_MLFLOW__TRACKING_URI": ""}, "HANDOFF_MLFLOW__TRACKING_URI"),
])
def test_a_job_that_finds_no_store_fails_at_once_naming_what_is_missing(head, data, tmp_path, unset, named):
    """A cluster that published nothing (simulated by blanking what `handoff up` published for this job):
    the job fails before any work, saying what to set, and writes nothing anywhere."""
    env = dict(unset)
    if "HANDOFF_HOME" not in unset:
        env["HANDOFF_HOME"] = str(tmp_path / "elsewhere")  # a home without `handoff up`'s services.json
    args = ["tune", "configs/shuttle.yaml"]
    for item in search_overrides(data, 9):
        args += ["--set", item]
    spec = cli_job("tune", args, env=env)
    runner = JobRunner(head["dashboard_url"])
    job_id = runner.submit(spec)
    status = runner.wait(job_id, timeout_s=300, poll_s=1)
    logs = runner.logs(job_id)
    assert status == "FAILED", logs[-3000:]
    assert named in logs and "--tracking-uri" in logs
    assert "fingerprint" not in logs  # refused before reading any data
    assert not (tmp_path / "elsewhere").exists() and not working_dirs_left_with_state()


def listening_sockets(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state owned by one of `pids` (from /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            found.append((_address(hex_addr, width), int(hex_port, 16), inodes[inode]))
    return found


def _address(hex_addr: str, width: int) -> str:
    """/proc/net's little-endian hex address as text (IPv4, or IPv6 including ::ffff:a.b.c.d)."""
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _process_tree(root: int) -> set[int]:
    """`root` and its descendants (from /proc: each process's parent)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parents[int(stat.parent.name)] = int(text.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def test_every_service_of_the_head_listens_on_loopback_only_and_the_token_is_required(head):
    pids = _process_tree(head["ray_pid"]) | _process_tree(head["mlflow_pid"])
    sockets = listening_sockets(pids)
    ports = {port for _, port, _ in sockets}
    # the ones a user names (GCS, dashboard + jobs API, MLflow) and those `handoff up` chose for Ray
    named = {head["ports"]["ray"], head["ports"]["dashboard"], head["ports"]["mlflow"], head["client_server_port"],
             head["agent_port"]}
    assert named <= ports and len(ports) >= 8, sockets  # the raylet's, the agents' and the dashboard's own too
    exposed = [s for s in sockets if not _loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    with pytest.raises(JobError, match="token|uthenticat|401|403"):
        JobRunner(head["dashboard_url"], token="not-the-clusters-token").submit(
            JobSpec(kind="probe", entrypoint="true"))


def test_a_second_handoff_up_on_a_port_in_use_says_which_and_how_to_choose_another(head, tmp_path):
    taken = handoff("up", "--home", str(tmp_path / "other"), f"--mlflow-port={head['ports']['mlflow']}",
                    f"--ray-port={free_port()}", f"--dashboard-port={free_port()}", timeout=120)
    assert taken.returncode == 1
    assert f"port {head['ports']['mlflow']}" in taken.stderr and "--mlflow-port" in taken.stderr, taken.stderr
    assert not (tmp_path / "other" / "services.json").exists()
