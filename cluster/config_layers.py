"""Layered typed configuration: a YAML file, then `HANDOFF_*` variables, then `--set` flags.

Used for the experiment config (`HANDOFF_A__B`), the serving config (`HANDOFF_SERVING__A__B`) and
the monitoring config (`HANDOFF_MONITORING__A__B`) and batch inference's (`HANDOFF_PREDICT__A`).
Precedence: flag > environment > file. An override names a dotted path (`search.num_samples=4`,
or `HANDOFF_SEARCH__NUM_SAMPLES=4` in the environment); its value is parsed as YAML so numbers,
booleans, lists and `null` keep their type. Every failure is a `ConfigError` naming the field.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pydantic import BaseModel

from cluster.settings import SETTINGS_ENV

ENV_PREFIX = "HANDOFF_"
SERVING_ENV_PREFIX = "HANDOFF_SERVING__"
MONITORING_ENV_PREFIX = "HANDOFF_MONITORING__"
PREDICT_ENV_PREFIX = "HANDOFF_PREDICT__"
#: the prefixes of the configs other than the experiment's (whose variables are `HANDOFF_A__B`)
_OTHER_CONFIGS = (SERVING_ENV_PREFIX, MONITORING_ENV_PREFIX, PREDICT_ENV_PREFIX)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, variable or field."""


def load_layered(
    model: type[BaseModel],
    path: str | Path | None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    env_prefix: str = ENV_PREFIX,
    base: Mapping[str, Any] | None = None,
) -> BaseModel:
    """Read (if `path`; else start from `base`, a config's dump), override and validate one config;
    raise `ConfigError` before any work."""
    raw = _read_yaml(Path(path)) if path is not None else copy.deepcopy(dict(base or {}))
    env = os.environ if environ is None else environ
    for dotted, value, origin in _env_overrides(env, env_prefix, set(model.model_fields)) + _flag_overrides(overrides):
        _set_path(raw, dotted, value, origin)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path or ('(the config in force)' if base else '(defaults)')}:\n{format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `  dataset.features: Field required`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section)"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a config file holds, or a ConfigError saying what the path is instead (missing, a
    directory, unreadable, empty, not YAML, not a mapping)."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty: it holds no setting (a config is a mapping of fields)")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, not {type(data).__name__}")
    return data


def _env_overrides(environ: Mapping[str, str], prefix: str, fields: set[str]) -> list[tuple[str, Any, str]]:
    """`PREFIX` + `A__B=v` → (`a.b`, v). Installation variables (HANDOFF_HOME, …) and the other
    config's variables (serving vs experiment) are not this config's."""
    out = []
    for var in sorted(environ):
        if not var.startswith(prefix) or var in SETTINGS_ENV:
            continue
        if prefix == ENV_PREFIX and var.startswith(_OTHER_CONFIGS):
            continue
        dotted = var[len(prefix):].lower().replace("__", ".")
        head = dotted.split(".", 1)[0]
        if head not in fields:
            if "__" in var:  # clearly meant as a config override: a typo must not pass silently
                raise ConfigError(f"environment variable {var}: {head!r} is not a config section "
                                  f"(sections: {', '.join(sorted(fields))})")
            continue
        out.append((dotted, _parse_value(environ[var], var), f"environment variable {var}"))
    return out


def _flag_overrides(overrides: Iterable[str]) -> list[tuple[str, Any, str]]:
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.field=value")
        out.append((key.strip(), _parse_value(value, f"--set {item}"), f"--set {item}"))
    return out


def _parse_value(text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: value is not valid YAML: {exc}") from None


def _set_path(raw: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    """Set `raw[a][b]…` creating sections as needed; refuse to descend into a scalar."""
    parts = dotted.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value
