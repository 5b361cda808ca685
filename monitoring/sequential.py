"""Always-valid comparison of two proportions: a canary's against the live champion's, checked as often as wanted.

A fixed-horizon test checked after every batch of requests inflates its error rate (the peeking
problem); a mixture sequential probability ratio test (mSPRT; Robbins 1970, Johari et al. 2017)
does not: its likelihood ratio against a null, mixed over alternatives with a normal prior of
scale τ, is a nonnegative martingale under the null, so by Ville's inequality it ever reaches 1/α
with probability at most α, however often it is looked at. On the difference θ of two rates
(canary minus champion, of "bad" outcomes: errors, or wrong predictions where labels arrive) with
its estimate θ̂ and variance V, the mixture ratio against θ = θ₀ is

    Λ(θ₀) = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 V (V + τ²)))

Two one-sided questions are asked of the same data: is the canary **worse** (reject θ ≤ 0, so a
canary as good as the champion is rolled back with probability ≤ α), and is it **not worse by the
smallest effect worth acting on** δ (reject θ ≥ δ, so a canary worse by δ or more is promoted with
probability ≤ α). Neither yet: "collecting" — too little traffic is never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WORSE, NOT_WORSE, COLLECTING = "worse", "not_worse", "collecting"


@dataclass(frozen=True)
class RateTest:
    """The evidence on one rate (or one mean loss, `compare_means`): estimates, the two log mixture
    ratios and the boundary log(1/α)."""

    verdict: str
    canary_rate: float
    champion_rate: float
    difference: float          # θ̂ = canary − champion
    log_lr_worse: float        # log Λ(0): evidence the canary is worse
    log_lr_not_worse: float    # log Λ(δ): evidence it is not worse by δ
    boundary: float            # log(1/α)
    samples: tuple[int, int]   # (canary, champion)


def log_mixture_ratio(theta_hat: float, variance: float, theta0: float, tau: float) -> float:
    """log Λ(θ₀) of the normal mSPRT (module docstring)."""
    if variance <= 0:
        return 0.0
    t2 = tau * tau
    return 0.5 * math.log(variance / (variance + t2)) + t2 * (theta_hat - theta0) ** 2 / (2 * variance * (variance + t2))


def compare_rates(canary_bad: int, canary_n: int, champion_bad: int, champion_n: int, *, delta: float,
                  alpha: float = 0.05, min_samples: int = 100, tau: float | None = None) -> RateTest:
    """Worse, not worse by `delta`, or collecting: the always-valid verdict on canary vs champion
    rates of bad outcomes. Rates are smoothed (x + ½)/(n + 1) for the variance, so that no bad
    outcome yet is not read as no uncertainty; `tau` defaults to `delta` (power where it matters)."""
    if not 0 < alpha < 1 or delta <= 0:
        raise ValueError(f"alpha must be in (0, 1) and delta above 0, not {alpha} and {delta}")
    boundary = math.log(1 / alpha)
    p_c = canary_bad / canary_n if canary_n else 0.0
    p_h = champion_bad / champion_n if champion_n else 0.0
    if min(canary_n, champion_n) < min_samples:
        return RateTest(COLLECTING, p_c, p_h, p_c - p_h, 0.0, 0.0, boundary, (canary_n, champion_n))
    s_c, s_h = (canary_bad + 0.5) / (canary_n + 1), (champion_bad + 0.5) / (champion_n + 1)
    variance = s_c * (1 - s_c) / canary_n + s_h * (1 - s_h) / champion_n
    theta = p_c - p_h
    scale = delta if tau is None else tau
    worse = log_mixture_ratio(theta, variance, 0.0, scale)
    not_worse = log_mixture_ratio(theta, variance, delta, scale)
    if theta > 0 and worse >= boundary:
        verdict = WORSE
    elif theta < delta and not_worse >= boundary:
        verdict = NOT_WORSE
    else:
        verdict = COLLECTING
    return RateTest(verdict, p_c, p_h, theta, worse, not_worse, boundary, (canary_n, champion_n))


def compare_means(canary_sum: float, canary_sum_sq: float, canary_n: int, champion_sum: float,
                  champion_sum_sq: float, champion_n: int, *, delta: float, alpha: float = 0.05,
                  min_samples: int = 100, tau: float | None = None) -> RateTest:
    """Worse, not worse by `delta`, or collecting: the always-valid verdict on the canary's mean of a
    per-row loss (a regression model's absolute error, from its sum and sum of squares over its
    labelled rows) against the champion's over the same period — the same mSPRT as `compare_rates`,
    on θ = canary mean − champion mean with V = s²_canary/n + s²_champion/n from the sample variances.

    Its assumptions: rows independent (the two arms see different rows of the same period, so the
    test is unpaired), the loss of finite variance (absolute errors rather than squared ones for
    that reason: a heavy-tailed target makes squared errors' variance unstable), and enough rows per
    arm (`min_samples`) for the mean's normal approximation the mixture ratio rests on; `delta` is
    in the loss's units (the target's)."""
    if not 0 < alpha < 1 or delta <= 0:
        raise ValueError(f"alpha must be in (0, 1) and delta above 0, not {alpha} and {delta}")
    boundary = math.log(1 / alpha)
    m_c = canary_sum / canary_n if canary_n else 0.0
    m_h = champion_sum / champion_n if champion_n else 0.0
    if min(canary_n, champion_n) < max(min_samples, 2):
        return RateTest(COLLECTING, m_c, m_h, m_c - m_h, 0.0, 0.0, boundary, (canary_n, champion_n))

    def sample_variance(total: float, total_sq: float, n: int) -> float:
        return max(total_sq - total * total / n, 0.0) / (n - 1)

    variance = (sample_variance(canary_sum, canary_sum_sq, canary_n) / canary_n
                + sample_variance(champion_sum, champion_sum_sq, champion_n) / champion_n)
    theta = m_c - m_h
    scale = delta if tau is None else tau
    worse = log_mixture_ratio(theta, variance, 0.0, scale)
    not_worse = log_mixture_ratio(theta, variance, delta, scale)
    if theta > 0 and worse >= boundary:
        verdict = WORSE
    elif theta < delta and not_worse >= boundary:
        verdict = NOT_WORSE
    else:
        verdict = COLLECTING
    return RateTest(verdict, m_c, m_h, theta, worse, not_worse, boundary, (canary_n, champion_n))
