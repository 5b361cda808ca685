"""Canary decisions with known truth, by simulation (seeded). Not a test.

Simulated canaries against a champion with a 5% rate of bad outcomes (errors, or wrong predictions),
for a canary equal to it, worse by 1 point and better by 1 point, at low and high traffic (requests
per check). Three rules decide, checking after every batch:

  sequential   Handoff's always-valid mixture SPRT (monitoring/sequential.py): worse / not worse by
               1 point / collecting, α = 5%
  fixed        a fixed-horizon one-sided z-test (H0: the canary is worse by 1 point) of the same α and
               the same power as the sequential rule measured at that traffic (its correct decisions
               on the equal and the worse canary, the lower): one look, at its precomputed sample size
  flagger      an absolute rule checked every interval, as Flagger's analysis does: promote after 5
               checks in a row with the canary's rate under the threshold (champion's rate + 1
               point), roll back after 5 checks over it

Reported per scenario: the false promotion rate (a worse canary promoted), the false rollback rate
(an equal or better one rolled back), undecided, and the median requests per arm to a decision.

The regression case (`--regression`): the same three rules on a regression model's live mean
absolute error (labelled rows per arm between checks), absolute errors of normal residuals
(half-normal), champion MAE 10, minimum effect 5% of it (Handoff's `canary.min_effect_mae_ratio`),
canaries equal, worse by the effect and better by it; the sequential rule is `compare_means`, the
fixed horizon a one-sided two-sample z-test on the means at the sequential rule's power.

Drift at any sample size (`--drift`): windows of 1,000 to 1,000,000 rows of 20 features against a
reference of 20,000 rows, with a negligible real shift (0.02σ in every feature) present: alarms of
Handoff's scorer (BH-corrected KS and each feature's shift tolerance, calibrated from the reference
at the window's size, never below 0.1σ) against a plain per-feature KS at
p < 0.05, and detection of a 0.3σ shift in 3 of the 20 features.

    .venv/bin/python bench/decisions.py [--canaries 10000] [--drift] [--regression]
Writes bench/results/decisions.json (and decisions-drift.json, decisions-regression.json).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monitoring.sequential import NOT_WORSE, WORSE, compare_means, compare_rates  # noqa: E402

BASE, DELTA, ALPHA = 0.05, 0.01, 0.05
SCENARIOS = {"equal": BASE, "worse": BASE + DELTA, "better": BASE - DELTA}
TRAFFIC = {"low": 50, "high": 500}   # requests per arm between checks
MAX_REQUESTS = 40_000                # per arm: the longest a canary runs (its maximum duration)


def fixed_sample_size(power: float = 0.8) -> int:
    """Per arm: a one-sided two-proportion z-test at α detecting a 1-point difference with `power`."""
    z_a, z_b = stats.norm.ppf(1 - ALPHA), stats.norm.ppf(power)
    variance = BASE * (1 - BASE) + (BASE + DELTA) * (1 - BASE - DELTA)
    return int(math.ceil((z_a + z_b) ** 2 * variance / DELTA ** 2))


def simulate(rule: str, p_canary: float, step: int, canaries: int, seed: int, n_fixed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    looks = MAX_REQUESTS // step
    outcomes, requests = [], []
    for _ in range(canaries):
        bad_c = rng.binomial(step, p_canary, looks).cumsum()
        bad_h = rng.binomial(step, BASE, looks).cumsum()
        decision, at = "undecided", MAX_REQUESTS
        if rule == "sequential":
            for k in range(looks):
                n = (k + 1) * step
                verdict = compare_rates(int(bad_c[k]), n, int(bad_h[k]), n, delta=DELTA, alpha=ALPHA).verdict
                if verdict in (WORSE, NOT_WORSE):
                    decision, at = ("rollback" if verdict == WORSE else "promote"), n
                    break
        elif rule == "fixed":
            k = min(looks - 1, math.ceil(n_fixed / step) - 1)
            n = (k + 1) * step
            diff = bad_c[k] / n - bad_h[k] / n
            pooled = (bad_c[k] + bad_h[k]) / (2 * n)
            z = (DELTA - diff) / math.sqrt(max(2 * pooled * (1 - pooled) / n, 1e-12))  # H0: canary worse by DELTA
            decision, at = ("promote" if z > stats.norm.ppf(1 - ALPHA) else "rollback"), n
        else:  # flagger: absolute threshold on each interval's rate, 5 checks in a row
            good = bad = 0
            for k in range(looks):
                rate = (bad_c[k] - (bad_c[k - 1] if k else 0)) / step
                champion = (bad_h[k] - (bad_h[k - 1] if k else 0)) / step
                if rate <= champion + DELTA:
                    good, bad = good + 1, 0
                else:
                    good, bad = 0, bad + 1
                if good >= 5 or bad >= 5:
                    decision, at = ("promote" if good >= 5 else "rollback"), (k + 1) * step
                    break
        outcomes.append(decision)
        requests.append(at)
    share = lambda d: sum(o == d for o in outcomes) / canaries  # noqa: E731
    return {"promote": share("promote"), "rollback": share("rollback"), "undecided": share("undecided"),
            "median_requests": statistics.median(requests)}


MAE, MAE_DELTA = 10.0, 0.5  # the champion's mean absolute error; 5% of it
MAE_SCENARIOS = {"equal": MAE, "worse": MAE + MAE_DELTA, "better": MAE - MAE_DELTA}
HALF_NORMAL_VAR = 1 - 2 / math.pi  # variance of |N(0, 1)| over its squared mean × 2/π: var = σ²(1 - 2/π)


def half_normal(rng, mae: float, size: int) -> np.ndarray:
    """Absolute errors of normal residuals whose mean absolute error is `mae`."""
    return np.abs(rng.normal(0.0, mae * math.sqrt(math.pi / 2), size))


def fixed_sample_size_mae(power: float) -> int:
    """Per arm: a one-sided two-sample z-test of the mean absolute errors at α detecting MAE_DELTA."""
    z_a, z_b = stats.norm.ppf(1 - ALPHA), stats.norm.ppf(power)
    sigma2 = lambda mae: (mae * math.sqrt(math.pi / 2)) ** 2 * HALF_NORMAL_VAR  # noqa: E731
    return int(math.ceil((z_a + z_b) ** 2 * (sigma2(MAE) + sigma2(MAE + MAE_DELTA)) / MAE_DELTA ** 2))


def simulate_regression(rule: str, mae_canary: float, step: int, canaries: int, seed: int, n_fixed: int = 0) -> dict:
    """As `simulate`, on labelled rows' absolute errors."""
    rng = np.random.default_rng(seed)
    looks = MAX_REQUESTS // step
    outcomes, rows = [], []
    for _ in range(canaries):
        c, h = half_normal(rng, mae_canary, looks * step), half_normal(rng, MAE, looks * step)
        sums_c, sums_h = c.reshape(looks, step).sum(axis=1).cumsum(), h.reshape(looks, step).sum(axis=1).cumsum()
        sq_c, sq_h = (c ** 2).reshape(looks, step).sum(axis=1).cumsum(), (h ** 2).reshape(looks, step).sum(axis=1).cumsum()
        decision, at = "undecided", MAX_REQUESTS
        if rule == "sequential":
            for k in range(looks):
                n = (k + 1) * step
                verdict = compare_means(sums_c[k], sq_c[k], n, sums_h[k], sq_h[k], n, delta=MAE_DELTA, alpha=ALPHA,
                                        min_samples=step).verdict
                if verdict in (WORSE, NOT_WORSE):
                    decision, at = ("rollback" if verdict == WORSE else "promote"), n
                    break
        elif rule == "fixed":
            k = min(looks - 1, math.ceil(n_fixed / step) - 1)
            n = (k + 1) * step
            variance = (np.var(c[:n], ddof=1) + np.var(h[:n], ddof=1)) / n
            z = (MAE_DELTA - (c[:n].mean() - h[:n].mean())) / math.sqrt(variance)  # H0: canary worse by the effect
            decision, at = ("promote" if z > stats.norm.ppf(1 - ALPHA) else "rollback"), n
        else:  # flagger: each interval's MAE against the champion's + the effect, 5 checks in a row
            good = bad = 0
            interval_c, interval_h = c.reshape(looks, step).mean(axis=1), h.reshape(looks, step).mean(axis=1)
            for k in range(looks):
                if interval_c[k] <= interval_h[k] + MAE_DELTA:
                    good, bad = good + 1, 0
                else:
                    good, bad = 0, bad + 1
                if good >= 5 or bad >= 5:
                    decision, at = ("promote" if good >= 5 else "rollback"), (k + 1) * step
                    break
        outcomes.append(decision)
        rows.append(at)
    share = lambda d: sum(o == d for o in outcomes) / canaries  # noqa: E731
    return {"promote": share("promote"), "rollback": share("rollback"), "undecided": share("undecided"),
            "median_requests": statistics.median(rows)}


