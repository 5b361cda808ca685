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

from training.models import build_model, check_params, resolve_factory
from training.prepare import PreparedData
from training.task import REGRESSION

#: regression losses (`train.loss`), on the standardised target; Huber's delta is one standard deviation
REGRESSION_LOSSES = {"mse": nn.MSELoss, "huber": lambda: nn.HuberLoss(delta=1.0), "l1": nn.L1Loss}

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
    loss: str | None = None  # regression: mse (None) | huber | l1; classification: cross-entropy

    @classmethod
    def from_trial_config(cls, family: str, fixed_model: dict, fixed_train: dict, trial: dict,
                          seed: int, threads: int) -> TrialSpec:
        """Split a Tune trial's sampled values into optimiser and model parameters."""
        train = {**fixed_train, **{k: v for k, v in trial.items() if k in OPTIMISER_KEYS}}
        model = {**fixed_model, **{k: v for k, v in trial.items() if k not in OPTIMISER_KEYS}}
        return cls(family=family, model_params=model, lr=float(train["lr"]),
                   batch_size=int(train["batch_size"]), weight_decay=float(train["weight_decay"]),
                   seed=seed, threads=threads, loss=train.get("loss"))


def new_model(spec: TrialSpec, data: PreparedData) -> nn.Module:
    """Initialise the wrapped model from the seed with normalisation (and for regression the
    target's scale) fitted on the training split, and run it once on two training rows. Each way a
    factory can fail its contract is a ValueError naming the family and what it did: it raises, it
    returns no torch module (None, an sklearn estimator, a class), or its network fails on the rows,
    answers anything but a tensor of (rows, outputs), or answers NaN before any training."""
    torch.manual_seed(spec.seed)
    mean = data.x_train.astype("float64").mean(axis=0)
    std = data.x_train.astype("float64").std(axis=0)
    target = (float(data.y_train.mean()), float(data.y_train.std())) if data.task == REGRESSION else None
    width = data.x_train.shape[1]
    check_params(resolve_factory(spec.family), spec.family, set(spec.model_params))  # each names its refusal
    try:
        model = build_model(spec.family, spec.model_params, width, data.n_outputs, mean, std, target)
    except Exception as exc:  # noqa: BLE001 - the factory itself failed: say which, how, and with what
        raise ValueError(f"model.family {spec.family!r} raised {type(exc).__name__}: {exc} (called with "
                         f"n_features={width}, n_outputs={data.n_outputs}, params {spec.model_params})") from exc
    if not isinstance(model.net, nn.Module):
        raise ValueError(f"model.family {spec.family!r} returned {_returned(model.net)}, not a torch.nn.Module "
                         "instance; a factory is factory(n_features, n_outputs, **params) -> nn.Module")
    rows = torch.tensor(data.x_train[:2], dtype=torch.float32)
    with torch.no_grad():
        model.eval()
        try:
            out = model.standardised(rows)  # the network's own answer (regression: before its scale)
        except Exception as exc:  # noqa: BLE001 - the user's network: say that it failed on its inputs, and how
            raise ValueError(f"model.family {spec.family!r} fails on a batch of {len(rows)} rows × {width} inputs: "
                             f"{type(exc).__name__}: {exc}") from exc
        model.train()
    contract = (f"the factory contract is (rows, n_outputs) = [{len(rows)}, {data.n_outputs}] "
                f"({'one predicted value' if data.task == REGRESSION else 'one logit per class'})")
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model.family {spec.family!r} answers a {type(out).__name__}, not a tensor; {contract}")
    if tuple(out.shape) != (len(rows), data.n_outputs):
        raise ValueError(f"model.family {spec.family!r} answers shape {list(out.shape)} for {len(rows)} rows; "
                         f"{contract}")
    if torch.isnan(out).any():
        raise ValueError(f"model.family {spec.family!r} answers NaN for training rows before any training")
    return model


def _returned(value) -> str:
    """What a factory returned, in words: None, the class X, a sklearn Pipeline…"""
    if value is None:
        return "None"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"a {type(value).__module__.split('.')[0]} {type(value).__name__}"


