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
err = Console(stderr=True)


def print_result(payload, **dumps) -> None:
    """Print a command's `--json` result, then send anything printed after it (Ray's log
    deduplicator writes to stdout at exit) to stderr, so stdout stays one JSON document."""
    out.print_json(json.dumps(payload, **dumps))
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit; HANDOFF_DEBUG=1 adds the traceback of the error being handled."""
    if os.environ.get("HANDOFF_DEBUG") and sys.exc_info()[0] is not None:
        err.print_exception()
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False)
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
        return resolve_tracking_uri(configured, settings, services)
    except SettingsError as exc:
        fail(str(exc))
