"""The `ray up` configs pass Ray's own schema validation (offline) and keep the secure defaults."""

import copy
import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.head_services import expand_store_uri, head_gone

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "cluster.yaml", REPO / "cluster" / "onprem.yaml"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def commands(cfg: dict) -> str:
    keys = ("setup_commands", "head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
    return "\n".join(c for k in keys for c in cfg.get(k) or [])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ray_accepts_the_config(path):
    validate_config(prepare_config(load(path)))


def test_ray_refuses_a_broken_config_so_the_check_above_means_something():
    cfg = load(CONFIGS[0])
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["cpu_worker"]["max_wokers"] = 3  # misspelt
    with pytest.raises(Exception, match="max_wokers"):
        validate_config(prepare_config(bad))


def test_aws_cluster_has_head_cpu_and_gpu_workers_with_autoscaling_bounds():
    cfg = load(CONFIGS[0])
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head" and {"cpu_worker", "gpu_worker"} <= set(types)
    for t in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[t]["min_workers"] <= types[t]["max_workers"] <= cfg["max_workers"]
    # inference open only on 8000 (HTTP) and 8001 (gRPC), only to the networks the config names
    (rule,) = cfg["provider"]["security_group"]["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (8000, 8001)
    assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule["IpRanges"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_secure_defaults_token_auth_and_localhost_control_planes(path):
    cfg = load(path)
    text = commands(cfg)
    assert "export RAY_AUTH_MODE=token" in text
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token reaches every node
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head  # dashboard + jobs API
    # MLflow on an address the workers reach, behind basic auth, with credentials synced like the token
    assert "cluster.head_services mlflow" in head and "--auth" in head and "--host 127.0.0.1" not in head
    assert cfg["file_mounts"]["~/handoff-mlflow-credentials.env"] == "~/.handoff/mlflow-credentials.env"
    assert "'. ~/handoff-mlflow-credentials.env'" in text and "TRACKING_URI=http://127.0.0.1" not in text
    if cfg["provider"]["type"] == "local":  # the head's fixed address, where the server listens
        head_ip = cfg["provider"]["head_ip"]
        assert f"--host {head_ip}" in head and f"TRACKING_URI=http://{head_ip}:5000" in text
    else:  # a worker's RAY_HEAD_IP, else (on the head) its own private address
        assert '--host "$(hostname -I' in head and "${RAY_HEAD_IP:-$(hostname -I" in text
    assert "-r requirements.lock" in text and cfg["file_mounts"]["~/handoff"] == "."  # pinned install, synced project


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_value_a_user_must_change_is_marked(path):
    lines = path.read_text().splitlines()
    must = re.compile(r"^\s*(cluster_name|region|availability_zone|head_ip|worker_ips|ssh_user|ssh_private_key|"
                      r"ImageId|Arn|CidrIp|InstanceType|GroupName|max_workers):")
    unmarked = [line for line in lines if must.match(line.lstrip("- ")) and "CHANGE" not in line]
    assert not unmarked, unmarked
    placeholders = {"my-handoff-bucket", "/mnt/handoff"} & set(re.findall(r"my-handoff-bucket|/mnt/handoff", path.read_text()))
    for p in placeholders:  # a value used in several places is declared once, marked
        assert any(p in line and "CHANGE" in line for line in lines), p


def test_mlflow_follows_the_ray_head():
    assert not head_gone([True, False, False], 3) and head_gone([True, False, False, False], 3)
    assert not head_gone([False, False], 3)  # too few probes to tell
    assert expand_store_uri("sqlite:///~/m.db") == f"sqlite:///{Path.home()}/m.db"
    assert expand_store_uri("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize("where, message", [
    ("afile/x.env", "--path afile/x.env: afile is a file, not a directory"),
    ("afile/sub/x.env", "--path afile/sub/x.env: afile is a file, not a directory"),
    ("/proc/nope/x.env", "--path /proc/nope/x.env: cannot be written (/proc/nope:"),
    ("adir", "--path adir is a directory: name the file to write"),
    ("afile", "afile exists: kept"),
])
def test_credentials_refuse_a_path_they_cannot_write_naming_it_and_why(tmp_path, monkeypatch, where, message):
    from typer.testing import CliRunner

    from handoff.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("kept\n")
    (tmp_path / "adir").mkdir()
    result = CliRunner().invoke(app, ["credentials", "--path", where])
    said = " ".join(result.output.split())  # the console wraps at 80 columns
    assert result.exit_code == 2 and said.startswith(f"error: {message}"), said
    assert (tmp_path / "afile").read_text() == "kept\n" and not any((tmp_path / "adir").iterdir())
    written = CliRunner().invoke(app, ["credentials", "--path", "new/x.env"])
    assert written.exit_code == 0 and (tmp_path / "new" / "x.env").stat().st_mode & 0o777 == 0o600
