"""Job specs and the CLI's choice between running here and submitting a Ray job (pure parts)."""

import shlex

from cluster.jobs import REPO_ROOT, cluster_token, deterministic_id, runtime_env
from handoff.jobs import deploy_job, retrain_job, tune_job
from handoff.remote import job_address, without_address


def test_a_dashboard_url_submits_a_host_port_joins_and_local_commands_never_leave():
    url = "http://127.0.0.1:8265"
    assert job_address(["tune", "c.yaml", "--address", url], {}) == url
    assert job_address(["tune", "c.yaml", f"--address={url}"], {}) == url
    assert job_address(["status"], {"HANDOFF_ADDRESS": "https://head:8265"}) == "https://head:8265"
    assert job_address(["tune", "--address", "127.0.0.1:6379"], {}) is None  # joins as a driver
    assert job_address(["tune"], {}) is None
    assert job_address(["up", "--address", url], {}) is None  # local services stay local
    assert job_address(["tune", "--help", "--address", url], {}) is None  # help is answered here
    # the flag wins over the environment
    assert job_address(["tune", "--address", "h:6379"], {"HANDOFF_ADDRESS": url}) is None


def test_the_job_runs_the_same_command_without_the_address():
    argv = ["tune", "c.yaml", "--address", "http://h:8265", "--set", "seed=3", "--address=http://x"]
    assert without_address(argv) == ["tune", "c.yaml", "--set", "seed=3"]


def test_retraining_runs_at_most_once_per_drift_event():
    a = retrain_job("shuttle", "event-17")
    b = retrain_job("shuttle", "event-17")
    c = retrain_job("shuttle", "event-18")
    retry = retrain_job("shuttle", "event-17", attempt=1)
    assert a.submission_id == b.submission_id != c.submission_id != retry.submission_id != a.submission_id
    assert a.submission_id == deterministic_id("retrain", "shuttle", "event-17", 0)
    assert a.env == {"HANDOFF_PARENT_EVENT": "event-17"} and a.kind == "retrain"
    assert shlex.split(a.entrypoint)[1:] == ["-m", "handoff", "retrain", "shuttle", "--event", "event-17", "--json"]


def test_cluster_knows_nothing_of_the_layers_above_it():
    import ast
    from pathlib import Path

    for path in Path(REPO_ROOT / "cluster").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & {"training", "serving", "monitoring", "handoff"}, path
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert not defined & {"cli_job", "tune_job", "retrain_job", "deploy_job"}, path  # no CLI command lines


def test_entry_points_are_handoff_commands_that_need_no_cpu_of_their_own():
    spec = tune_job("configs/my config.yaml", ["search.num_samples=4", "seed=9"])
    assert shlex.split(spec.entrypoint) == ["${HANDOFF_PYTHON:-python}", "-m", "handoff", "tune", "configs/my config.yaml", "--json",
                                            "--set", "search.num_samples=4", "--set", "seed=9"]
    assert spec.num_cpus == 0 and spec.num_gpus == 0 and spec.submission_id is None
    assert shlex.split(deploy_job("shuttle").entrypoint)[3:] == ["serve", "shuttle"]


def test_the_repository_travels_without_environments_or_state():
    env = runtime_env(tune_job("c.yaml"))
    assert env["working_dir"] == str(REPO_ROOT)
    assert {".venv", ".git", ".handoff", "mlruns"} <= set(env["excludes"])
    assert env["env_vars"]["PYTHONUNBUFFERED"] == "1"


def test_an_installed_handoff_sends_no_working_dir():
    """From a wheel there is no checkout: the folder above the packages is site-packages, which a job
    must never upload; the job runs the Handoff installed on the cluster."""
    env = runtime_env(tune_job("c.yaml"), working_dir=None)
    assert "working_dir" not in env and "excludes" not in env
    assert env["env_vars"]["PYTHONUNBUFFERED"] == "1"