def regression_table(canaries: int) -> dict:
    """The three rules on a regression model's canary, printed as the classification table is."""
    results = {"mae": MAE, "delta": MAE_DELTA, "alpha": ALPHA, "runs": {}, "fixed_sample_per_arm": {}}
    print(f"\nregression: champion MAE {MAE:g}; minimum effect {MAE_DELTA:g} (5%); alpha {ALPHA:.0%}; {canaries} "
          f"canaries each; at most {MAX_REQUESTS} labelled rows per arm")
    print(f"{'labels':8} {'canary':7} {'rule':11} {'promoted':>9} {'rolled back':>12} {'undecided':>10} "
          f"{'median rows':>16}")
    for traffic, step in TRAFFIC.items():
        runs = {}
        for rule in ("sequential", "fixed", "flagger"):
            if rule == "fixed":
                power = min(runs[("equal", "sequential")]["promote"], runs[("worse", "sequential")]["rollback"])
                results["fixed_sample_per_arm"][traffic] = n_fixed = fixed_sample_size_mae(min(power, 0.999))
            for scenario, mae in MAE_SCENARIOS.items():
                start = time.perf_counter()
                seed = zlib.crc32(f"regression/{traffic}/{scenario}/{rule}".encode())
                r = simulate_regression(rule, mae, step, canaries, seed, n_fixed if rule == "fixed" else 0)
                r["seconds"] = round(time.perf_counter() - start, 1)
                runs[(scenario, rule)] = results["runs"][f"{traffic}/{scenario}/{rule}"] = r
        for scenario in MAE_SCENARIOS:
            for rule in ("sequential", "fixed", "flagger"):
                r = runs[(scenario, rule)]
                print(f"{traffic:8} {scenario:7} {rule:11} {r['promote']:9.2%} {r['rollback']:12.2%} "
                      f"{r['undecided']:10.2%} {r['median_requests']:16,.0f}")
        print(f"{'':8} fixed-horizon sample at the sequential rule's power ({power:.1%}): {n_fixed} per arm")
    return results


