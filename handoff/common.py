"""What every `handoff` command does the same way: print (results on stdout, progress on stderr),
fail with one clear line, and resolve its settings and typed configs or say which field is wrong."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # a line is never broken inside a path or a name (logs, grep)


def print_result(payload, **dumps) -> None:
    """Print a command's `--json` result, then send anything printed after it (Ray's log
    deduplicator writes to stdout at exit) to stderr, so stdout stays one JSON document."""
    out.print_json(json.dumps(payload, **dumps))
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit; HANDOFF_DEBUG=1 adds the traceback of the error being handled. The
    message is shown as written: brackets in it (a list, a path) are text, never rich markup."""
    from rich.text import Text

    if os.environ.get("HANDOFF_DEBUG") and sys.exc_info()[0] is not None:
        err.print_exception()
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)
    raise typer.Exit(code)


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix (a config, the data, a name, a missing package): a command
    reports them in one line (`fail`), never as a traceback."""
    from cluster.config_layers import ConfigError
    from handoff.model_environment import RequirementsUnmet
    from training import DataChanged, DataError, RegistryError

    return (ConfigError, DataError, RegistryError, DataChanged, RequirementsUnmet, FileNotFoundError, ValueError)


def layered_config(load, path: Path | None, default: Path, sets: list[str] | None):
    """A typed config from `path`, else `default` when that file exists, then the environment and
    `--set` flags (`load(path, sets)`, one of the packages' loaders), or a clear error naming the field."""
    from cluster.config_layers import ConfigError

    try:
        return load(path or (default if default.is_file() else None), list(sets or []))
    except ConfigError as exc:
        fail(str(exc))


def command_settings(home: Path | None, address: str | None = None, tracking_uri: str | None = None):
    """The settings this command runs with (flags, then the environment, then the defaults), or a clear error."""
    from cluster.settings import Settings

    try:
        return Settings.resolve(home=home, address=address, tracking_uri=tracking_uri)
    except ValueError as exc:
        fail(f"bad setting: {exc}")


def command_tracking_uri(configured: str | None, settings, services) -> str:
    """The MLflow tracking URI this command uses, or a clear error (inside a Ray job: no fallback)."""
    from cluster.services import resolve_tracking_uri
    from cluster.settings import SettingsError

    try:
        uri = resolve_tracking_uri(configured, settings, services)
    except SettingsError as exc:
        fail(str(exc))
    problem = mlflow_problem(uri, os.environ)
    if problem:
        fail(problem)
    return uri


#: how long a command waits for the MLflow server's first answer before it says it cannot reach it
REACH_TIMEOUT_S = 10.0
#: the URI schemes MLflow's tracking and registry stores take (a database's may name its driver: `postgresql+psycopg2`)
MLFLOW_SCHEMES = {"", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks",
                  "databricks-uc", "uc"}


def _plugin_schemes() -> set[str]:
    """The URI schemes MLflow plugins installed here add (entry points `mlflow.tracking_store`)."""
    from importlib.metadata import entry_points

    return {e.name.lower() for e in entry_points(group="mlflow.tracking_store")}


def mlflow_problem(uri: str, environ) -> str | None:
    """Why this command cannot use the MLflow tracking URI `uri`: a scheme MLflow has no store for, or
    a server that does not answer (None: it answered, with any status, or `uri` is no server, or this
    runs inside a Ray job, whose commands keep MLflow's retries: a server restarting on the head is
    waited for there). MLflow's client retries a refused connection for about four minutes before it
    says anything; a command line answers a wrong URI or a stopped server at once."""
    import ssl
    import urllib.error
    import urllib.request

    from cluster.settings import inside_ray_job

    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in MLFLOW_SCHEMES and scheme not in _plugin_schemes():
        return (f"{uri!r} is not an MLflow tracking URI: MLflow has no store for {scheme!r} "
                f"(use one of {', '.join(sorted(s for s in MLFLOW_SCHEMES if s))})")
    if scheme not in ("http", "https") or inside_ray_job(environ):
        return None
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S).close()
    except urllib.error.HTTPError:  # it answered (a login it wants, a route it lacks): it is there
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError) or isinstance(exc, ssl.SSLError):
            return None  # it answered TLS: its certificate is MLflow's to check (MLFLOW_TRACKING_SERVER_CERT_PATH, ...)
        return (f"cannot reach the MLflow server at {uri} ({reason}); is it running (`handoff up` starts one), "
                "and is the URI right (--tracking-uri, HANDOFF_MLFLOW__TRACKING_URI, the home's services.json)?")
    return None
