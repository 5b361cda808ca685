"""The Tune trainable: one trial trains one configuration, reporting and checkpointing each epoch."""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import ray
import torch
from ray import tune

from training.config import ExperimentConfig
from training.devices import choose_device, cpu_threads
from training.models import check_params, code_base, import_code_paths, resolve_factory
from training.prepare import PreparedData
from training.search_space import first_config
from training.train_loop import TrialSpec, checkpoint_state, fit, new_model

STATE_FILE = "state.pt"


def trial_spec(cfg: ExperimentConfig, trial_config: dict) -> TrialSpec:
    """The full training spec of a trial: fixed config values overlaid with the sampled ones."""
    return TrialSpec.from_trial_config(
        cfg.model.family, dict(cfg.model.params), cfg.train.model_dump(), trial_config,
        seed=cfg.seed, threads=cpu_threads(cfg.resources.cpu),
    )


#: Handoff's own top-level packages: a user's module of one of these names would shadow it or be shadowed
HANDOFF_PACKAGES = frozenset({"cluster", "training", "serving", "monitoring", "handoff"})


def check_code_paths(paths: Iterable[str], base: Path) -> None:
    """Refuse (ValueError, naming the path) a `model.code_paths` entry that is not there, or a module
    that would not be the one imported under its name: one named like a Handoff package (its copy in
    the registered model's `code/` would stand beside Handoff's own `training`, `serving`…), or one an
    earlier entry of `sys.path` (the standard library, an installed package) wins over. Relative paths
    are read from `base`; run after `import_code_paths`. A file other than Python source (data the
    code reads) only has to be there."""
    for path in paths:
        where = (base / path).resolve()
        if not where.exists():
            looked = "" if str(where) == path else f" (looked at {where})"
            raise ValueError(f"model.code_paths: {path!r} does not exist{looked}")
        name = where.stem if where.suffix == ".py" else where.name
        if not (where.is_dir() or where.suffix == ".py") or not name.isidentifier():
            continue
        if name in HANDOFF_PACKAGES:
            raise ValueError(f"model.code_paths: {path!r} is the module {name!r}, the name of Handoff's own package; "
                             "rename it")
        spec = importlib.util.find_spec(name)
        homes = [Path(h).resolve() for h in ([spec.origin] if spec.origin else spec.submodule_search_locations or [])
                 ] if spec else []
        if not any(home == where or where in home.parents for home in homes):
            raise ValueError(f"model.code_paths: {path!r} is the module {name!r}, but {name!r} imports from "
                             f"{homes[0] if homes else 'nowhere'}; rename it")


def check_model(cfg: ExperimentConfig, data: PreparedData | None = None) -> None:
    """Refuse (ValueError, naming it) before any trial starts what every trial would fail on: a code
    path that is missing or shadowed, a factory module that cannot be imported (not found, or failing
    as it imports: a syntax error, its own top-level code), a parameter (fixed or searched) the factory
    does not take; with the prepared data, also the model of the space's first configuration
    (`first_config`) built and run once as a trial builds it (`new_model`: a factory that raises,
    returns no torch module, or whose network fails or answers the wrong shape)."""
    import_code_paths(cfg.model.code_paths)
    check_code_paths(cfg.model.code_paths, code_base())
    spec = trial_spec(cfg, first_config(cfg.search))
    module, sep, _ = spec.family.partition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # not found: resolve_factory names it
        except Exception as exc:  # noqa: BLE001 - the user's module failed as it imported
            raise ValueError(f"model.family {spec.family!r} cannot be imported: {type(exc).__name__}: {exc}") from exc
    check_params(resolve_factory(spec.family), spec.family, set(spec.model_params))
    if data is not None:
        new_model(spec, data)


def load_state(checkpoint: tune.Checkpoint) -> dict:
    """A trial checkpoint's state, loaded with `weights_only=True`: tensors and plain values only, so a
    checkpoint from a tampered storage path cannot run code when a trial resumes from it."""
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)


def run_trial(trial_config: dict, cfg: ExperimentConfig, data: PreparedData) -> None:
    """Train on the trial's device; resume from Tune's checkpoint after a failure or restore."""
    import_code_paths(cfg.model.code_paths)
    device = choose_device(ray.get_gpu_ids(), torch.cuda.is_available())
    node_id = ray.get_runtime_context().get_node_id()  # with Tune's `node_ip`: where the trial ran
    spec = trial_spec(cfg, trial_config)
    start_epoch, state = 0, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        state = load_state(checkpoint)
        start_epoch = int(state["epoch"])
    clock = {"since": time.perf_counter(),
             "train_seconds": float(state.get("train_seconds", 0.0)) if state else 0.0,
             "best": state.get("best") if state else None}
    metric, mode = cfg.search.objective(data.task)
    sign = 1 if mode == "min" else -1

    def report(epoch: int, metrics: dict, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        clock["train_seconds"] += time.perf_counter() - clock["since"]
        result = {**metrics, "epoch": epoch, "device": device, "node_id": node_id,
                  "train_seconds": clock["train_seconds"]}
        improved = clock["best"] is None or sign * metrics[metric] < sign * clock["best"]
        if improved or epoch == cfg.search.epochs:
            # Checkpoint only what can matter: a new best of this trial (the registered model is the
            # best epoch of the best trial) and the last epoch. Resuming from any checkpoint is exact,
            # because every epoch reseeds from (seed, epoch).
            clock["best"] = metrics[metric] if improved else clock["best"]
            with tempfile.TemporaryDirectory() as d:
                torch.save({**checkpoint_state(model, opt, epoch), "train_seconds": clock["train_seconds"],
                            "best": clock["best"]}, Path(d) / STATE_FILE)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(result)
        clock["since"] = time.perf_counter()

    fit(spec, data, cfg.search.epochs, device=device, on_epoch=report, start_epoch=start_epoch, state=state)
