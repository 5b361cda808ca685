"""Drift statistics (pure): each equals SciPy's where SciPy computes it, on seeded data of many shapes."""

import numpy as np
import pytest
from scipy import stats

from monitoring.drift_stats import (EXACT_MAX_N, adjust, chi2_counts, jensen_shannon, ks_against_sorted, psi, psi_bins,
                                    psi_shares, wasserstein)

SHAPES = [(50, 30), (400, 1000), (10_000, 10_000), (20_000, 5_000), (20_000, 12_000), (15_000, 300), (11_000, 11_000)]


@pytest.mark.parametrize("n_ref, n_win", SHAPES)
@pytest.mark.parametrize("kind", ["normal", "shifted", "ties", "constant window", "integers", "disjoint", "narrower"])
def test_ks_against_a_sorted_reference_equals_scipy(n_ref, n_win, kind):
    rng = np.random.default_rng(n_ref * 7 + n_win)
    reference = rng.normal(size=n_ref)
    window = rng.normal(loc=0.3 if kind == "shifted" else 0.0, size=n_win)
    if kind == "ties":  # few distinct values on both sides
        reference, window = np.round(reference, 1), np.round(window * 1.1, 1)
    if kind == "constant window":
        window = np.full(n_win, np.median(reference))
    if kind == "integers":  # heavy ties, some values only on one side
        reference, window = rng.poisson(3.0, n_ref).astype(float), rng.poisson(3.5, n_win).astype(float)
    if kind == "disjoint":  # every window value above every reference value
        window = reference.max() + 1 + rng.random(n_win)
    if kind == "narrower":  # the window inside the reference's range, with the reference's own values
        window = rng.choice(np.round(reference, 2), n_win) * 0.5
    expected = stats.ks_2samp(reference, window)
    d, p = ks_against_sorted(np.sort(reference), window)
    assert d == expected.statistic
    assert p == pytest.approx(expected.pvalue, rel=1e-10, abs=1e-300)  # the series summed apart: 1e-10


@pytest.mark.parametrize("n", [141, 1_000, 4_000, 8_000, 40_000])
def test_kstwo_sf_equals_scipy_in_every_branch(n):
    from monitoring.drift_stats.ks import kstwo_sf

    d = np.array([0.0, 1e-4, 0.4 / n, 0.9 / n, 2 / n, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.45, 0.5,
                  0.7, 1 - 1.5 / n, 1.0])
    np.testing.assert_allclose(kstwo_sf(d, n), stats.kstwo.sf(d, n), rtol=1e-10, atol=1e-300)


def test_the_compiled_gap_equals_ks_2samp_on_random_shapes_and_ties():
    """The statistic of the scorer's compiled pass, bit for bit, over 300 seeded pairs: sizes 1 to 30,000
    on either side, continuous values, rounded ones (ties on both sides), a few integers, one value."""
    from monitoring.drift_stats import ks_statistic_sorted

    rng = np.random.default_rng(2026)
    for case in range(300):
        n_ref, n_win = (int(x) for x in rng.integers(1, [30_000, 12_000] if case % 3 else [40, 40]))
        reference = rng.normal(size=n_ref)
        window = rng.normal(loc=rng.choice([0.0, 0.05, 0.5]), scale=rng.choice([0.5, 1.0, 2.0]), size=n_win)
        kind = case % 5
        if kind == 1:
            reference, window = np.round(reference, 1), np.round(window, 1)
        elif kind == 2:
            reference, window = np.floor(reference * 2), np.floor(window * 2)
        elif kind == 3:
            window = np.full(n_win, rng.choice(reference))
        expected = stats.ks_2samp(reference, window, method="asymp").statistic
        assert ks_statistic_sorted(np.sort(reference), np.sort(window)) == expected, (case, n_ref, n_win)


@pytest.mark.parametrize("n", [141, 700, 4_000, 20_000, 150_000])
def test_kstwo_sf_equals_scipy_across_its_pelz_good_range(n):
    """Where a steady feature's statistic falls (n·d² < 2.2 and n·d^1.5 > 1.4, or n > 100,000):
    the compiled series, to 1e-12 relative."""
    from monitoring.drift_stats.ks import kstwo_sf

    d = np.linspace(0.2 / n, min(0.499, np.sqrt(2.19 / n)), 400)
    np.testing.assert_allclose(kstwo_sf(d, n), stats.kstwo.sf(d, n), rtol=1e-12, atol=1e-300)


