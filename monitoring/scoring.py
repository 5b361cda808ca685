"""Score one window of live rows against a version's reference profile, pure.

Per feature: KS (the test), PSI, the Wasserstein distance in reference standard deviations and the
Jensen–Shannon distance over the PSI bins (effect sizes); the same for each class's predicted
probability, and chi-squared on the predicted classes' counts. The features' p-values are corrected
together (Benjamini–Hochberg by default). A column drifts when its corrected p-value is below α
and it moved further than its tolerance (Wasserstein, in reference standard deviations): given per
feature by `tolerances` (calibrated from the reference at the window's size: monitoring/tolerance.py),
else `min_shift` (0.1σ, the tolerance Evidently's preset applies to the same normed distance; 0
keeps the test alone). With 5,000-row windows KS alone calls a 0.05σ wobble significant, which no
one retrains for. A window drifts when a feature does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitoring.drift_stats import EXACT_MAX_N, adjust, chi2_counts, jensen_shannon, ks_against_sorted, \
    ks_pvalues, ks_statistic_sorted, psi, psi_shares_sorted, wasserstein_sorted
from monitoring.reference import NumericReference, ReferenceProfile
from training import predicted_class


@dataclass(frozen=True)
class ColumnScore:
    """One column of one window: the test's statistic and p-values (raw and corrected) and the effect sizes."""

    column: str
    test: str
    statistic: float
    p_value: float
    adjusted_p: float
    psi: float | None
    wasserstein: float | None  # in reference standard deviations
    jensen_shannon: float | None
    drifted: bool
    tolerance: float | None = None  # the shift this column had to exceed (Wasserstein, σ)


@dataclass(frozen=True)
class WindowScores:
    """A scored window: its rows, every feature's score, the prediction's scores, and the verdict."""

    rows: int
    features: tuple[ColumnScore, ...]
    prediction: tuple[ColumnScore, ...]
    drifted: bool

    @property
    def drifted_features(self) -> list[str]:
        return [s.column for s in self.features if s.drifted]


def _sorted_rows(matrix: np.ndarray) -> np.ndarray:
    """The columns of `matrix` (rows × columns) as contiguous sorted rows, in a new array sorted in place
    (half the time of `np.sort` of a transposed copy here: one copy, not two)."""
    rows = np.array(matrix.T, dtype=np.float64, order="C")
    rows.sort(axis=1)
    return rows


def _numeric(columns: list[str], refs: list[NumericReference], rows: np.ndarray) -> list[tuple]:
    """(column, KS statistic, p-value, PSI, Wasserstein in σ, Jensen–Shannon) per row of the sorted
    `rows` (one row per column): every statistic taken from the sorted rows, and the p-values of large
    samples computed together."""
    n = rows.shape[1]
    out, pending = [], {}
    for i, (column, ref, w) in enumerate(zip(columns, refs, rows)):
        m = ref.sorted_sample.shape[0]
        if max(m, n) > EXACT_MAX_N:
            statistic, p = ks_statistic_sorted(ref.sorted_sample, w), None
            pending.setdefault(m, []).append(i)
        else:
            statistic, p = ks_against_sorted(ref.sorted_sample, w)
        shares = psi_shares_sorted(w, ref.psi_edges)
        out.append([column, statistic, p, psi(ref.psi_shares, shares),
                    wasserstein_sorted(ref.sorted_sample, w, scale=ref.std), jensen_shannon(ref.psi_shares, shares)])
    for m, indices in pending.items():
        for i, p in zip(indices, ks_pvalues(np.array([out[i][1] for i in indices]), m, n)):
            out[i][2] = float(p)
    return [tuple(o) for o in out]


def _scores(raw: list[tuple], test: str, alpha: float, correction: str, min_shift: float,
            tolerances: dict[str, float] | None = None) -> tuple[ColumnScore, ...]:
    adjusted = adjust([r[2] for r in raw], correction)
    out = []
    for (column, stat, p, psi_, w, js), a in zip(raw, adjusted):
        tolerance = None if w is None else (tolerances or {}).get(column, min_shift)
        out.append(ColumnScore(column, test, float(stat), float(p), float(a), psi_, w, js,
                               bool(a < alpha and (w is None or w >= tolerance)), tolerance))
    return tuple(out)


def score_window(profile: ReferenceProfile, features: list[str], x: np.ndarray, proba: np.ndarray | None = None,
                 *, prediction: np.ndarray | None = None, alpha: float = 0.05,
                 correction: str = "benjamini-hochberg", min_shift: float = 0.1,
                 tolerances: dict[str, float] | None = None) -> WindowScores:
    """Scores of the window `x` (rows × `features`) and, when given, of its class probabilities or
    its predicted classes (the live log keeps the class, not the probabilities)."""
    if x.ndim != 2 or x.shape[1] != len(features) or x.shape[0] == 0:
        raise ValueError(f"a window must be a non-empty matrix of {len(features)} feature column(s)")
    missing = [f for f in features if f not in profile.features]
    if missing:
        raise ValueError(f"the reference profile has no feature(s) {missing}")
    numeric = _numeric(features, [profile.features[f] for f in features], _sorted_rows(x))
    feature_scores = _scores(numeric, "ks", alpha, correction, min_shift, tolerances)
    prediction_scores: tuple[ColumnScore, ...] = ()
    if proba is not None:
        columns = _numeric([f"probability_{c}" for c in profile.classes],
                           [profile.probabilities[str(c)] for c in profile.classes],
                           _sorted_rows(proba))
        prediction_scores = _scores(columns, "ks", alpha, correction, min_shift)
        prediction = predicted_class(proba)
    if prediction is not None:
        counts = np.bincount(prediction, minlength=len(profile.classes))[:len(profile.classes)]
        stat, p = chi2_counts(profile.class_counts, counts)
        prediction_scores += _scores([("predicted_class", stat, p, None, None, None)], "chi2", alpha, "none", 0.0)
    return WindowScores(int(x.shape[0]), feature_scores, prediction_scores,
                        any(s.drifted for s in feature_scores))
