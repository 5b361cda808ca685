"""Two-sample Kolmogorov–Smirnov of a window against a reference whose values are sorted once.

The statistic is the largest gap between the two empirical CDFs. `scipy.stats.ks_2samp` sorts both
samples and evaluates the gap at every point of both; here the reference is sorted once (at
registration) and the gap is evaluated where it can peak, next to the window's values, with the
same counts and divisions, so the statistic is the same number. The p-value is SciPy's own: Smirnov's asymptotic distribution
(`scipy.stats.kstwo`) when either sample has more than 10,000 values, as `ks_2samp` does; below
that `ks_2samp`'s exact computation, which is cheap at those sizes.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

EXACT_MAX_N = 10_000  # ks_2samp(method="auto") computes exactly up to this many values per sample


def ks_against_sorted(reference_sorted: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p-value) of `window` against the already sorted `reference_sorted`."""
    n_ref, n_win = reference_sorted.shape[0], window.shape[0]
    if n_ref == 0 or n_win == 0:
        raise ValueError("KS needs at least one value in the reference and in the window")
    if max(n_ref, n_win) <= EXACT_MAX_N:
        result = stats.ks_2samp(reference_sorted, window)
        return float(result.statistic), float(result.pvalue)
    w = np.sort(window)
    # The gap F_ref - F_win peaks at the last reference value below a window value v: there it is
    # #{ref < v}/m - #{win < v}/n. The gap F_win - F_ref peaks at a window value v: #{win <= v}/n -
    # #{ref <= v}/m. So the window's values alone locate both, with the same counts (and so the same
    # floating-point values) as ks_2samp's evaluation at every point of both samples.
    above = np.searchsorted(reference_sorted, w, side="left") / n_ref - np.searchsorted(w, w, side="left") / n_win
    below = np.searchsorted(w, w, side="right") / n_win - np.searchsorted(reference_sorted, w, side="right") / n_ref
    d = float(max(above.max(), np.clip(below.max(), 0, 1)))
    m, n = sorted([float(n_ref), float(n_win)], reverse=True)
    p = float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))
    return d, p
