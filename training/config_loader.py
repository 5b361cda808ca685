"""Load an `ExperimentConfig`: YAML file, then `HANDOFF_A__B` variables, then `--set a.b=v` flags."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cluster.config_layers import ConfigError, format_validation_error, load_layered
from training.config import ExperimentConfig

__all__ = ["ConfigError", "format_validation_error", "load_config"]


def load_config(path: str | Path, overrides: Iterable[str] = (),
                environ: Mapping[str, str] | None = None) -> ExperimentConfig:
    """Read, override and validate one experiment config; raise `ConfigError` before any work."""
    return load_layered(ExperimentConfig, path, overrides, environ)
