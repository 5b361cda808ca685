from pathlib import Path

import pytest

from cluster.connect import ray_address
from cluster.services import ServicesState, head_environment, resolve_tracking_uri
from cluster.settings import Settings, SettingsError
from handoff.remote import job_address


def test_defaults_and_precedence(tmp_path):
    s = Settings.resolve(environ={})
    assert s.home == Path(".handoff").absolute() and s.address is None
    env = {"HANDOFF_HOME": str(tmp_path / "a"), "HANDOFF_ADDRESS": "10.0.0.1:6379"}
    s = Settings.resolve(environ=env)
    assert s.home == tmp_path / "a" and s.address == "10.0.0.1:6379"
    s = Settings.resolve(environ=env, home=tmp_path / "b", address=None)
    assert s.home == tmp_path / "b" and s.address == "10.0.0.1:6379"


def test_tracking_uri_resolution(tmp_path):
    s = Settings.resolve(environ={}, home=tmp_path)
    assert resolve_tracking_uri(None, s, None) == f"sqlite:///{tmp_path}/mlflow.db"
    services = ServicesState(ray_address="127.0.0.1:6379", dashboard_url="http://127.0.0.1:8265",
                             mlflow_uri="http://127.0.0.1:5000", mlflow_pid=1, ray_pid=2)
    assert resolve_tracking_uri(None, s, services) == "http://127.0.0.1:5000"
    s2 = Settings.resolve(environ={"HANDOFF_MLFLOW__TRACKING_URI": "http://x:1"}, home=tmp_path)
    assert resolve_tracking_uri(None, s2, services) == "http://x:1"
    assert resolve_tracking_uri("http://cfg:2", s2, services) == "http://cfg:2"


# --- inside a Ray job: the cluster's locations or a clear refusal, never the working directory ---------

JOB = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}


def test_a_job_without_a_published_state_directory_is_refused_naming_how_to_set_it(tmp_path):
    with pytest.raises(SettingsError) as refused:
        Settings.resolve(environ=JOB, cwd=tmp_path)
    message = str(refused.value)
    assert "HANDOFF_HOME" in message and "HANDOFF_MLFLOW__TRACKING_URI" in message and "--tracking-uri" in message
    # outside a job the local default stays
    assert Settings.resolve(environ={}, cwd=tmp_path).job_working_dir is None


def test_a_job_never_writes_under_its_working_directory(tmp_path):
    workdir = tmp_path / "_ray_pkg_abc"
    workdir.mkdir()
    for home in (workdir / ".handoff", workdir, workdir / "x" / ".."):
        with pytest.raises(SettingsError, match="working directory"):
            Settings.resolve(environ={**JOB, "HANDOFF_HOME": str(home)}, cwd=workdir)
    with pytest.raises(SettingsError, match="working directory"):  # relative: resolved against the job's cwd
        Settings.resolve(environ=JOB, cwd=workdir, home=Path(".handoff"))
    s = Settings.resolve(environ={**JOB, "HANDOFF_HOME": str(tmp_path / "cluster-home")}, cwd=workdir)
    assert s.home == tmp_path / "cluster-home" and s.job_working_dir == workdir.resolve()
    for inside in ("tune", str(workdir / "tune"), f"file://{workdir}/t", "sqlite:///mlflow.db",
                   f"sqlite:///{workdir}/mlflow.db"):
        with pytest.raises(SettingsError, match="working directory"):
            s.refuse_in_working_dir("the thing", inside)
    for outside in (str(tmp_path / "tune"), "s3://bucket/tune", "http://127.0.0.1:5000", "postgresql://db/x",
                    f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "_ray_pkg_abc2")):
        s.refuse_in_working_dir("the thing", outside)


