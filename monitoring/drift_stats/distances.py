"""Distances between distributions: Wasserstein (earth mover's) on values, Jensen–Shannon on shares."""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial import distance


def wasserstein(reference: np.ndarray, window: np.ndarray, scale: float | None = None) -> float:
    """The earth mover's distance between the two samples (`scipy.stats.wasserstein_distance`);
    divided by `scale` (the reference's standard deviation, say) when given, so features of any unit
    compare."""
    d = float(stats.wasserstein_distance(reference, window))
    if scale is None:
        return d
    return d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))


def jensen_shannon(reference_shares: np.ndarray, window_shares: np.ndarray) -> float:
    """The Jensen–Shannon distance (base 2, between 0 and 1) of two share vectors over the same bins."""
    return float(distance.jensenshannon(np.asarray(reference_shares, dtype=float),
                                        np.asarray(window_shares, dtype=float), base=2))
