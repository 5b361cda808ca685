"""Multiple-testing correction across the features of a window: Bonferroni or Benjamini–Hochberg.

Twenty features tested at α = 0.05 raise about one false alarm per window uncorrected (measured
here, FIELD-NOTES); adjusted p-values compared with α keep the family-wise error rate (Bonferroni)
or the false discovery rate (Benjamini–Hochberg, `scipy.stats.false_discovery_control`) at α.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

CORRECTIONS = ("bonferroni", "benjamini-hochberg", "none")


def adjust(p_values, method: str = "benjamini-hochberg") -> np.ndarray:
    """Adjusted p-values, in the input's order (compare each with α)."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError("p-values must lie in [0, 1]")
    if method == "bonferroni":
        return np.minimum(p * p.size, 1.0)
    if method == "benjamini-hochberg":
        return stats.false_discovery_control(p, method="bh")
    if method == "none":
        return p
    raise ValueError(f"unknown correction {method!r}; one of {', '.join(CORRECTIONS)}")
