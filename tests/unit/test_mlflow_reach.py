"""A command line answers a wrong MLflow URI or a stopped server at once (MLflow's client retries for
minutes), and never reads an unreachable registry as a missing model."""

from __future__ import annotations

import http.server
import threading

import pytest

from cluster.head_services import free_port
from handoff.common import mlflow_problem


def http_server(status: int) -> http.server.ThreadingHTTPServer:
    """A real HTTP server on 127.0.0.1 that answers every GET with `status` (not yet serving)."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)


@pytest.fixture
def answering():
    """A server that answers every request with 401 (a login it wants)."""
    server = http_server(401)
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
    with pytest.raises(RegistryError, match="failed the request") as exc:
        Registry(f"http://127.0.0.1:{free_port()}").aliases("nope")
    assert "no registered model" not in str(exc.value)


def test_a_server_that_answers_tls_is_reachable_whatever_its_certificate(tmp_path):
    """An https server with a private CA: the certificate is MLflow's to check (its own TLS settings),
    not this probe's, which only asks whether something answers."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a certificate here")

    server = http_server(200)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert mlflow_problem(f"https://127.0.0.1:{server.server_address[1]}", {}) is None
    finally:
        server.shutdown()