def test_a_job_finds_the_tracking_uri_the_cluster_published_or_fails(tmp_path):
    env = {**JOB, "HANDOFF_HOME": str(tmp_path / "home")}
    s = Settings.resolve(environ=env, cwd=tmp_path / "wd")
    with pytest.raises(SettingsError, match="no MLflow tracking URI") as refused:
        resolve_tracking_uri(None, s, None)  # no embedded sqlite fallback inside a job
    assert "HANDOFF_MLFLOW__TRACKING_URI" in str(refused.value)
    services = ServicesState(ray_address="127.0.0.1:6379", dashboard_url="http://127.0.0.1:8265",
                             mlflow_uri="http://127.0.0.1:5000", mlflow_pid=1, ray_pid=2)
    assert resolve_tracking_uri(None, s, services) == "http://127.0.0.1:5000"  # handoff up's services.json
    published = Settings.resolve(environ={**env, "HANDOFF_MLFLOW__TRACKING_URI": "http://h:5000"}, cwd=tmp_path / "wd")
    assert resolve_tracking_uri(None, published, None) == "http://h:5000"
    with pytest.raises(SettingsError, match="working directory"):
        resolve_tracking_uri("sqlite:///mlflow.db", published, None)


def test_a_job_joins_the_cluster_that_runs_it_and_never_submits_itself_again(tmp_path):
    services = ServicesState(ray_address="127.0.0.1:6379", dashboard_url="http://127.0.0.1:8265",
                             mlflow_uri="http://127.0.0.1:5000", mlflow_pid=1, ray_pid=2)
    outside = Settings.resolve(environ={}, home=tmp_path)
    assert ray_address(outside, services) == "127.0.0.1:6379"
    job = Settings.resolve(environ={**JOB, "HANDOFF_ADDRESS": "10.0.0.1:6379"}, cwd=tmp_path / "wd", home=tmp_path)
    assert ray_address(job, services) is None
    url = "http://127.0.0.1:8265"
    assert job_address(["tune", "--address", url], {**JOB, "HANDOFF_ADDRESS": url}) is None


def test_the_head_publishes_the_locations_and_keeps_the_callers_overrides_out(tmp_path):
    s = Settings.resolve(environ={}, home=tmp_path / "home")
    caller = {"PATH": "/bin", "HANDOFF_SEARCH__NUM_SAMPLES": "64", "HANDOFF_ADDRESS": "http://x:8265",
              "HANDOFF_HOME": "/elsewhere"}
    env = head_environment(s, "http://127.0.0.1:5123", caller)
    assert env["HANDOFF_HOME"] == str(tmp_path / "home") and env["HANDOFF_MLFLOW__TRACKING_URI"] == "http://127.0.0.1:5123"
    assert "HANDOFF_SEARCH__NUM_SAMPLES" not in env and "HANDOFF_ADDRESS" not in env and env["PATH"] == "/bin"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert Path(env["HANDOFF_PYTHON"]).name.startswith("python")


def test_a_homes_artifact_destination_is_chosen_once_and_another_is_refused(tmp_path):
    from cluster.services import artifacts_destination, keep_artifacts_destination
    from cluster.settings import Settings, SettingsError

    def started(settings, destination):  # what a successful `up` leaves: the store, and the choice kept
        settings.home.mkdir(parents=True, exist_ok=True)
        (settings.home / "mlflow.db").write_bytes(b"")
        keep_artifacts_destination(settings, destination)

    home = Settings.resolve(environ={}, home=tmp_path / "h")
    assert artifacts_destination(home, None) == str((tmp_path / "h" / "mlartifacts").absolute())  # the default
    assert not (tmp_path / "h").exists()  # choosing writes nothing
    started(home, artifacts_destination(home, None))
    with pytest.raises(SettingsError, match="would lose them"):
        artifacts_destination(home, "s3://bucket/mlflow")
    other = Settings.resolve(environ={}, home=tmp_path / "other")
    assert artifacts_destination(other, "s3://bucket/mlflow") == "s3://bucket/mlflow"
    started(other, "s3://bucket/mlflow")
    assert artifacts_destination(other, None) == artifacts_destination(other, "s3://bucket/mlflow") == "s3://bucket/mlflow"


