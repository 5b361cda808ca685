from pathlib import Path

from cluster.services import ServicesState, resolve_tracking_uri
from cluster.settings import Settings


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
