"""Where Handoff keeps state and which services it talks to.

`Settings` is resolved once at the entry point (flags > `HANDOFF_*` environment > defaults) and
passed down. Nothing here touches the disk or the network: paths are computed, not created.

Inside a Ray job the defaults are refused: a job's current directory is the unpacked
`working_dir`, which Ray deletes later, so `./.handoff` there would silently lose what the job
produced. A cluster publishes its locations in the environment of every process it starts
(`handoff up` and the `ray up` configs set `HANDOFF_HOME` and `HANDOFF_MLFLOW__TRACKING_URI` for the
Ray head, whose workers and job entry points inherit them); a job without them fails at once.
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

#: set by Ray's job supervisor in the environment of a submitted job's entry point
JOB_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

#: how a job (or the cluster that runs it) names the state locations; said by every refusal
HOW_TO_SET = ("start the cluster with `handoff up` (it publishes them to every job) or a `ray up` config, or "
              "set them for the job: HANDOFF_HOME (a directory outside the job's working directory, on "
              "storage every node reaches), HANDOFF_MLFLOW__TRACKING_URI or --tracking-uri (the cluster's "
              "MLflow server)")


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the setting and how to set it."""


def inside_ray_job(environ: Mapping[str, str] | None = None) -> bool:
    """True in the entry point of a Ray job: it must join the job's cluster, never start its own."""
    return JOB_DRIVER_ENV in (os.environ if environ is None else environ)


class Settings(BaseModel):
    """Installation-wide settings: the state directory and the services to connect to.

    `address` and the MLflow URIs are `None` for the embedded default: a local Ray started
    in-process (or the head that `handoff up` started) and the MLflow store under `home`.
    `job_working_dir` is set inside a Ray job: nothing may be written under it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default=Path(".handoff"), description="state directory (HANDOFF_HOME)")
    address: str | None = Field(default=None, description="Ray cluster address (HANDOFF_ADDRESS)")
    tracking_uri: str | None = None
    registry_uri: str | None = None
    job_working_dir: Path | None = Field(default=None, description="the Ray job's working directory, "
                                         "deleted by Ray after the job; None outside a job")

    @classmethod
    def resolve(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None,
                **flags: object) -> Settings:
        """Merge defaults, `HANDOFF_*` variables and flags (flags win; `None` flags are unset).

        Inside a Ray job the state directory must be given (flag or environment) and lie outside the
        job's working directory; otherwise `SettingsError` says which and how to set it."""
        environ = os.environ if environ is None else environ
        cwd = (cwd or Path.cwd()).resolve()
        values: dict[str, object] = {}
        for var, field in SETTINGS_ENV.items():
            if environ.get(var):
                values[field] = environ[var]
        values.update({k: v for k, v in flags.items() if v is not None})
        if inside_ray_job(environ):
            values["job_working_dir"] = cwd
            if "home" not in values:
                raise SettingsError(f"this Ray job was given no state directory (HANDOFF_HOME), and a job never "
                                    f"falls back to ./.handoff inside its working directory, which Ray deletes: "
                                    f"{HOW_TO_SET}")
        settings = cls(**values)
        settings = settings.model_copy(update={"home": cwd / settings.home.expanduser()})
        settings.refuse_in_working_dir("the state directory (HANDOFF_HOME)", str(settings.home))
        return settings

    def refuse_in_working_dir(self, what: str, location: str) -> None:
        """Inside a Ray job, refuse a local `location` under the job's working directory (Ray deletes
        it after the job, and what was written there is lost). URIs of other filesystems pass."""
        if self.job_working_dir is None:
            return
        path = local_path(location)
        if path is None:
            return
        path = (self.job_working_dir / path).resolve() if not path.is_absolute() else path.resolve()
        if path == self.job_working_dir or self.job_working_dir in path.parents:
            raise SettingsError(f"{what} {location} is inside this Ray job's working directory "
                                f"{self.job_working_dir}, which Ray deletes after the job: {HOW_TO_SET}")

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
    def monitor_dir(self) -> Path:
        """Monitor state and events of the embedded default (one folder per model)."""
        return self.home / "monitor"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"


def local_path(location: str) -> Path | None:
    """The local file path a location names (`/a`, `rel/a`, `file:///a`, `sqlite:///a.db`), or None
    for a location on another filesystem or server (`s3://…`, `http://…`, `postgresql://…`)."""
    for prefix in ("file://", "sqlite:///"):
        if location.startswith(prefix):
            return Path(location[len(prefix):]).expanduser()
    if "://" in location:
        return None
    return Path(location).expanduser()
