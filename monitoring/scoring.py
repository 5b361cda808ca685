"""Score one window of live rows against a version's reference profile, pure.

Per feature: KS (the test), PSI, the Wasserstein distance in reference standard deviations and the
Jensen–Shannon distance over the PSI bins (effect sizes); the same for each class's predicted
probability, and chi-squared on the predicted classes' counts; for a regression model KS and the
Wasserstein distance of the predicted values against the validation split's predictions. The features' p-values are corrected
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

#: the scale of the shift of a column constant in training (σ 0), in its own unit: Evidently's floor of
#: the same normed Wasserstein distance (`max(std, 0.001)`), applied only where there is no σ at all
CONSTANT_SCALE = 0.001


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
    tolerance: float | None = None  # the shift this column had to exceed (Wasserstein σ; or the figure's effect)
    effect: float | None = None     # a categorical or gap figure's effect (Jensen–Shannon, a share's move)
    detail: str = ""                # what moved, in words ("'crypto' 14% of rows, never seen in training")
    share: float | None = None      # a share figure's window share (unseen values, gaps) and training's
    reference_share: float | None = None


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
    """(column, KS statistic, p-value, PSI, Wasserstein in σ, Jensen–Shannon, detail) per row of the
    sorted `rows` (one row per column): every statistic taken from the sorted rows, and the p-values of
    large samples computed together. A column constant in training has no σ: its shift is taken in
    `CONSTANT_SCALE`s of its unit (finite, where σ 0 would make any move infinite), and the detail says so."""
    out, pending = [], {}
    for i, (column, ref, w) in enumerate(zip(columns, refs, rows)):
        # a gap (NaN, a value the client left out) sorts last: each column is scored on its values
        # alone (how many are missing is its own figure)
        if np.isnan(w[-1]):
            w = w[:int(np.searchsorted(np.isnan(w), True))]
        n, m = w.shape[0], ref.sorted_sample.shape[0]
        if n == 0:
            out.append([column, 0.0, 1.0, None, None, None, ""])  # nothing to compare: no evidence of drift
            continue
        if max(m, n) > EXACT_MAX_N:
            statistic, p = ks_statistic_sorted(ref.sorted_sample, w), None
            pending.setdefault((m, n), []).append(i)
        else:
            statistic, p = ks_against_sorted(ref.sorted_sample, w)
        shares = psi_shares_sorted(w, ref.psi_edges)
        shift = wasserstein_sorted(ref.sorted_sample, w, scale=ref.std if ref.std > 0 else CONSTANT_SCALE)
        detail = f"constant in training ({ref.minimum:g}): shifted {shift * CONSTANT_SCALE:g} in its own unit" \
            if ref.std <= 0 and shift > 0 else ""
        out.append([column, statistic, p, psi(ref.psi_shares, shares), shift, jensen_shannon(ref.psi_shares, shares),
                    detail])
    for (m, n), indices in pending.items():
        for i, p in zip(indices, ks_pvalues(np.array([out[i][1] for i in indices]), m, n)):
            out[i][2] = float(p)
    return [tuple(o) for o in out]


def _scores(raw: list[tuple], test: str, alpha: float, correction: str, min_shift: float,
            tolerances: dict[str, float] | None = None, figures: list | None = None) -> tuple[ColumnScore, ...]:
    """The columns' scores, their p-values corrected together with the categorical and gap `figures`'."""
    figures = figures or []
    adjusted = adjust([r[2] for r in raw] + [f.p_value for f in figures], correction)
    out = []
    for (column, stat, p, psi_, w, js, detail), a in zip(raw, adjusted):
        tolerance = None if w is None else (tolerances or {}).get(column, min_shift)
        out.append(ColumnScore(column, test, float(stat), float(p), float(a), psi_, w, js,
                               bool(a < alpha and (w is None or w >= tolerance)), tolerance, detail=detail))
    for f, a in zip(figures, adjusted[len(raw):]):
        out.append(ColumnScore(f.column, "chi2", float(f.statistic), float(f.p_value), float(a), None, None,
                               float(f.effect) if "." not in f.column else None,
                               bool(a < alpha and f.effect > f.tolerance), float(f.tolerance), float(f.effect),
                               f.detail, f.share, f.reference_share))
    return tuple(out)


def _figures(profile: ReferenceProfile, features: list[str], x: np.ndarray, categories: dict,
             per_window: float) -> list:
    """The categorical columns' figures (shares, unseen values, gaps) and the numeric columns' gaps."""
    from monitoring.categorical import missing_figure, score_categorical

    count = len(features) + 3 * len(profile.categories)
    out = []
    for j, name in enumerate(features):
        missing, rows = profile.missing.get(name, (0, profile.rows))
        out += missing_figure(name, int(np.isnan(x[:, j]).sum()), x.shape[0], missing, rows, features=count,
                              per_window=per_window)
    for name, ref in profile.categories.items():
        if name in categories:
            out += score_categorical(name, ref, categories[name], features=count, per_window=per_window)
    return out


def score_window(profile: ReferenceProfile, features: list[str], x: np.ndarray, proba: np.ndarray | None = None,
                 *, prediction: np.ndarray | None = None, alpha: float = 0.05,
                 correction: str = "benjamini-hochberg", min_shift: float = 0.1,
                 tolerances: dict[str, float] | None = None, categories: dict | None = None,
                 per_window: float = 0.001) -> WindowScores:
    """Scores of the window `x` (rows × numeric `features`; NaN where a value was left out), of its
    categorical columns' values (`categories`: name → values), of every column's gaps, and, when
    given, of its class probabilities or its predicted classes (the live log keeps the class, not
    the probabilities). All the columns' p-values are corrected together."""
    if x.ndim != 2 or x.shape[1] != len(features) or x.shape[0] == 0:
        raise ValueError(f"a window must be a non-empty matrix of {len(features)} feature column(s)")
    missing = [f for f in features if f not in profile.features]
    if missing:
        raise ValueError(f"the reference profile has no feature(s) {missing}")
    numeric = _numeric(features, [profile.features[f] for f in features], _sorted_rows(x))
    figures = _figures(profile, features, x, categories or {}, per_window)
    feature_scores = _scores(numeric, "ks", alpha, correction, min_shift, tolerances, figures)
    prediction_scores: tuple[ColumnScore, ...] = ()
    if proba is not None:
        columns = _numeric([f"probability_{c}" for c in profile.classes],
                           [profile.probabilities[str(c)] for c in profile.classes],
                           _sorted_rows(proba))
        prediction_scores = _scores(columns, "ks", alpha, correction, min_shift)
        prediction = predicted_class(proba)
    if prediction is not None and profile.regression:  # the predicted values, a numeric column of their own
        columns = _numeric(["prediction"], [profile.probabilities["prediction"]],
                           _sorted_rows(np.asarray(prediction, dtype=np.float64).reshape(-1, 1)))
        prediction_scores = _scores(columns, "ks", alpha, "none", min_shift)
    elif prediction is not None:
        counts = np.bincount(prediction, minlength=len(profile.classes))[:len(profile.classes)]
        stat, p = chi2_counts(profile.class_counts, counts)
        prediction_scores += _scores([("predicted_class", stat, p, None, None, None, "")], "chi2", alpha, "none", 0.0)
    return WindowScores(int(x.shape[0]), feature_scores, prediction_scores,
                        any(s.drifted for s in feature_scores))
