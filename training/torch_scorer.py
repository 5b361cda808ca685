"""A registered version's probability function as a plain object: a torch network on one device.

Kept apart from the MLflow pyfunc (`training.pyfunc`) so that it pickles and unpickles with torch
alone: batch inference loads a version once in its driver and ships this to every actor of its
pool through Ray's object store, so an actor neither imports MLflow nor downloads the artifacts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchScorer:
    """A version's answer for a float32 matrix whose columns are its prepared inputs in order,
    computed on `device`: class probabilities (softmax of the network's logits), or with
    `regression` the network's predicted values (rows × 1, in the target's units)."""

    def __init__(self, network: nn.Module, device: str, regression: bool = False):
        self.network = network.to(device).eval()
        self.device = device
        self.regression = regression

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.network(torch.tensor(x, device=self.device))
            return (out if self.regression else torch.softmax(out, dim=1)).cpu().numpy()

    def to(self, device: str) -> TorchScorer:
        """This scorer on `device`: itself where it is there already, else one whose network is moved
        there (torch moves a module in place: meant for a copy this process owns, such as one
        unpickled from the object store)."""
        return self if device == self.device else TorchScorer(self.network, device, self.regression)
