"""Drift statistics, pure (NumPy and SciPy only; no Ray, no MLflow).

One statistic per module: `ks` (Kolmogorov–Smirnov against a reference sorted once), `psi`
(population stability index over reference quantile bins), `chi2` (categorical counts),
`distances` (Wasserstein and Jensen–Shannon), and `correction` (Bonferroni, Benjamini–Hochberg)
across the features of a window, with `kstwo` (Smirnov's distribution, the KS p-value). Where SciPy
computes a statistic it is called; the KS statistic against a fixed reference uses the reference's
sorted values, the Wasserstein distance and PSI shares of a sorted window their sorted forms, and
unit tests show each equals SciPy's (`ks_2samp`'s statistic and p-value, `wasserstein_distance`,
`kstwo.sf`, `jensenshannon`) or the plain form. The loops a window runs per feature are compiled
with Numba (cached on disk): in NumPy, call overhead and a data-dependent merge were most of a
window's time.
"""

from monitoring.drift_stats.chi2 import chi2_counts
from monitoring.drift_stats.correction import CORRECTIONS, adjust
from monitoring.drift_stats.distances import jensen_shannon, wasserstein, wasserstein_sorted
from monitoring.drift_stats.ks import EXACT_MAX_N, ks_against_sorted, ks_pvalues, ks_statistic_sorted
from monitoring.drift_stats.psi import psi, psi_bins, psi_shares, psi_shares_sorted

__all__ = ["CORRECTIONS", "EXACT_MAX_N", "adjust", "chi2_counts", "jensen_shannon", "ks_against_sorted", "ks_pvalues",
           "ks_statistic_sorted", "psi", "psi_bins", "psi_shares", "psi_shares_sorted", "wasserstein",
           "wasserstein_sorted"]