def test_ks_refuses_an_empty_sample():
    with pytest.raises(ValueError, match="at least one value"):
        ks_against_sorted(np.array([]), np.array([1.0]))


def test_psi_is_zero_for_the_reference_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=20_000)
    edges = psi_bins(reference)
    ref_shares = psi_shares(reference, edges)
    assert len(edges) == 9 and ref_shares == pytest.approx(np.full(10, 0.1), abs=1e-3)
    assert psi(ref_shares, ref_shares) == 0.0
    scores = [psi(ref_shares, psi_shares(rng.normal(loc=s, size=5_000), edges)) for s in (0.0, 0.3, 1.0)]
    assert scores[0] < 0.01 < scores[1] < scores[2]
    w = psi_shares(rng.normal(loc=0.3, size=5_000), edges)  # the formula itself
    assert psi(ref_shares, w) == pytest.approx(float(np.sum((w - ref_shares) * np.log(w / ref_shares))))


def test_psi_bins_of_a_discrete_feature_are_its_values_and_an_empty_bin_stays_finite():
    reference = np.repeat([0.0, 1.0, 2.0], [500, 300, 200])
    edges = psi_bins(reference)
    assert edges.tolist() == [0.0, 1.0]
    assert psi_shares(reference, edges).tolist() == [0.5, 0.3, 0.2]
    only_zeros = psi_shares(np.zeros(100), edges)
    assert np.isfinite(psi(psi_shares(reference, edges), only_zeros)) and psi(psi_shares(reference, edges), only_zeros) > 1


def test_chi_squared_equals_scipy_and_ignores_categories_empty_on_both_sides():
    ref, win = np.array([500, 300, 200, 0]), np.array([90, 70, 40, 0])
    stat, p = chi2_counts(ref, win)
    expected = stats.chi2_contingency(np.array([ref[:3], win[:3]]), correction=False)
    assert stat == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert chi2_counts(np.array([10, 0]), np.array([5, 0])) == (0.0, 1.0)
    assert chi2_counts(ref, np.array([10, 80, 110, 0]))[1] < 1e-10
    with pytest.raises(ValueError, match="same categories"):
        chi2_counts(ref, np.array([1, 2]))


def test_distances_equal_scipy_normalised_by_scale():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=2_000), rng.normal(loc=0.5, scale=2.0, size=3_000)
    assert wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b))
    assert wasserstein(a * 10, b * 10, scale=10.0) == pytest.approx(wasserstein(a, b))
    assert wasserstein(np.ones(3), np.ones(3), scale=0.0) == 0.0
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    assert jensen_shannon(p, p) == 0.0 and jensen_shannon(p, q) == pytest.approx(jensen_shannon(q, p))
    assert 0 < jensen_shannon(p, q) < 1 and jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)
    from scipy.spatial import distance

    for _ in range(50):  # shares with empty bins, unnormalised counts
        p, q = rng.integers(0, 5, size=10).astype(float), rng.integers(0, 5, size=10).astype(float)
        p[0] += 1
        q[1] += 1
        assert jensen_shannon(p, q) == pytest.approx(distance.jensenshannon(p, q, base=2), rel=1e-12, abs=1e-15)


def test_corrections_keep_false_alarms_down_across_twenty_null_features():
    rng = np.random.default_rng(3)
    windows = [np.array([ks_against_sorted(np.sort(rng.normal(size=2_000)), rng.normal(size=500))[1]
                         for _ in range(20)]) for _ in range(60)]
    raw = np.mean([np.sum(p < 0.05) for p in windows])
    assert 0.4 < raw < 2.0  # about one false alarm per 20-feature window, uncorrected
    for method in ("bonferroni", "benjamini-hochberg"):
        alarms = sum(bool(np.any(adjust(p, method) < 0.05)) for p in windows)
        assert alarms <= 8, (method, alarms)  # family-wise ≤ α on average: a few of 60
    p = np.array([0.01, 0.04, 0.03, 0.5])
    assert adjust(p, "bonferroni").tolist() == pytest.approx([0.04, 0.16, 0.12, 1.0])
    assert adjust(p, "benjamini-hochberg") == pytest.approx(stats.false_discovery_control(p, method="bh"))
    assert adjust(p, "none").tolist() == p.tolist()
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(p, "holm")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust(np.array([1.5]))