def test_an_up_that_failed_keeps_no_artifact_destination(tmp_path):
    """`up` on a busy port fails before anything starts: a later `up --artifacts s3://…` of the same home
    is not refused as if artifacts were stored."""
    import socket

    from typer.testing import CliRunner

    from cluster.head_services import free_port
    from cluster.services import ARTIFACTS_FILE, artifacts_destination, up
    from handoff.cli import app

    home = Settings.resolve(environ={}, home=tmp_path / "h")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        others = ["--dashboard-port", str(free_port()), "--mlflow-port", str(free_port())]
        first = CliRunner().invoke(app, ["up", "--home", str(home.home), "--ray-port", port, *others])
        assert first.exit_code == 1 and "is in use" in first.output
        assert not (home.home / ARTIFACTS_FILE).exists()
        again = CliRunner().invoke(app, ["up", "--home", str(home.home), "--ray-port", port, *others,
                                         "--artifacts", "s3://bucket/mlflow"])
        assert again.exit_code == 1 and "is in use" in again.output and "would lose them" not in again.output
        with pytest.raises(RuntimeError, match="is in use"):
            up(home, ray_port=int(port), artifacts="s3://bucket/mlflow")
    assert artifacts_destination(home, "s3://bucket/mlflow") == "s3://bucket/mlflow"


@pytest.mark.parametrize("args, message", [
    (["--ray-port", "70000"], "--ray-port 70000: a port is a number from 1 to 65535"),
    (["--mlflow-port", "0"], "--mlflow-port 0: a port is a number from 1 to 65535"),
    (["--dashboard-port", "-5"], "--dashboard-port -5: a port is a number from 1 to 65535"),
    (["--mlflow-port", "6379"], "--ray-port, --mlflow-port: the same port 6379"),
    (["--num-cpus", "0"], "--num-cpus 0: the Ray head needs at least 1 CPU"),
    (["--home", "afile"], "afile (--home, HANDOFF_HOME): {tmp}/afile is a file, not a directory"),
    (["--home", "afile/sub"], "afile/sub (--home, HANDOFF_HOME): {tmp}/afile is a file, not a directory"),
    (["--home", "/proc/nope"], "/proc/nope (--home, HANDOFF_HOME) cannot be made"),
])
def test_up_refuses_what_it_cannot_start_with_before_starting_anything(tmp_path, monkeypatch, args, message):
    from typer.testing import CliRunner

    import cluster.services
    from handoff.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(cluster.services, "port_open", lambda port: pytest.fail("checked a port"))
    result = CliRunner().invoke(app, ["up", *args] if "--home" in args else ["up", "--home", "h", *args])
    said = " ".join(result.output.split())  # the console wraps at 80 columns
    assert result.exit_code == 2 and message.format(tmp=tmp_path) in said and said.startswith("error:"), said
    assert not (tmp_path / "h").exists()


def test_a_file_that_must_appear_whole_is_staged_beside_it_on_a_disk_and_put_in_place_on_an_object_store(tmp_path):
    import pyarrow.fs as pafs

    from cluster.storage import publish, staging_path

    disk = pafs.LocalFileSystem()
    final = str(tmp_path / "d" / "part-1.parquet")
    staged = staging_path(disk, final)
    assert staged.startswith(str(tmp_path / "d" / ".part-1.parquet.")) and staged.endswith(".tmp")
    (tmp_path / "d").mkdir()
    Path(staged).write_bytes(b"x")
    publish(disk, staged, final)
    assert Path(final).read_bytes() == b"x" and not Path(staged).exists()
    s3 = pafs.S3FileSystem(endpoint_override="127.0.0.1:1", scheme="http", anonymous=True)  # no request is made
    assert staging_path(s3, "bucket/d/part-1.parquet") == "bucket/d/part-1.parquet"  # a move there is copy + delete


def test_a_home_with_a_store_from_before_the_choice_was_kept_keeps_its_local_artifacts(tmp_path):
    from cluster.services import artifacts_destination
    from cluster.settings import Settings, SettingsError

    home = Settings.resolve(environ={}, home=tmp_path / "h")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "mlflow.db").write_bytes(b"")  # registered versions whose artifacts are under mlartifacts
    with pytest.raises(SettingsError, match="would lose them"):
        artifacts_destination(home, "s3://bucket/mlflow")
    assert artifacts_destination(home, None) == str((tmp_path / "h" / "mlartifacts").absolute())
