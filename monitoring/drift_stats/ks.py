"""Two-sample Kolmogorov–Smirnov of a window against a reference whose values are sorted once.

The statistic is the largest gap between the two empirical CDFs. `scipy.stats.ks_2samp` sorts both
samples and evaluates the gap at every point of both; here the reference is sorted once (at
registration), the window once per window, and the gap is evaluated where it can peak, next to
the window's values, with the same counts and divisions, so the statistic is the same number.

The p-value is SciPy's: Smirnov's distribution (`scipy.stats.kstwo.sf`) when either sample has
more than 10,000 values, as `ks_2samp` does; below that `ks_2samp`'s exact computation, which is
cheap at those sizes. Where `kstwo.sf` takes its exact one-sided series (`2·smirnov(n, d)`, large
n and a clear shift: ~2 ms a call here, most of a drifted window's cost) the same Birnbaum–Tingey
series is summed vectorised in log space (~75 µs; equal to 1e-10 relative, its unit test shows).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

EXACT_MAX_N = 10_000  # ks_2samp(method="auto") computes exactly up to this many values per sample


def ks_statistic_sorted(reference_sorted: np.ndarray, window_sorted: np.ndarray) -> float:
    """The KS statistic of two sorted samples (what `ks_2samp` returns for them)."""
    n_ref, n_win = reference_sorted.shape[0], window_sorted.shape[0]
    r, w = reference_sorted, window_sorted
    # The gap F_ref - F_win peaks at the last reference value below a window value v: there it is
    # #{ref < v}/m - #{win < v}/n. The gap F_win - F_ref peaks at a window value v: #{win <= v}/n -
    # #{ref <= v}/m. So the window's values alone locate both, with the same counts (and so the same
    # floating-point values) as ks_2samp's evaluation at every point of both samples. Without ties
    # (the usual case, checked) the window's own ranks are its positions and #{ref < v} = #{ref <= v}.
    # #{ref <= v} for every window value from one stable merge (timsort merges the two sorted runs in
    # linear time, reference values first among equals): a window value's merged position less its
    # own index. ~50 µs for 20,000 against 5,000 values here, against ~80 µs for a searchsorted.
    order = np.argsort(np.concatenate([r, w]), kind="stable")
    ref_le = np.flatnonzero(order >= n_ref) - np.arange(n_win)
    hit = ref_le > 0
    if np.any(r[ref_le[hit] - 1] == w[hit]):
        ref_lt = np.searchsorted(r, w, side="left")
    else:
        ref_lt = ref_le
    if n_win > 1 and np.any(w[1:] == w[:-1]):
        win_lt, win_le = np.searchsorted(w, w, side="left"), np.searchsorted(w, w, side="right")
    else:
        win_lt, win_le = np.arange(n_win), np.arange(1, n_win + 1)
    above = ref_lt / n_ref - win_lt / n_win
    below = win_le / n_win - ref_le / n_ref
    return float(max(above.max(), np.clip(below.max(), 0, 1)))


def _smirnov(n: int, d: float) -> float:
    """P(D⁺ₙ ≥ d), the Birnbaum–Tingey series summed in log space (what `scipy.special.smirnov` sums)."""
    j = np.arange(int(np.floor(n * (1 - d))) + 1)
    with np.errstate(divide="ignore"):
        terms = (special.gammaln(n + 1) - special.gammaln(j + 1) - special.gammaln(n - j + 1)
                 + (n - j) * np.log1p(-d - j / n) + (j - 1) * np.log(d + j / n))
    top = terms.max()
    return float(d * np.exp(top) * np.exp(terms - top).sum())


def kstwo_sf(d: np.ndarray, n: int) -> np.ndarray:
    """`scipy.stats.kstwo.sf(d, n)` for each d: SciPy's own call, except in its one-sided series
    branch (n > 140, 1/n < d < 0.5, 2.2 ≤ n·d² < 370), summed here by `_smirnov`."""
    d = np.asarray(d, dtype=np.float64)
    p = np.empty_like(d)
    t, nd2 = n * d, n * d * d
    series = (n > 140) & (d > 0) & (d < 0.5) & (t > 1) & (t < n - 1) & (nd2 >= 2.2) & (nd2 < 370)
    for i in np.nonzero(series)[0]:
        p[i] = min(max(2 * _smirnov(n, float(d[i])), 0.0), 1.0)
    rest = ~series
    if rest.any():
        p[rest] = stats.kstwo.sf(d[rest], n)
    return p


def ks_pvalues(statistics: np.ndarray, n_ref: int, n_win: int) -> np.ndarray:
    """Two-sided p-values of KS statistics of samples this large (either over EXACT_MAX_N), as `ks_2samp`."""
    m, n = sorted([float(n_ref), float(n_win)], reverse=True)
    return np.clip(kstwo_sf(statistics, int(np.round(m * n / (m + n)))), 0, 1)


def ks_against_sorted(reference_sorted: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(statistic, two-sided p-value) of `window` against the already sorted `reference_sorted`."""
    n_ref, n_win = reference_sorted.shape[0], window.shape[0]
    if n_ref == 0 or n_win == 0:
        raise ValueError("KS needs at least one value in the reference and in the window")
    if max(n_ref, n_win) <= EXACT_MAX_N:
        result = stats.ks_2samp(reference_sorted, window)
        return float(result.statistic), float(result.pvalue)
    d = ks_statistic_sorted(reference_sorted, np.sort(window))
    return d, float(ks_pvalues(np.array([d]), n_ref, n_win)[0])
