"""How far a feature may move before it counts, calibrated from the reference itself (pure).

A window of n rows differs from the reference by chance: the Wasserstein distance between a random
chunk of n reference rows and the whole reference is noise, and it shrinks like 1/√n. The
tolerance of a feature at window size n is the distance such chunks exceed only rarely (a
`per_window` share of windows, split across the `features`), fitted on chunks drawn from the
reference's own sample (a log-normal through the chunk distances' median and 90th percentile:
their tail is what matters, and a few hundred chunks cannot reach a 1-in-20,000 quantile
directly), and never below `floor` (the smallest shift worth acting on, 0.1σ by default): at large
n the noise is tiny, but a 0.02σ shift is still nobody's business. So small windows do not alarm
on noise and large ones not on trifles. A discrete feature's chunks that match the reference
exactly (distance 0) are a point mass, apart from the fit (`rare_tail`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from monitoring.drift_stats import wasserstein_sorted

CHUNKS = 200
CALIBRATE_AT_MOST = 5_000  # larger windows: calibrated at this size and scaled by √(size / n)


def shift_tolerance(reference_sorted: np.ndarray, n: int, *, features: int = 20, per_window: float = 0.001,
                    floor: float = 0.1, std: float | None = None, seed: int = 0) -> float:
    """The Wasserstein distance (in reference standard deviations) a feature's window of `n` rows must
    exceed to count as moved."""
    if n < 1:
        raise ValueError("a window has at least one row")
    std = float(np.std(reference_sorted)) if std is None else std
    if std <= 0 or reference_sorted.shape[0] < 2:
        return floor
    size = min(n, CALIBRATE_AT_MOST)
    rng = np.random.default_rng(seed)
    chunks = np.sort(rng.choice(reference_sorted, size=(CHUNKS, size), replace=True), axis=1)
    distances = np.array([wasserstein_sorted(reference_sorted, c, scale=std) for c in chunks])
    return max(floor, rare_tail(distances, per_window / features) * np.sqrt(size / n))


def rare_tail(distances: np.ndarray, rate: float) -> float:
    """The distance that draws like `distances` exceed only `rate` of the time: a log-normal through
    the median and the 90th percentile of the positive draws (the upper half, where the tail is), and
    the draws of exactly 0 a point mass below it. A discrete feature's chunks lie on a lattice: some
    match the reference exactly (0) and many come within a hair of it, and those near-zero distances'
    logarithms, in a fit of every draw's mean and spread, put the quantile at 10σ, or at 1e13σ with
    a zero taken as 1e-12: a tolerance no window could exceed, a feature that could never drift."""
    positive = distances[distances > 0]
    tail = rate * len(distances) / max(len(positive), 1)  # how rarely a positive draw may exceed it
    if not len(positive) or tail >= 1:
        return 0.0
    median, upper = np.quantile(positive, [0.5, 0.9])
    spread = np.log(upper / median) / stats.norm.ppf(0.9)
    # never below the largest draw: a rarer quantile than the draws resolve lies above it (a lattice's
    # upper tenth can sit on its median, the rare larger values above)
    return float(max(median * np.exp(stats.norm.ppf(1 - tail) * spread), positive.max()))
