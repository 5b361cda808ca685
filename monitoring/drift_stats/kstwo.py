"""Smirnov's distribution of the two-sided KS statistic: `scipy.stats.kstwo.sf`, with its two costly
branches at the sample sizes drift windows have computed faster and to the same value.

`kstwo.sf(d, n)` picks a method by n and d (Simard & L'Ecuyer). For n > 140 two of them cost a
window most of its time when called from Python: the one-sided Birnbaum–Tingey series (a clear
shift, 2.2 ≤ n·d² < 370; ~2 ms a call in `scipy.special.smirnov`) is summed here vectorised in log
space, the binomial coefficients' logarithms kept per n (~27 µs), and the Pelz–Good asymptotic series (no shift: every steady feature of every
window; ~55 µs a call in SciPy's Python loop) is SciPy's code compiled by Numba, the same
operations in the same order (~1 µs). Every other branch is SciPy's own call. The unit test
compares every branch with `kstwo.sf` (equal to 1e-10 relative).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit
from scipy import special, stats

_SQRT2PI = math.sqrt(2 * math.pi)
_SQRT3 = math.sqrt(3)
_PI_SQUARED, _PI_FOUR, _PI_SIX = math.pi ** 2, math.pi ** 4, math.pi ** 6
_MIN_LOG = -708


@njit(cache=True, nogil=True)
def _pelz_good_cdf(n, x):  # pragma: no cover - compiled
    """P(Dₙ ≤ x) by Pelz–Good: `scipy.stats._ksstats._kolmogn_PelzGood(n, x, cdf=True)`, line for line."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    z = math.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z ** 2, z ** 3, z ** 4, z ** 6
    qlog = -_PI_SQUARED / 8 / zsquared
    if qlog < _MIN_LOG:
        return 0.0
    q = math.exp(qlog)
    k1a = -zsquared
    k1b = _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z ** 8
    k0 = k1 = k2 = k3 = 0.0
    maxk = int(math.ceil(16 * z / math.pi))
    for k in range(maxk, 0, -1):  # Horner's scheme over the odd integers m = 2k - 1
        m = 2 * k - 1
        msquared, mfour, msix = m ** 2, m ** 4, m ** 6
        qpower = math.pow(q, 8.0 * k)
        k0 = k0 * qpower + 1.0
        k1 = k1 * qpower + (k1a + k1b * msquared)
        k2 = k2 * qpower + (k2a + k2b * msquared + k2c * mfour)
        k3 = k3 * qpower + (k3a + k3b * msquared + k3c * mfour + k3d * msix)
    k0, k1, k2, k3 = k0 * q * _SQRT2PI, k1 * q * _SQRT2PI, k2 * q * _SQRT2PI, k3 * q * _SQRT2PI
    k0, k1, k2, k3 = k0 / z, k1 / (6 * zfour), k2 / (72 * z ** 7), k3 / (6480 * z ** 10)
    q = math.exp(-_PI_SQUARED / 2 / zsquared)  # the sum over every integer k, for K2 and K3
    sqrt3z = _SQRT3 * z
    k2extra, k3extra = 0.0, 0.0
    for k in range(maxk, 0, -1):
        ksquared = k * k
        qpwer = math.pow(q, float(ksquared))
        k2extra += ksquared * qpwer
        kspi = math.pi * k
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpwer
    k2 += k2extra * (_PI_SQUARED * _SQRT2PI / (-36 * zthree))
    k3 += k3extra * (_PI_SQUARED * _SQRT2PI / (216 * zsix))
    nf = n * 1.0
    return k0 / math.pow(nf, 0.0) + k1 / math.pow(nf, 0.5) + k2 / math.pow(nf, 1.0) + k3 / math.pow(nf, 1.5)


@lru_cache(maxsize=8)
def _log_binomials(n: int) -> np.ndarray:
    """ln C(n, j) for j = 0..n: the same numbers for every statistic at this n (windows keep their size),
    so computed once (`gammaln` is most of the series' time)."""
    j = np.arange(n + 1)
    table = special.gammaln(n + 1) - special.gammaln(j + 1) - special.gammaln(n - j + 1)
    table.flags.writeable = False
    return table


def _smirnov(n: int, d: float) -> float:
    """P(D⁺ₙ ≥ d), the Birnbaum–Tingey series summed in log space (what `scipy.special.smirnov` sums)."""
    j = np.arange(int(np.floor(n * (1 - d))) + 1)
    with np.errstate(divide="ignore"):
        terms = _log_binomials(n)[:j.shape[0]] + (n - j) * np.log1p(-d - j / n) + (j - 1) * np.log(d + j / n)
    top = terms.max()
    return float(d * np.exp(top) * np.exp(terms - top).sum())


def kstwo_sf(d: np.ndarray, n: int) -> np.ndarray:
    """`scipy.stats.kstwo.sf(d, n)` for each d: SciPy's own call, except in its one-sided series branch
    (n > 140, 1/n < d < 0.5, 2.2 ≤ n·d² < 370), summed by `_smirnov`, and its Pelz–Good branch
    (n > 140, 1/n < d < 0.5, n·d² < 2.2, and n > 100,000 or n·d^1.5 > 1.4), by `_pelz_good_cdf`."""
    d = np.asarray(d, dtype=np.float64)
    p = np.empty_like(d)
    t, nd2 = n * d, n * d * d
    large = (n > 140) & (d > 0) & (d < 0.5) & (t > 1) & (t < n - 1)
    series = large & (nd2 >= 2.2) & (nd2 < 370)
    pelz_good = large & (nd2 < 2.2) & ((n > 100_000) | (n * d ** 1.5 > 1.4))
    for i in np.flatnonzero(series):
        p[i] = min(max(2 * _smirnov(n, float(d[i])), 0.0), 1.0)
    for i in np.flatnonzero(pelz_good):
        p[i] = min(max(1.0 - _pelz_good_cdf(n, float(d[i])), 0.0), 1.0)
    rest = ~(series | pelz_good)
    if rest.any():
        p[rest] = stats.kstwo.sf(d[rest], n)
    return p