def loss_function(task: str, loss: str | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """What training minimises: cross-entropy of the logits for classification; for regression the
    configured loss between the network's own output and the standardised target."""
    if task != REGRESSION:
        return nn.CrossEntropyLoss()
    return REGRESSION_LOSSES[loss or "mse"]()


def _fitted(model: nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    """What the loss compares: logits, or the network's standardised prediction (one column)."""
    return model.standardised(x)[:, 0] if task == REGRESSION else model(x)


def _target(model: nn.Module, y: torch.Tensor, task: str) -> torch.Tensor:
    return (y - model.target_mean) / model.target_std if task == REGRESSION else y


def new_optimizer(spec: TrialSpec, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                spec: TrialSpec, epoch: int, task: str = "classification") -> float:
    """One pass over the training split in a (seed, epoch)-determined order; returns mean loss."""
    torch.manual_seed(epoch_seed(spec.seed, epoch))  # dropout masks
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(spec.seed, epoch)))
    order = order.to(x.device)
    model.train()
    loss_fn = loss_function(task, spec.loss)
    target = _target(model, y, task)
    total, n = 0.0, 0
    for start in range(0, len(y), spec.batch_size):
        idx = order[start:start + spec.batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(_fitted(model, x[idx], task), target[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        n += len(idx)
    return total / max(n, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str = "classification",
             loss: str | None = None) -> dict[str, float]:
    """One split's figures: mean log loss and accuracy; for regression the training loss (on the
    standardised target) and RMSE, MAE and R² in the target's units."""
    model.eval()
    if task != REGRESSION:
        logits = model(x)
        return {"loss": nn.functional.cross_entropy(logits, y).item(),
                "accuracy": (logits.argmax(dim=1) == y).float().mean().item()}
    fitted = _fitted(model, x, task)
    figures = regression_figures(y.cpu().numpy(), (fitted * model.target_std + model.target_mean).cpu().numpy())
    return {"loss": loss_function(task, loss)(fitted, _target(model, y, task)).item(), **figures}


def regression_figures(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (1 - SSE/SST; 0 for a constant target) of `predicted` against `y`, in float64."""
    y, predicted = np.asarray(y, dtype="float64"), np.asarray(predicted, dtype="float64").reshape(-1)
    error = predicted - y
    sst = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {"rmse": float(np.sqrt((error ** 2).mean())), "mae": float(np.abs(error).mean()),
            "r2": 1.0 - float((error ** 2).sum()) / sst if sst > 0 else 0.0}


def to_tensors(data: PreparedData, device: str) -> dict[str, torch.Tensor]:
    """Copies of the splits on `device` (arrays from Ray's object store are read-only); a regression
    target as float32."""
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    dtype = {"dtype": torch.float32} if data.task == REGRESSION else {}
    return {n: torch.tensor(getattr(data, n), device=device, **(dtype if n[0] == "y" else {})) for n in names}


def split_metrics(figures: dict[str, float], split: str) -> dict[str, float]:
    """`val_loss`, `val_accuracy` / `val_rmse`, `val_mae`, `val_r2` …: one split's figures named by split."""
    return {f"{split}_{k}": v for k, v in figures.items()}


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
        train_loss = train_epoch(model, opt, t["x_train"], t["y_train"], spec, epoch, data.task)
        val = evaluate(model, t["x_val"], t["y_val"], data.task, spec.loss)
        metrics = {"train_loss": train_loss, **split_metrics(val, "val")}
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


def predict_outputs(model: nn.Module, x: np.ndarray, task: str = "classification", device: str = "cpu") -> np.ndarray:
    """A trained model's answer for a prepared matrix: class probabilities (rows × classes), or for
    regression the predicted values (rows × 1, the target's units)."""
    with torch.no_grad():
        model.eval()
        out = model(torch.tensor(x, dtype=torch.float32, device=device))
        return (out if task == REGRESSION else torch.softmax(out, dim=1)).cpu().numpy()
