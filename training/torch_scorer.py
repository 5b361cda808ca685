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
    """Class probabilities (softmax of the network's logits) for a float32 matrix whose columns are
    the version's features in order, computed on `device`."""

    def __init__(self, network: nn.Module, device: str):
        self.network = network.to(device).eval()
        self.device = device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.network(torch.tensor(x, device=self.device)), dim=1).cpu().numpy()

    def to(self, device: str) -> TorchScorer:
        """This scorer on `device`: itself where it is there already, else one whose network is moved
        there (torch moves a module in place: meant for a copy this process owns, such as one
        unpickled from the object store)."""
        return self if device == self.device else TorchScorer(self.network, device)
