"""Where Handoff keeps state and which services it talks to.

`Settings` is resolved once at the entry point (flags > `HANDOFF_*` environment > defaults) and
passed down. Nothing here touches the disk or the network: paths are computed, not created.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

#: Environment variables that configure the installation rather than an experiment.
SETTINGS_ENV = {
    "HANDOFF_HOME": "home",
    "HANDOFF_ADDRESS": "address",
    "HANDOFF_MLFLOW__TRACKING_URI": "tracking_uri",
    "HANDOFF_MLFLOW__REGISTRY_URI": "registry_uri",
}


class Settings(BaseModel):
    """Installation-wide settings: the state directory and the services to connect to.

    `address` and the MLflow URIs are `None` for the embedded default: a local Ray started
    in-process (or the head that `handoff up` started) and the MLflow store under `home`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default=Path(".handoff"), description="state directory (HANDOFF_HOME)")
    address: str | None = Field(default=None, description="Ray cluster address (HANDOFF_ADDRESS)")
    tracking_uri: str | None = None
    registry_uri: str | None = None

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, **flags: object) -> Settings:
        """Merge defaults, `HANDOFF_*` variables and flags (flags win; `None` flags are unset)."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for var, field in SETTINGS_ENV.items():
            if environ.get(var):
                values[field] = environ[var]
        values.update({k: v for k, v in flags.items() if v is not None})
        settings = cls(**values)
        return settings.model_copy(update={"home": settings.home.expanduser().absolute()})

    # --- derived locations (pure) -------------------------------------------------------
    @property
    def services_file(self) -> Path:
        """State written by `handoff up`: the addresses of the local Ray head and MLflow server."""
        return self.home / "services.json"

    @property
    def embedded_tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def tune_dir(self) -> Path:
        return self.home / "tune"

    @property
    def live_log_dir(self) -> Path:
        """The serving live log (Parquet, partitioned by model and date) of the embedded default."""
        return self.home / "live"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"
