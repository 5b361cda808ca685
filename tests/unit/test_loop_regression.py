"""The closed loop for a regression model (pure): the live-error trigger, the RMSE gate, and the
always-valid canary on the difference of mean absolute errors."""

import numpy as np
import pytest

from monitoring.loop import VersionFigures, canary_verdict, retrain_trigger
from monitoring.loop_config import LoopConfig
from monitoring.loop_runner import recent_accuracy
from monitoring.sequential import COLLECTING, NOT_WORSE, WORSE, compare_means
from training.retrain import gate_verdict

CFG = LoopConfig.model_validate({"retrain": {"max_rmse_ratio": 1.5, "accuracy_rows": 100},
                                 "canary": {"min_requests": 100, "min_labels": 50, "min_effect_mae_ratio": 0.05}})


def figures(n, errors, requests=1000, p99=10.0, test_mae=10.0):
    errors = np.abs(np.asarray(errors, dtype=np.float64))
    return VersionFigures(requests, 0, p99, n, 0, float(errors.sum()), float((errors ** 2).sum()), test_mae)


def ever(verdict, mae_canary, mae_champion, runs=400, looks=60, step=50, seed=0, delta=0.5):
    """Share of simulated canaries ever reaching `verdict`, checked after every `step` labelled rows
    per arm; absolute errors exponential (heavier tailed than normal) with the given means."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(runs):
        c = rng.exponential(mae_canary, size=looks * step)
        h = rng.exponential(mae_champion, size=looks * step)
        for k in range(1, looks + 1):
            n = k * step
            got = compare_means(c[:n].sum(), (c[:n] ** 2).sum(), n, h[:n].sum(), (h[:n] ** 2).sum(), n,
                                delta=delta, alpha=0.05, min_samples=50).verdict
            if got == verdict:
                hits += 1
                break
    return hits / runs


def test_a_canary_worse_by_the_effect_is_promoted_at_most_alpha_of_the_time():
    assert ever(NOT_WORSE, 10.5, 10.0) <= 0.05


def test_an_equal_canary_is_rolled_back_at_most_alpha_of_the_time():
    assert ever(WORSE, 10.0, 10.0, seed=1) <= 0.05


def test_clear_differences_are_decided_and_thin_evidence_is_not():
    rng = np.random.default_rng(3)
    worse, same = rng.exponential(14.0, 2000), rng.exponential(10.0, 2000)
    assert compare_means(worse.sum(), (worse ** 2).sum(), 2000, same.sum(), (same ** 2).sum(), 2000,
                         delta=0.5).verdict == WORSE
    better = rng.exponential(8.0, 2000)
    assert compare_means(better.sum(), (better ** 2).sum(), 2000, same.sum(), (same ** 2).sum(), 2000,
                         delta=0.5).verdict == NOT_WORSE
    assert compare_means(30.0, 500.0, 3, 30.0, 500.0, 3, delta=0.5).verdict == COLLECTING


def test_the_canary_verdict_speaks_of_mean_absolute_error():
    rng = np.random.default_rng(4)
    champion = figures(2000, rng.exponential(10.0, 2000))
    assert canary_verdict(champion, figures(800, rng.exponential(15.0, 800)), CFG)[0] == "rollback"
    promoted = canary_verdict(champion, figures(800, rng.exponential(8.0, 800)), CFG)
    assert promoted[0] == "promote" and "MAE" in promoted[1]
    with pytest.raises(ValueError, match="test MAE"):
        canary_verdict(figures(2000, [1.0] * 2000, test_mae=None), figures(800, [1.0] * 800), CFG)


def test_live_rmse_above_its_ceiling_triggers_a_retraining():
    windows = {"0": {"labelled": 60, "squared_error_sum": 60 * 400.0, "absolute_error_sum": 60 * 18.0},
               "1": {"labelled": 60, "squared_error_sum": 60 * 400.0, "absolute_error_sum": 60 * 18.0}}
    recent = recent_accuracy(windows, 100)
    assert recent == (120, 48000.0, "regression")
    trigger = retrain_trigger("price", 3, [], recent, CFG, test_rmse=10.0)  # live RMSE 20 > 1.5 × 10
    assert trigger.kind == "error" and "live RMSE of v3 20 over 120 labelled rows, above 15" in trigger.reason
    assert retrain_trigger("price", 3, [], recent, CFG, test_rmse=14.0) is None  # 20 ≤ 21
    absolute = LoopConfig.model_validate({"retrain": {"max_rmse": 19.0, "accuracy_rows": 100}})
    assert retrain_trigger("price", 3, [], recent, absolute).kind == "error"
    assert retrain_trigger("price", 3, [], (50, 50 * 900.0, "regression"), absolute) is None  # too few labels yet


@pytest.mark.parametrize("recent, original, passed, why", [
    ((9.0, 10.0), (10.2, 10.0), True, "RMSE on recent held-out rows: candidate 9 vs champion 10"),
    ((10.0, 10.0), (10.0, 10.0), False, "does not lower RMSE on recent rows by more than 0.0%"),
    ((9.0, 10.0), (11.0, 10.0), False, "raises RMSE on the original test split by 10.0%, more than 5.0%"),
])
def test_the_gate_compares_rmse_as_relative_changes(recent, original, passed, why):
    scores = {"recent": {"candidate": recent[0], "champion": recent[1]},
              "original": {"candidate": original[0], "champion": original[1]}}
    verdict, reason = gate_verdict(scores, 0.0, 0.05, "regression")
    assert verdict is passed and why in reason
