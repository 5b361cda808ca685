"""Population stability index over the reference's quantile bins (edges and shares fixed at registration).

PSI = Σ (w − r) · ln(w / r) over bins, with reference shares r and window shares w; an empty bin
on either side counts as `EPSILON` so the index stays finite. Bins are the reference's deciles by
default; repeated values (ties at an edge) merge bins, so a discrete feature gets one bin per value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EPSILON = 1e-4


def psi_bins(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges: the reference's quantiles taken among its own values (so a discrete feature's
    edges are its values), duplicates and the maximum dropped (values ≤ edge fall left)."""
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, not {bins}")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf"))
    return edges[edges < np.max(reference)]


def psi_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin (len(edges) + 1 bins)."""
    if values.shape[0] == 0:
        raise ValueError("PSI needs at least one value")
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.shape[0] + 1)
    return counts / values.shape[0]


@njit(cache=True, nogil=True)
def _shares_sorted(values_sorted, edges):  # pragma: no cover - compiled
    at_or_below = np.searchsorted(values_sorted, edges, side="right")  # values ≤ each edge
    shares = np.empty(edges.shape[0] + 1)
    below = 0
    for k in range(edges.shape[0]):
        shares[k] = (at_or_below[k] - below) / values_sorted.shape[0]
        below = at_or_below[k]
    shares[edges.shape[0]] = (values_sorted.shape[0] - below) / values_sorted.shape[0]
    return shares


def psi_shares_sorted(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`psi_shares` of already sorted values: the same counts from one search per edge (compiled)."""
    if values_sorted.shape[0] == 0:
        raise ValueError("PSI needs at least one value")
    return _shares_sorted(values_sorted, np.asarray(edges, dtype=values_sorted.dtype))


@njit(cache=True, nogil=True)
def _index(r, w):  # pragma: no cover - compiled
    total = 0.0
    for k in range(r.shape[0]):
        a, b = max(r[k], EPSILON), max(w[k], EPSILON)
        total += (b - a) * np.log(b / a)
    return total


def psi(reference_shares: np.ndarray, window_shares: np.ndarray) -> float:
    """The index between two share vectors over the same bins (compiled: a window scores it per feature)."""
    r = np.asarray(reference_shares, dtype=np.float64)
    w = np.asarray(window_shares, dtype=np.float64)
    if r.shape != w.shape:
        raise ValueError(f"PSI needs shares over the same bins ({r.shape[0]} vs {w.shape[0]})")
    return float(_index(r, w))
