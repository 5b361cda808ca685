"""How far a feature may move before it counts, calibrated from the reference itself (pure).

A window of n rows differs from the reference by chance: the Wasserstein distance between a random
chunk of n reference rows and the whole reference is noise, and it shrinks like 1/√n. The
tolerance of a feature at window size n is the distance such chunks exceed only rarely (a
`per_window` share of windows, split across the `features`), fitted on chunks drawn from the
reference's own sample (log-normal fit of the chunk distances: their tail is what matters, and a
few hundred chunks cannot reach a 1-in-20,000 quantile directly), and never below `floor` (the
smallest shift worth acting on, 0.1σ by default): at large n the noise is tiny, but a 0.02σ shift
is still nobody's business. So small windows do not alarm on noise and large ones not on trifles.
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
    logs = np.log(np.maximum(distances, 1e-12))
    quantile = float(np.exp(logs.mean() + stats.norm.ppf(1 - per_window / features) * logs.std(ddof=1)))
    return max(floor, quantile * np.sqrt(size / n))