def test_the_token_is_found_where_ray_clients_find_it(tmp_path):
    assert cluster_token({"RAY_AUTH_TOKEN": " abc\n"}, tmp_path) == "abc"
    (tmp_path / "t").write_text("from-path\n")
    assert cluster_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")}, tmp_path) == "from-path"
    assert cluster_token({}, tmp_path) is None  # no ~/.ray/auth_token under this home
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token")
    assert cluster_token({}, tmp_path) == "home-token"


def test_a_job_knows_the_commit_it_was_submitted_from(tmp_path):
    import subprocess

    from cluster.source import COMMIT_ENV, DIRTY_ENV, git_state, source_env, source_state

    repo = tmp_path / "repo"
    repo.mkdir()

    assert source_env(repo) == {}  # not a checkout: nothing to tell
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.py").write_text("a = 1\n")
    subprocess.run([*git, "add", "f.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit, dirty = git_state(repo)
    assert len(commit) == 40 and not dirty
    (repo / "f.py").write_text("a = 2\n")
    env = runtime_env(tune_job("c.yaml"), working_dir=repo)["env_vars"]
    assert env[COMMIT_ENV] == commit and env[DIRTY_ENV] == "true"
    copy = tmp_path / "unpacked"  # the job's copy: no .git, so the submitter's record is used
    copy.mkdir()
    assert source_state(copy, {COMMIT_ENV: commit, DIRTY_ENV: "false"}) == (commit, False)
    assert source_state(copy, {}) == ("unknown", True)
    assert source_state(repo, {COMMIT_ENV: "0" * 40}) == (commit, True)  # a real checkout wins


def test_a_command_line_sent_to_a_cluster_is_checked_here_first():
    """`--address http://…` / HANDOFF_ADDRESS: a usage error is answered here with exit 2, as without it,
    and nothing is submitted; a command whose output would stay on the cluster is refused."""
    import typer

    from handoff.cli import app
    from handoff.remote import refusal

    command = typer.main.get_command(app)
    url = "http://127.0.0.1:8265"
    assert "Missing argument 'name'" in refusal(["models", "--address", url], command)
    assert "Invalid value for '--num-samples'" in refusal(["tune", "--num-samples", "abc", f"--address={url}"], command)
    assert "No such option: --bogus" in refusal(["status", "--bogus", "--address", url], command)
    assert "no such command 'nosuch'" in refusal(["nosuch", "--address", url], command)
    assert "writes its report files on the machine it runs on" in refusal(["report", "m", "--address", url], command)
    assert refusal(["traffic", "m", "1=100", "--address", url], command) is None
    assert refusal(["tune", "configs/shuttle.yaml", "--set", "seed=3", "--address", url], command) is None
    assert refusal(["models", "shuttle", "--json"], command) is None


def test_the_jobs_exit_code_is_the_commands():
    from handoff.remote import exit_code

    assert exit_code("SUCCEEDED", "") == 0
    assert exit_code("FAILED", "Job entrypoint command failed with exit code 2, last available logs: …") == 2
    assert exit_code("FAILED", "Job entrypoint command failed with exit code 1. No logs available.") == 1
    assert exit_code("FAILED", "runtime_env setup failed: pip install …") == 1
    assert exit_code("STOPPED", "Job was intentionally stopped.") == 1


def test_local_only_commands_never_leave_and_settings_travel_with_the_job():
    from handoff.model_environment import forwarded

    url = "http://127.0.0.1:8265"
    for command in (["credentials"], ["feedback", "m", "labels.csv"], ["up"], ["down"], ["demo"]):
        assert job_address(command, {"HANDOFF_ADDRESS": url}) is None, command
    env = {"HANDOFF_SEARCH__NUM_SAMPLES": "4", "HANDOFF_ADDRESS": url, "HANDOFF_HOME": "/here", "PATH": "/bin"}
    assert forwarded(env) == {"HANDOFF_SEARCH__NUM_SAMPLES": "4"}