DRIFT_SIZES = {1_000: 1_000, 10_000: 1_000, 100_000: 100, 1_000_000: 20}  # window rows → windows simulated


def drift_at_sizes() -> dict:
    """Alarm rates with a negligible shift present, and detection of a real one, at every window size."""
    from monitoring.decision import DriftState, decide
    from monitoring.reference import build_profile
    from monitoring.scoring import score_window
    from monitoring.tolerance import shift_tolerance

    rng = np.random.default_rng(5)
    features = [f"f{i}" for i in range(20)]
    reference = rng.normal(size=(20_000, 20))
    profile = build_profile(reference, features, np.full((20_000, 2), 0.5), [0, 1], "bench")
    out = {}
    for rows, windows in DRIFT_SIZES.items():
        ours = plain = declared = 0
        state = DriftState()
        tolerances = {f: shift_tolerance(profile.features[f].sorted_sample, rows, std=profile.features[f].std)
                      for f in features}  # as the monitor calibrates them
        for index in range(windows):
            x = rng.normal(loc=0.02, size=(rows, 20))  # 0.02σ everywhere: real, and nobody cares
            scores = score_window(profile, features, x, tolerances=tolerances)
            ours += scores.drifted
            plain += any(s.p_value < 0.05 for s in scores.features)
            state, event = decide(state, scores, index, "bench", 1, persistence=3)
            declared += event is not None
        shifted = rng.normal(loc=0.02, size=(rows, 20))
        shifted[:, :3] += 0.3
        found = score_window(profile, features, shifted, tolerances=tolerances).drifted_features
        out[rows] = {"windows": windows, "drifted_windows": ours, "alarms_per_1000": 1000 * ours / windows,
                     "declared": declared, "declared_per_1000": 1000 * declared / windows,
                     "plain_ks_alarms_per_1000": 1000 * plain / windows, "detected_0.3σ": found == features[:3],
                     "flagged_0.3σ": found}
        print(f"  {rows:>9,} rows x {windows:>5} windows, per 1,000: handoff drifted windows "
              f"{out[rows]['alarms_per_1000']:6.1f}, declared (persistence 3) {out[rows]['declared_per_1000']:5.1f}; "
              f"plain KS {out[rows]['plain_ks_alarms_per_1000']:6.1f}; 0.3σ in f0-f2 flagged: {found}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canaries", type=int, default=10_000, help="simulated canaries per scenario and traffic")
    parser.add_argument("--drift", action="store_true", help="also the drift part (a few minutes: 1M-row windows)")
    parser.add_argument("--regression", action="store_true", help="only the regression case (the canary on mean "
                        "absolute error)")
    args = parser.parse_args()
    if args.regression:
        regression = regression_table(args.canaries)
        (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (REPO / "bench" / "results" / "decisions-regression.json").write_text(json.dumps(regression, indent=2))
        return
    if args.drift:
        print("drift at any sample size (a 0.02σ shift in every feature present):")
        drift = drift_at_sizes()
        (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (REPO / "bench" / "results" / "decisions-drift.json").write_text(json.dumps(drift, indent=2, default=str))
    results = {"base_rate": BASE, "delta": DELTA, "alpha": ALPHA, "runs": {}, "fixed_sample_per_arm": {}}
    print(f"champion bad rate {BASE:.0%}; minimum effect {DELTA:.0%}; alpha {ALPHA:.0%}; {args.canaries} canaries "
          f"each; at most {MAX_REQUESTS} requests per arm")
    print(f"{'traffic':8} {'canary':7} {'rule':11} {'promoted':>9} {'rolled back':>12} {'undecided':>10} "
          f"{'median requests':>16}")
    for traffic, step in TRAFFIC.items():
        runs = {}
        for rule in ("sequential", "fixed", "flagger"):
            if rule == "fixed":  # the same power as the sequential rule at this traffic
                power = min(runs[("equal", "sequential")]["promote"], runs[("worse", "sequential")]["rollback"])
                results["fixed_sample_per_arm"][traffic] = n_fixed = fixed_sample_size(min(power, 0.999))
            for scenario, p in SCENARIOS.items():
                start = time.perf_counter()
                seed = zlib.crc32(f"{traffic}/{scenario}/{rule}".encode())
                r = simulate(rule, p, step, args.canaries, seed, n_fixed if rule == "fixed" else 0)
                r["seconds"] = round(time.perf_counter() - start, 1)
                runs[(scenario, rule)] = results["runs"][f"{traffic}/{scenario}/{rule}"] = r
        for scenario in SCENARIOS:
            for rule in ("sequential", "fixed", "flagger"):
                r = runs[(scenario, rule)]
                print(f"{traffic:8} {scenario:7} {rule:11} {r['promote']:9.2%} {r['rollback']:12.2%} "
                      f"{r['undecided']:10.2%} {r['median_requests']:16,.0f}")
        print(f"{'':8} fixed-horizon sample at the sequential rule's power ({power:.1%}): {n_fixed} per arm")
    out = REPO / "bench" / "results" / "decisions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
