"""Model factories and the normalising wrapper every trained model is saved in.

Extension point: a factory is any callable `factory(n_features, n_outputs, **params) -> nn.Module`
returning shape (batch, n_outputs): one logit per class for classification, the one predicted
value (n_outputs = 1) for regression. Name a built-in family (`mlp`) or your own as
`package.module:callable` in `model.family` (with its source in `model.code_paths`, and the
packages it imports beyond Handoff in `model.requirements`); its keyword parameters come from
`model.params` and the search space. Handoff wraps the module in `Standardised`, which holds the input mean and
standard deviation fitted on the training split, so the saved model takes raw features; for
regression it also holds the target's mean and standard deviation (the network learns the
standardised target, the saved model answers in the target's units).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def build_mlp(n_features: int, n_outputs: int, hidden_layers: int = 2, width: int = 64,
              dropout: float = 0.0, activation: str = "relu") -> nn.Module:
    """A feed-forward network: `hidden_layers` blocks of Linear → activation → Dropout."""
    if hidden_layers < 0 or width < 1 or not 0 <= dropout < 1:
        raise ValueError(f"mlp: need hidden_layers >= 0, width >= 1, 0 <= dropout < 1; got "
                         f"{hidden_layers=}, {width=}, {dropout=}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"mlp: unknown activation {activation!r}; choose from {sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    fan_in = n_features
    for _ in range(int(hidden_layers)):
        layers += [nn.Linear(fan_in, int(width)), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(float(dropout)))
        fan_in = int(width)
    layers.append(nn.Linear(fan_in, n_outputs))
    return nn.Sequential(*layers)


BUILTIN_FACTORIES: dict[str, ModelFactory] = {"mlp": build_mlp}


def _safe_std(std) -> np.ndarray:
    return np.where(np.asarray(std) > 1e-12, std, 1.0)  # a constant passes through


class Standardised(nn.Module):
    """`net((x - mean) / std)`: input normalisation fitted on the training split, saved as buffers.
    With a target scale (regression) the answer is `net(...) * target_std + target_mean`, in the
    target's units, and `standardised(x)` is the network's own output, which training fits to the
    standardised target."""

    def __init__(self, net: nn.Module, mean: np.ndarray, std: np.ndarray,
                 target_scale: tuple[float, float] | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(_safe_std(std), dtype=torch.float32))
        self.scales_target = target_scale is not None
        if self.scales_target:
            self.register_buffer("target_mean", torch.tensor(float(target_scale[0]), dtype=torch.float32))
            self.register_buffer("target_std", torch.tensor(float(_safe_std(target_scale[1])), dtype=torch.float32))

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.standardised(x)
        return out * self.target_std + self.target_mean if self.scales_target else out


def code_base() -> Path:
    """Where relative `model.code_paths` are read from: the directory the search started in (a Tune
    trial runs in a directory of its own; Tune names the first in TUNE_ORIG_WORKING_DIR), else this
    process's working directory."""
    return Path(os.environ.get("TUNE_ORIG_WORKING_DIR") or Path.cwd())


def import_code_paths(paths: Iterable[str]) -> None:
    """Make the user code in `model.code_paths` importable in this process as it is where the version
    loads: MLflow copies each path (a module file or a package directory) into the model's `code/`
    directory and puts that on `sys.path`, so each path's parent goes on `sys.path` here (relative
    paths from the working directory: a job's is the repository it was sent with; a Tune trial runs in
    a directory of its own, and reads them from the one its search started in)."""
    base = code_base()
    for path in paths:
        parent = str((base / path).resolve().parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)


def resolve_factory(family: str) -> ModelFactory:
    """The factory a `model.family` names: a built-in, or `package.module:callable`."""
    if family in BUILTIN_FACTORIES:
        return BUILTIN_FACTORIES[family]
    module_name, sep, attr = family.partition(":")
    if not sep:
        raise ValueError(f"model.family {family!r} is neither a built-in ({sorted(BUILTIN_FACTORIES)}) "
                         "nor 'package.module:callable'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model.family {family!r} cannot be imported: {exc}") from None
    if not callable(factory):
        raise ValueError(f"model.family {family!r} is not callable")
    return factory


def check_params(factory: ModelFactory, family: str, names: set[str]) -> None:
    """Raise naming the parameters the factory does not accept (unless it takes **kwargs)."""
    sig = inspect.signature(factory)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    positional = {"n_features", "n_outputs", "n_classes"}
    unknown = sorted(names - set(sig.parameters) - positional)
    if unknown:
        accepted = sorted(set(sig.parameters) - positional)
        raise ValueError(f"model.family {family!r} does not accept {unknown}; it accepts {accepted}")


def build_model(family: str, params: dict, n_features: int, n_outputs: int,
                mean: np.ndarray, std: np.ndarray, target_scale: tuple[float, float] | None = None) -> Standardised:
    """Build the user's or a built-in network and wrap it with the fitted normalisation (and, for
    regression, the target's scale)."""
    factory = resolve_factory(family)
    check_params(factory, family, set(params))
    return Standardised(factory(n_features, n_outputs, **params), mean, std, target_scale)