@pytest.mark.parametrize("n_ref, n_win", SHAPES)
@pytest.mark.parametrize("kind", ["normal", "shifted", "ties", "integers", "disjoint"])
def test_sorted_forms_equal_the_plain_ones(n_ref, n_win, kind):
    from monitoring.drift_stats import ks_statistic_sorted, psi_shares_sorted, wasserstein_sorted

    rng = np.random.default_rng(n_ref + 3 * n_win)
    reference, window = rng.normal(size=n_ref), rng.normal(loc=0.3 if kind == "shifted" else 0, size=n_win)
    if kind == "ties":
        reference, window = np.round(reference, 1), np.round(window, 1)
    if kind == "integers":
        reference, window = rng.poisson(3.0, n_ref).astype(float), rng.poisson(3.5, n_win).astype(float)
    if kind == "disjoint":
        window = reference.max() + 1 + rng.random(n_win)
    r, w = np.sort(reference), np.sort(window)
    expected = stats.ks_2samp(reference, window).statistic
    if max(n_ref, n_win) > EXACT_MAX_N:  # where the scorer uses it: the same number
        assert ks_statistic_sorted(r, w) == expected
    else:  # smaller samples go to ks_2samp; the same gap may be reached by another pair of counts
        assert ks_statistic_sorted(r, w) == pytest.approx(expected, rel=1e-12)
    expected = stats.wasserstein_distance(reference, window)
    assert wasserstein_sorted(r, w) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert wasserstein_sorted(r, w[: n_win - 1]) == pytest.approx(  # sizes that do not divide
        stats.wasserstein_distance(reference, np.sort(window)[: n_win - 1]), rel=1e-9, abs=1e-12)
    edges = psi_bins(reference)
    assert psi_shares_sorted(w, edges).tolist() == psi_shares(window, edges).tolist()


def test_the_tolerance_is_what_chance_rarely_exceeds_shrinks_with_the_window_and_keeps_its_floor():
    from monitoring.drift_stats import wasserstein_sorted
    from monitoring.tolerance import shift_tolerance

    rng = np.random.default_rng(9)
    reference = np.sort(rng.normal(size=20_000))
    sizes = [200, 1_000, 5_000, 50_000]
    raw = [shift_tolerance(reference, n, floor=0.0) for n in sizes]
    assert raw == sorted(raw, reverse=True) and raw[-1] < 0.03  # ~1/√n
    assert shift_tolerance(reference, 50_000) == 0.1 and shift_tolerance(reference, 200) == pytest.approx(raw[0])
    chunks = [wasserstein_sorted(reference, np.sort(rng.choice(reference, 1_000)), scale=reference.std())
              for _ in range(2_000)]
    assert sum(c > raw[1] for c in chunks) <= 2  # calibrated for 1 window in 1,000 across 20 features
    assert shift_tolerance(np.zeros(100), 10) == 0.1  # a constant reference: the floor


@pytest.mark.parametrize("ones", [40, 2_000, 10_000])  # a rare flag, a 10% flag, a balanced one
def test_a_binary_feature_s_tolerance_is_reachable_and_still_rarely_exceeded_by_chance(ones):
    """Chunks of a 0/1 column lie on a lattice: some match the reference exactly (distance 0), many
    come within a hair of it. Fitted with the rest, they once put the tolerance at 1e3–1e13σ."""
    from monitoring.drift_stats import wasserstein_sorted
    from monitoring.tolerance import shift_tolerance

    reference = np.zeros(20_000)
    reference[-ones:] = 1.0
    std = reference.std()
    rng = np.random.default_rng(ones)
    for n in (200, 1_000, 5_000):
        tolerance = shift_tolerance(reference, n, std=std)
        assert 0.1 <= tolerance < 1.0  # the flag at 10% → 50% moves 1.3σ: a window can show it
        chunks = [wasserstein_sorted(reference, np.sort(rng.choice(reference, n)), scale=std) for _ in range(2_000)]
        assert sum(c > tolerance for c in chunks) <= 2  # calibrated for 1 window in 1,000 across 20 features


def test_a_balanced_boolean_category_s_tolerance_stays_below_the_distance_s_bound():
    from monitoring.categorical import js_tolerance

    for n in (100, 200):  # draws equal to the reference's shares (distance 0) once made it 1e5–1e10
        assert js_tolerance(np.array([500, 500]), n) < 1.0 and js_tolerance(np.array([900, 100]), n) < 1.0
