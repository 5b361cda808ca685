"""Accuracy estimation from probabilities (pure): against a brute-force computation and known truth."""

import numpy as np
import pytest

from monitoring.estimation import calibration, expected_accuracy, expected_calibration_error, fit_temperature, \
    with_temperature


def calibrated(n: int, seed: int, shift: float = 0.0):
    """Rows whose true class is drawn from the probabilities themselves: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(loc=shift, scale=2.0, size=n)
    p1 = 1 / (1 + np.exp(-logit))
    proba = np.column_stack([1 - p1, p1])
    y = (rng.random(n) < p1).astype(int)
    return proba, y


def test_a_calibrated_models_estimate_matches_its_realised_accuracy_under_covariate_shift():
    for shift in (0.0, 1.0, -2.0):  # the inputs move; P(y|x) does not
        proba, y = calibrated(200_000, seed=3, shift=shift)
        realised = float((proba.argmax(axis=1) == y).mean())
        assert expected_accuracy(proba) == pytest.approx(realised, abs=0.005)


def test_the_calibration_error_equals_a_brute_force_binning():
    proba, y = calibrated(5_000, seed=1)
    over = with_temperature(proba, 0.5)  # sharpened: overconfident
    conf, right = over.max(axis=1), (over.argmax(axis=1) == y)
    brute = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        mask = (conf >= lo) & ((conf < hi) if b < 14 else (conf <= hi))
        if mask.any():
            brute += mask.mean() * abs(right[mask].mean() - conf[mask].mean())
    assert expected_calibration_error(over, y) == pytest.approx(brute, rel=1e-9)
    assert expected_calibration_error(over, y) > expected_calibration_error(proba, y)


def test_the_fitted_temperature_undoes_a_known_miscalibration():
    proba, y = calibrated(50_000, seed=2)
    assert fit_temperature(with_temperature(proba, 0.5), y) == pytest.approx(2.0, rel=0.05)
    found = calibration(with_temperature(proba, 0.5), y)
    assert found["temperature"] == pytest.approx(2.0, rel=0.05) and found["ece_with_temperature"] < found["ece"]
    assert calibration(proba, y)["fitted_temperature"] == pytest.approx(1.0, rel=0.05)
    assert np.allclose(with_temperature(proba, 1.0), proba)
    with pytest.raises(ValueError, match="non-empty"):
        expected_accuracy(np.empty((0, 2)))
