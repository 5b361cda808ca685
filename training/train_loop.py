"""The torch training loop shared by Tune trials, final training and `reproduce`.

Deterministic by construction: weights are initialised from the seed, and each epoch reseeds
shuffling and dropout from (seed, epoch), so a run resumed from an epoch checkpoint continues
exactly as an uninterrupted one would, and a retrain on the CPU gives bit-identical weights.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from training.models import build_model
from training.prepare import PreparedData

#: Search-space / trial keys that configure the optimiser; every other key goes to the model factory.
OPTIMISER_KEYS = ("lr", "batch_size", "weight_decay")


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines one training run's weights (besides the data)."""

    family: str
    model_params: dict
    lr: float
    batch_size: int
    weight_decay: float
    seed: int
    threads: int = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_trial_config(cls, family: str, fixed_model: dict, fixed_train: dict, trial: dict,
                          seed: int, threads: int) -> TrialSpec:
        """Split a Tune trial's sampled values into optimiser and model parameters."""
        train = {**fixed_train, **{k: v for k, v in trial.items() if k in OPTIMISER_KEYS}}
        model = {**fixed_model, **{k: v for k, v in trial.items() if k not in OPTIMISER_KEYS}}
        return cls(family=family, model_params=model, lr=float(train["lr"]),
                   batch_size=int(train["batch_size"]), weight_decay=float(train["weight_decay"]),
                   seed=seed, threads=threads)


def new_model(spec: TrialSpec, data: PreparedData) -> nn.Module:
    """Initialise the wrapped model from the seed with normalisation fitted on the training split."""
    torch.manual_seed(spec.seed)
    mean = data.x_train.astype("float64").mean(axis=0)
    std = data.x_train.astype("float64").std(axis=0)
    return build_model(spec.family, spec.model_params, data.x_train.shape[1], data.num_classes, mean, std)


def new_optimizer(spec: TrialSpec, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                spec: TrialSpec, epoch: int) -> float:
    """One pass over the training split in a (seed, epoch)-determined order; returns mean loss."""
    torch.manual_seed(epoch_seed(spec.seed, epoch))  # dropout masks
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(spec.seed, epoch)))
    order = order.to(x.device)
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, n = 0.0, 0
    for start in range(0, len(y), spec.batch_size):
        idx = order[start:start + spec.batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        n += len(idx)
    return total / max(n, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Mean log loss and accuracy on one split."""
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return {"loss": loss, "accuracy": accuracy}


def to_tensors(data: PreparedData, device: str) -> dict[str, torch.Tensor]:
    """Copies of the splits on `device` (arrays from Ray's object store are read-only)."""
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    return {n: torch.tensor(getattr(data, n), device=device) for n in names}


EpochCallback = Callable[[int, dict[str, float], nn.Module, torch.optim.Optimizer], None]


def fit(spec: TrialSpec, data: PreparedData, epochs: int, device: str = "cpu",
        on_epoch: EpochCallback | None = None, start_epoch: int = 0,
        state: dict | None = None) -> nn.Module:
    """Train epochs `start_epoch+1 .. epochs` and call `on_epoch(epoch, metrics, model, opt)` after each.

    `state` (from `checkpoint_state`) resumes model and optimiser exactly where a checkpoint left.
    """
    torch.set_num_threads(spec.threads)
    model = new_model(spec, data).to(device)
    opt = new_optimizer(spec, model)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    t = to_tensors(data, device)
    for epoch in range(start_epoch + 1, epochs + 1):
        train_loss = train_epoch(model, opt, t["x_train"], t["y_train"], spec, epoch)
        val = evaluate(model, t["x_val"], t["y_val"])
        metrics = {"train_loss": train_loss, "val_loss": val["loss"], "val_accuracy": val["accuracy"]}
        if on_epoch is not None:
            on_epoch(epoch, metrics, model, opt)
    return model


def checkpoint_state(model: nn.Module, opt: torch.optim.Optimizer, epoch: int) -> dict:
    """What a checkpoint holds: CPU copies of model and optimiser state, and the epoch reached."""
    return {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(opt.state_dict()), "epoch": epoch}


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names, shapes, dtypes and raw bytes: equal hashes mean identical weights."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        h.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else
                 tensor.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def predict_proba(model: nn.Module, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    with torch.no_grad():
        model.eval()
        return torch.softmax(model(torch.tensor(x, dtype=torch.float32, device=device)), dim=1).cpu().numpy()
