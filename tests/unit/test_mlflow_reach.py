"""A command line answers a wrong MLflow URI or a stopped server at once (MLflow's client retries for
minutes), and never reads an unreachable registry as a missing model."""

from __future__ import annotations

import http.server
import threading

import pytest

from cluster.head_services import free_port
from handoff.common import mlflow_problem


@pytest.fixture
def answering():
    """A real HTTP server on 127.0.0.1 that answers every request with 401 (a login it wants)."""
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_answers_with_any_status_is_reachable(answering):
    assert mlflow_problem(answering, {}) is None


def test_a_closed_port_is_named_at_once_but_not_inside_a_ray_job():
    uri = f"http://127.0.0.1:{free_port()}"
    problem = mlflow_problem(uri, {})
    assert problem.startswith(f"cannot reach the MLflow server at {uri}") and "handoff up" in problem
    from cluster.settings import JOB_DRIVER_ENV

    assert mlflow_problem(uri, {JOB_DRIVER_ENV: "raysubmit_1"}) is None  # a job keeps MLflow's retries


@pytest.mark.parametrize("uri, problem", [
    ("bogus://x", "MLflow has no store for 'bogus'"),
    ("htp://127.0.0.1:5000", "MLflow has no store for 'htp'"),
    ("sqlite:////tmp/x.db", None), ("postgresql+psycopg2://u@h/db", None), ("/tmp/mlruns", None),
])
def test_a_scheme_mlflow_has_no_store_for_is_named(uri, problem):
    found = mlflow_problem(uri, {})
    assert found is None if problem is None else problem in found


def test_an_unreachable_registry_is_not_a_missing_model(tmp_path, monkeypatch):
    from training import Registry, RegistryError

    local = Registry(f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(RegistryError, match="no registered model named 'nope'"):
        local.aliases("nope")
    with pytest.raises(RegistryError, match="model 'nope' has no version 3"):
        local.version("nope", 3)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries take minutes
    with pytest.raises(RegistryError, match="did not answer") as exc:
        Registry(f"http://127.0.0.1:{free_port()}").aliases("nope")
    assert "no registered model" not in str(exc.value)
