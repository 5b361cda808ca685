"""Drift statistics, pure (NumPy and SciPy only; no Ray, no MLflow).

One statistic per module: `ks` (Kolmogorov–Smirnov against a reference sorted once), `psi`
(population stability index over reference quantile bins), `chi2` (categorical counts),
`distances` (Wasserstein and Jensen–Shannon), and `correction` (Bonferroni, Benjamini–Hochberg)
across the features of a window. Where SciPy computes a statistic it is called; the KS statistic
against a fixed reference uses the reference's sorted values, and its unit test shows it equals
`scipy.stats.ks_2samp` (statistic and p-value).
"""

from monitoring.drift_stats.chi2 import chi2_counts
from monitoring.drift_stats.correction import CORRECTIONS, adjust
from monitoring.drift_stats.distances import jensen_shannon, wasserstein
from monitoring.drift_stats.ks import ks_against_sorted
from monitoring.drift_stats.psi import psi, psi_bins, psi_shares

__all__ = ["CORRECTIONS", "adjust", "chi2_counts", "jensen_shannon", "ks_against_sorted", "psi", "psi_bins",
           "psi_shares", "wasserstein"]
