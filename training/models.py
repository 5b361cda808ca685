"""Model factories and the normalising wrapper every trained model is saved in.

Extension point: a factory is any callable `factory(n_features, n_classes, **params) -> nn.Module`
returning logits of shape (batch, n_classes). Name a built-in family (`mlp`) or your own as
`package.module:callable` in `model.family`; its keyword parameters come from `model.params` and
the search space. Handoff wraps the module in `Standardised`, which holds the input mean and
standard deviation fitted on the training split, so the saved model takes raw features.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def build_mlp(n_features: int, n_classes: int, hidden_layers: int = 2, width: int = 64,
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
    layers.append(nn.Linear(fan_in, n_classes))
    return nn.Sequential(*layers)


BUILTIN_FACTORIES: dict[str, ModelFactory] = {"mlp": build_mlp}


class Standardised(nn.Module):
    """`net((x - mean) / std)`: input normalisation fitted on the training split, saved as buffers."""

    def __init__(self, net: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        safe_std = np.where(np.asarray(std) > 1e-12, std, 1.0)  # constant columns pass through
        self.register_buffer("std", torch.as_tensor(safe_std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


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
    unknown = sorted(names - set(sig.parameters) - {"n_features", "n_classes"})
    if unknown:
        accepted = sorted(set(sig.parameters) - {"n_features", "n_classes"})
        raise ValueError(f"model.family {family!r} does not accept {unknown}; it accepts {accepted}")


def build_model(family: str, params: dict, n_features: int, n_classes: int,
                mean: np.ndarray, std: np.ndarray) -> Standardised:
    """Build the user's or a built-in network and wrap it with the fitted normalisation."""
    factory = resolve_factory(family)
    check_params(factory, family, set(params))
    return Standardised(factory(n_features, n_classes, **params), mean, std)
