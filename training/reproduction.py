"""`handoff reproduce NAME VERSION`: retrain a registered version from its recorded config, seed and data."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.settings import Settings
from training.config import ExperimentConfig
from training.pipeline import load_data
from training.models import import_code_paths
from training.registry import Registry
from training.tracking import CONFIG_ARTIFACT
from training.train_loop import TrialSpec, fit, weights_hash
from training.trial import trial_spec


class DataChanged(RuntimeError):
    """The data at the recorded URI no longer has the recorded fingerprint: reproduction would lie."""


@dataclass
class Reproduction:
    name: str
    version: int
    registered_weights_sha256: str
    reproduced_weights_sha256: str
    epochs: int
    identical: bool

    def to_dict(self) -> dict:
        return asdict(self)


def recorded_config(registry: Registry, run_id: str) -> ExperimentConfig:
    with tempfile.TemporaryDirectory() as d:
        path = registry.download(run_id, CONFIG_ARTIFACT, d)
        return ExperimentConfig.model_validate(json.loads(Path(path).read_text()))


def reproduce(name: str, version: int, settings: Settings, registry: Registry) -> Reproduction:
    """Retrain on the CPU and compare weight hashes; refuse when the data fingerprint changed."""
    info = registry.version(name, version)
    lineage = info.lineage
    needed = ("data_fingerprint", "trial_params", "epochs_trained", "weights_sha256", "torch_threads")
    missing = [k for k in needed if k not in lineage]
    if missing:
        raise ValueError(f"{name}/{version} lacks lineage tags {missing}; it was not registered by Handoff")
    cfg = recorded_config(registry, info.run_id)
    data = load_data(cfg, settings)
    if data.fingerprint != lineage["data_fingerprint"]:
        raise DataChanged(
            f"refusing to reproduce {name}/{version}: the data at {cfg.dataset.uri} has fingerprint "
            f"{data.fingerprint[:16]}…, but the version was trained on {lineage['data_fingerprint'][:16]}…"
        )
    base: TrialSpec = trial_spec(cfg, json.loads(lineage["trial_params"]))
    spec = TrialSpec(**{**base.__dict__, "threads": int(lineage["torch_threads"])})
    epochs = int(lineage["epochs_trained"])
    import_code_paths(cfg.model.code_paths)
    model = fit(spec, data, epochs=epochs, device="cpu")
    digest = weights_hash(model.state_dict())
    return Reproduction(name=name, version=version, registered_weights_sha256=lineage["weights_sha256"],
                        reproduced_weights_sha256=digest, epochs=epochs,
                        identical=digest == lineage["weights_sha256"])
