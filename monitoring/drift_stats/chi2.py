"""Chi-squared test of a categorical feature (or the predicted classes): window counts against the
reference's, as a 2 × K contingency table (`scipy.stats.chi2_contingency`)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def chi2_counts(reference_counts: np.ndarray, window_counts: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) for counts over the same categories; categories empty on both sides are
    dropped, and a single remaining category cannot differ (0, 1)."""
    ref, win = np.asarray(reference_counts, dtype=float), np.asarray(window_counts, dtype=float)
    if ref.shape != win.shape or ref.sum() <= 0 or win.sum() <= 0:
        raise ValueError(f"chi-squared needs counts over the same categories ({ref.shape[0]} vs {win.shape[0]}), "
                         "and some on each side")
    table = np.vstack([ref, win])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)
