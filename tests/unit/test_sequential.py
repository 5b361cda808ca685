"""The always-valid canary comparison: the mixture ratio against a brute-force integral, and its error
rates under continuous monitoring by simulation (seeded, known truth)."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from monitoring.sequential import COLLECTING, NOT_WORSE, WORSE, compare_rates, log_mixture_ratio


@pytest.mark.parametrize("theta_hat, variance, theta0, tau", [(0.01, 1e-5, 0.0, 0.01), (-0.02, 4e-5, 0.01, 0.005),
                                                              (0.0, 1e-4, 0.0, 0.02), (0.003, 2e-6, 0.01, 0.01)])
def test_the_mixture_ratio_equals_its_integral(theta_hat, variance, theta0, tau):
    sd = math.sqrt(variance)
    numerator, _ = integrate.quad(lambda t: stats.norm.pdf(theta_hat, t, sd) * stats.norm.pdf(t, theta0, tau),
                                  theta0 - 12 * tau, theta0 + 12 * tau, points=[theta_hat], limit=200)
    expected = math.log(numerator / stats.norm.pdf(theta_hat, theta0, sd))
    assert log_mixture_ratio(theta_hat, variance, theta0, tau) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def ever(verdict: str, p_canary: float, p_champion: float, runs: int = 600, looks: int = 150, step: int = 100,
         seed: int = 0) -> float:
    """Share of simulated canaries that ever reach `verdict` when checked after every `step` requests per arm."""
    rng = np.random.default_rng(seed)
    bad_c = rng.binomial(step, p_canary, size=(runs, looks)).cumsum(axis=1)
    bad_h = rng.binomial(step, p_champion, size=(runs, looks)).cumsum(axis=1)
    hits = 0
    for r in range(runs):
        for k in range(looks):
            n = (k + 1) * step
            if compare_rates(int(bad_c[r, k]), n, int(bad_h[r, k]), n, delta=0.01, alpha=0.05).verdict == verdict:
                hits += 1
                break
    return hits / runs


def test_checking_after_every_batch_promotes_a_worse_canary_at_most_alpha_of_the_time():
    # canary worse by exactly the smallest effect worth acting on: the hardest case to refuse
    assert ever(NOT_WORSE, 0.06, 0.05) <= 0.05


def test_checking_after_every_batch_rolls_back_an_equal_canary_at_most_alpha_of_the_time():
    assert ever(WORSE, 0.05, 0.05, seed=1) <= 0.05


def test_clear_cases_are_decided_and_thin_evidence_is_not():
    assert compare_rates(100, 2000, 20, 2000, delta=0.01).verdict == WORSE
    decided = compare_rates(20, 4000, 200, 4000, delta=0.01)
    assert decided.verdict == NOT_WORSE and decided.difference == pytest.approx(-0.045)
    assert compare_rates(0, 50, 0, 50, delta=0.01).verdict == COLLECTING  # under min_samples: never a pass
    assert compare_rates(0, 150, 0, 150, delta=0.01).verdict == COLLECTING  # no errors on little traffic
    with pytest.raises(ValueError, match="delta"):
        compare_rates(1, 200, 1, 200, delta=0)
