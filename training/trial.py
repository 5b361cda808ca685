"""The Tune trainable: one trial trains one configuration, reporting and checkpointing each epoch."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from training.config import ExperimentConfig
from training.devices import choose_device, cpu_threads
from training.models import import_code_paths
from training.prepare import PreparedData
from training.train_loop import TrialSpec, checkpoint_state, fit

STATE_FILE = "state.pt"


def trial_spec(cfg: ExperimentConfig, trial_config: dict) -> TrialSpec:
    """The full training spec of a trial: fixed config values overlaid with the sampled ones."""
    return TrialSpec.from_trial_config(
        cfg.model.family, dict(cfg.model.params), cfg.train.model_dump(), trial_config,
        seed=cfg.seed, threads=cpu_threads(cfg.resources.cpu),
    )


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
