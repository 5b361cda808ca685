"""Services on a cluster's head node whose life follows the Ray head's (`ray up` starts them).

    MLFLOW_BACKEND_STORE_URI=URI python -m cluster.head_services mlflow --artifacts-destination URI \
        [--host 127.0.0.1] [--port 5000] [--ray-port 6379]

starts the MLflow tracking + registry server once the Ray head answers on `--ray-port`, and stops it
when the head stops answering (`ray down` or `ray stop`), so tearing a cluster down leaves nothing
running. Ray's cluster config has no teardown hook of its own.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from cluster.mlflow_server import BACKEND_ENV, auth_environment, start_mlflow_server, stop_process_group


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def head_gone(answers: list[bool], misses: int) -> bool:
    """The head counts as stopped after `misses` failed probes in a row (one miss can be a hiccup)."""
    return len(answers) >= misses and not any(answers[-misses:])


def expand_store_uri(uri: str) -> str:
    """`sqlite:///~/x.db` → the home-relative path made absolute (a shell leaves `~` inside a word)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix + "~"):
        return prefix + str(Path(uri[len(prefix):]).expanduser())
    return uri


def run_mlflow(args: argparse.Namespace) -> int:
    backend = args.backend_store_uri or os.environ.get(BACKEND_ENV)
    if not backend:
        print(f"no database for the MLflow server: set {BACKEND_ENV} (the environment keeps a password off "
              "the command line) or pass --backend-store-uri for a store without one (sqlite:///…)", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait_s
    while not port_open(args.ray_port):
        if time.monotonic() > deadline:
            print(f"the Ray head did not answer on port {args.ray_port} within {args.wait_s:.0f}s", file=sys.stderr)
            return 1
        time.sleep(1)
    auth = None
    if args.auth:
        try:
            auth = auth_environment(expand_store_uri(args.auth_db), Path(args.log).expanduser().parent)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    proc = start_mlflow_server(expand_store_uri(backend), args.artifacts_destination, host=args.host,
                               port=args.port, log_path=Path(args.log).expanduser(), auth=auth)
    print(f"mlflow server pid {proc.pid} on {args.host}:{args.port}; stops with the Ray head "
          f"(port {args.ray_port})", flush=True)
    answers: list[bool] = []
    try:
        while not head_gone(answers, args.misses):
            time.sleep(args.poll_s)
            answers = (answers + [port_open(args.ray_port)])[-args.misses:]
            if proc.poll() is not None:
                print(f"mlflow server exited with code {proc.returncode}", file=sys.stderr)
                return 1
    finally:
        stop_process_group(proc.pid)
    print("the Ray head stopped: mlflow server stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.head_services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="service", required=True)
    m = sub.add_parser("mlflow", help="the MLflow tracking + registry server, stopped with the Ray head")
    m.add_argument("--backend-store-uri", default=None,
                   help=f"database URI without a secret (sqlite:///…); one with a password goes in {BACKEND_ENV}, "
                        "which is read when this is left out")
    m.add_argument("--artifacts-destination", required=True, help="s3://bucket/prefix or a shared path")
    m.add_argument("--host", default="127.0.0.1", help="listen address (default: localhost only)")
    m.add_argument("--port", type=int, default=5000)
    m.add_argument("--ray-port", type=int, default=6379, help="the Ray head's GCS port to follow")
    m.add_argument("--log", default="~/handoff-mlflow-server.log", help="the server's own log")
    m.add_argument("--wait-s", type=float, default=300.0, help="how long to wait for the Ray head")
    m.add_argument("--poll-s", type=float, default=2.0)
    m.add_argument("--misses", type=int, default=3, help="failed probes in a row that mean the head stopped")
    m.add_argument("--auth", action="store_true",
                   help="MLflow's basic-auth app: every request needs the cluster's credentials "
                        "(MLFLOW_TRACKING_USERNAME / _PASSWORD in the environment, never on a command line); "
                        "for a server other nodes reach")
    m.add_argument("--auth-db", default="sqlite:///~/handoff-mlflow-auth.db", help="where its users are kept")
    return run_mlflow(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
