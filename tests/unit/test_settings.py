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
    from cluster.services import artifacts_destination
    from cluster.settings import Settings, SettingsError

    home = Settings.resolve(environ={}, home=tmp_path / "h")
    assert artifacts_destination(home, None) == str((tmp_path / "h" / "mlartifacts").absolute())  # the default, kept
    with pytest.raises(SettingsError, match="would lose them"):
        artifacts_destination(home, "s3://bucket/mlflow")
    other = Settings.resolve(environ={}, home=tmp_path / "other")
    assert artifacts_destination(other, "s3://bucket/mlflow") == "s3://bucket/mlflow"
    assert artifacts_destination(other, None) == artifacts_destination(other, "s3://bucket/mlflow") == "s3://bucket/mlflow"


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
