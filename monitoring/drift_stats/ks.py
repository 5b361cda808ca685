"""Two-sample Kolmogorov–Smirnov of a window against a reference whose values are sorted once.

The statistic is the largest gap between the two empirical CDFs, which lies at one of the data
points: evaluated with two `searchsorted` calls against the sorted samples, exactly as
`scipy.stats.ks_2samp` evaluates it (same counts, same divisions), without sorting the reference
again for every window. The p-value is SciPy's own: Smirnov's asymptotic distribution
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
    window_sorted = np.sort(window)
    # the ECDF gap at every data point: the reference's points, then the window's
    gap_at_ref = (np.searchsorted(reference_sorted, reference_sorted, side="right") / n_ref
                  - np.searchsorted(window_sorted, reference_sorted, side="right") / n_win)
    gap_at_win = (np.searchsorted(reference_sorted, window_sorted, side="right") / n_ref
                  - np.searchsorted(window_sorted, window_sorted, side="right") / n_win)
    d = float(max(gap_at_ref.max(), gap_at_win.max(), np.clip(-min(gap_at_ref.min(), gap_at_win.min()), 0, 1)))
    m, n = sorted([float(n_ref), float(n_win)], reverse=True)
    p = float(np.clip(stats.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))
    return d, p
