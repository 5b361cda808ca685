"""The registry API that serving, monitoring and the CLI use: versions, aliases and lineage.

Conventions (ARCHITECTURE.md): the registered model is the config's `name`; alias `champion` serves
by default and `challenger` marks the newest candidate; `handoff.*` version tags carry lineage.
One wrapper class holds every MLflow registry call; the decisions are pure functions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training.lineage import TAG_PREFIX

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(LookupError):
    """A registered model, version or alias that does not exist, or a registry that did not answer;
    the message names it."""


def _not_found(exc: MlflowException, missing: str, uri: str) -> RegistryError:
    """The error to raise for `exc`: `missing` when MLflow said the thing does not exist; otherwise
    what MLflow said (a server that cannot be reached, a refused login, a server error), which is not
    a missing model and must not read as one."""
    if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
        return RegistryError(missing)
    return RegistryError(f"the MLflow registry at {uri} failed the request: {str(exc).splitlines()[0][:300]}")


def alias_for_new_version(aliases_in_use: set[str]) -> str:
    """The first version of a model becomes `champion`; every later one is the `challenger`."""
    return CHALLENGER if CHAMPION in aliases_in_use else CHAMPION


@dataclass
class VersionInfo:
    name: str
    version: int
    aliases: list[str]
    status: str
    run_id: str
    created: str
    source: str
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Registry:
    """Thin wrapper over `MlflowClient` for Handoff's registry conventions."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)

    def register(self, name: str, model_uri: str, run_id: str, tags: dict[str, str],
                 model_id: str | None = None, description: str = "", timeout_s: float = 120) -> int:
        """Create (if needed) the registered model and a new version; wait until it is READY."""
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name, description="Registered by Handoff")
        mv = self.client.create_model_version(name, model_uri, run_id=run_id, tags=tags,
                                              description=description, model_id=model_id)
        deadline = time.monotonic() + timeout_s
        while mv.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.5)
            mv = self.client.get_model_version(name, mv.version)
        if mv.status != "READY":
            raise RuntimeError(f"model version {name}/{mv.version} is {mv.status}, not READY")
        return int(mv.version)

    def aliases(self, name: str) -> dict[str, int]:
        """`{alias: version}` of a registered model."""
        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as exc:
            raise _not_found(exc, f"no registered model named {name!r} at {self.tracking_uri}",
                             self.tracking_uri) from None
        return {a: int(v) for a, v in (rm.aliases or {}).items()}

    def model_tags(self, name: str) -> dict[str, str]:
        """The registered model's own tags (serving keeps its traffic policy there)."""
        try:
            return dict(self.client.get_registered_model(name).tags or {})
        except MlflowException as exc:
            raise _not_found(exc, f"no registered model named {name!r} at {self.tracking_uri}",
                             self.tracking_uri) from None

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.client.set_registered_model_tag(name, key, value)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def assign_new_version_alias(self, name: str, version: int) -> str:
        """Give a freshly registered version `champion` (first) or `challenger` (later)."""
        alias = alias_for_new_version(set(self.aliases(name)))
        self.set_alias(name, alias, version)
        return alias

    def version(self, name: str, version: int) -> VersionInfo:
        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise _not_found(exc, f"model {name!r} has no version {version}", self.tracking_uri) from None
        return self._info(mv, self.aliases(name))

    def version_numbers(self, name: str) -> list[int]:
        """The version numbers of `name` (one registry call; no run lookups)."""
        self.aliases(name)  # a clear RegistryError for an unknown model
        return sorted(int(mv.version) for mv in self.client.search_model_versions(f"name = '{name}'"))

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of `name`, newest first, with aliases, run metrics and lineage."""
        aliases = self.aliases(name)
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._info(mv, aliases) for mv in found), key=lambda v: -v.version)

    def _info(self, mv, aliases: dict[str, int]) -> VersionInfo:
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = dict(self.client.get_run(mv.run_id).data.metrics)
            except MlflowException:
                metrics = {}
        tags = dict(mv.tags or {})
        return VersionInfo(
            name=mv.name, version=int(mv.version),
            aliases=sorted(a for a, v in aliases.items() if v == int(mv.version)),
            status=mv.status, run_id=mv.run_id or "", source=mv.source or "",
            created=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(mv.creation_timestamp) / 1000)),
            metrics=metrics,
            lineage={k[len(TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)},
        )

    def set_version_tags(self, name: str, version: int, tags: dict[str, str]) -> None:
        """Add lineage tags (`handoff.` is prefixed) to a version: what caused it, its gate verdict."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key if key.startswith(TAG_PREFIX)
                                              else TAG_PREFIX + key, str(value))

    def caused_by(self, name: str, event_id: str) -> VersionInfo | None:
        """The newest version whose lineage names `event_id` as its cause, or None."""
        found = [v for v in self.versions(name) if v.lineage.get("parent_event") == event_id]
        return found[0] if found else None

    def download(self, run_id: str, artifact_path: str, dst: str) -> str:
        return self.client.download_artifacts(run_id, artifact_path, dst)

    def put_version_artifact(self, name: str, version: int, artifact_path: str, data: bytes) -> None:
        """Store `data` as an artifact of the version's run, at `artifact_path` (replacing any before)."""
        import tempfile
        from pathlib import Path

        run_id = self.version(name, version).run_id
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_path).name
            local.write_bytes(data)
            parent = str(Path(artifact_path).parent)
            self.client.log_artifact(run_id, str(local), artifact_path=None if parent == "." else parent)

    def get_version_artifact(self, name: str, version: int, artifact_path: str) -> bytes | None:
        """The bytes of an artifact of the version's run, or None when the run has no such artifact."""
        import tempfile
        from pathlib import Path

        run_id = self.version(name, version).run_id
        parent = str(Path(artifact_path).parent)
        listed = {a.path for a in self.client.list_artifacts(run_id, None if parent == "." else parent)}
        if artifact_path not in listed:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, artifact_path, tmp)).read_bytes()
