"""Distances between distributions: Wasserstein (earth mover's) on values, Jensen–Shannon on shares.

`wasserstein` is SciPy's. `wasserstein_sorted` is the same distance of two sorted samples without
merging them: in one dimension it is the area between the quantile functions, ∫|Q_ref(u) − Q_win(u)|du,
and both are step functions whose steps lie at i/m and j/n, so each window value faces a known run
of reference values for known lengths; one compiled pass sums them (~9 µs for 20,000 against 5,000
values here, ~45 µs when the sizes do not divide, against SciPy's ~1.6 ms, which sorts both each
call). Numba compiles it on first use (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy import stats


def wasserstein(reference: np.ndarray, window: np.ndarray, scale: float | None = None) -> float:
    """The earth mover's distance between the two samples (`scipy.stats.wasserstein_distance`);
    divided by `scale` (the reference's standard deviation, say) when given, so features of any unit
    compare."""
    d = float(stats.wasserstein_distance(reference, window))
    if scale is None:
        return d
    return d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _quantile_area(r, w):  # pragma: no cover - compiled
    # Window value j holds the quantile function on [j/n, (j+1)/n), reference value i on [i/m, (i+1)/m);
    # over the common denominator m·n their overlap is min((i+1)n, (j+1)m) - max(in, jm).
    m, n = r.shape[0], w.shape[0]
    total = 0.0
    if m % n == 0:  # each window value faces m/n reference values for 1/m each (the default 20,000 and 5,000)
        k = m // n
        for j in range(n):
            v, run = w[j], 0.0
            for i in range(j * k, j * k + k):
                run += abs(r[i] - v)
            total += run
        return total / m
    for j in range(n):
        v, run = w[j], 0.0
        for i in range((j * m) // n, ((j + 1) * m + n - 1) // n):
            run += abs(r[i] - v) * (min((i + 1) * n, (j + 1) * m) - max(i * n, j * m))
        total += run
    return total / (m * n)


def wasserstein_sorted(reference_sorted: np.ndarray, window_sorted: np.ndarray, scale: float | None = None) -> float:
    """`wasserstein` of two sorted samples (equal to SciPy's to rounding, its unit test shows)."""
    if reference_sorted.shape[0] == 0 or window_sorted.shape[0] == 0:
        raise ValueError("the Wasserstein distance needs at least one value on each side")
    d = float(_quantile_area(reference_sorted, window_sorted))
    if scale is None:
        return d
    return d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))


@njit(cache=True, nogil=True)
def _jensen_shannon(p, q):  # pragma: no cover - compiled
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("Jensen–Shannon needs some share on each side")
    p, q = p / p.sum(), q / q.sum()
    total = 0.0
    for k in range(p.shape[0]):  # rel_entr(x, m) = x·ln(x/m), 0 where x is 0
        m = (p[k] + q[k]) / 2.0
        if p[k] > 0:
            total += p[k] * np.log(p[k] / m)
        if q[k] > 0:
            total += q[k] * np.log(q[k] / m)
    return np.sqrt(max(total, 0.0) / 2.0 / np.log(2))  # never below 0 by rounding


def jensen_shannon(reference_shares: np.ndarray, window_shares: np.ndarray) -> float:
    """The Jensen–Shannon distance (base 2, between 0 and 1) of two share vectors over the same bins:
    `scipy.spatial.distance.jensenshannon`'s computation, compiled (a window takes one per feature;
    SciPy's argument handling alone is ~10 µs a call; its unit test shows the same number)."""
    p = np.asarray(reference_shares, dtype=np.float64)
    q = np.asarray(window_shares, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"Jensen–Shannon needs shares over the same bins ({p.shape[0]} vs {q.shape[0]})")
    return float(_jensen_shannon(p, q))
