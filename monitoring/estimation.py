"""Accuracy before labels arrive: confidence-based estimation from calibrated class probabilities (pure).

If a model's probabilities are calibrated, the chance that its predicted class is right is the
probability it gave that class, so a window's expected accuracy is the mean of its rows' largest
class probability (confidence-based performance estimation, as NannyML's CBPE does for accuracy).
This holds under covariate shift (the inputs move, P(y|x) stays); when labels do arrive and the
realised accuracy parts from the estimate, P(y|x) itself has moved (concept drift).

Calibration is checked on the validation split at registration: `expected_calibration_error`
(equal-width confidence bins) and `fit_temperature` (one temperature T scaling the logits,
p ∝ p_raw^(1/T), fitted by log loss with SciPy); the temperature is kept when it lowers the error.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

EPS = 1e-12


def with_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities with their logits divided by `temperature` (1: unchanged)."""
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def expected_accuracy(proba: np.ndarray, temperature: float = 1.0) -> float:
    """The accuracy a calibrated model expects on these rows: the mean of each row's largest probability."""
    if proba.ndim != 2 or proba.shape[0] == 0:
        raise ValueError("expected accuracy needs a non-empty rows × classes matrix of probabilities")
    return float(with_temperature(proba.astype(np.float64), temperature).max(axis=1).mean())


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Σ over equal-width confidence bins of (share of rows) × |accuracy − mean confidence|."""
    confidence = proba.max(axis=1)
    right = (proba.argmax(axis=1) == y).astype(np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        mask = which == b
        total += mask.mean() * abs(right[mask].mean() - confidence[mask].mean())
    return float(total)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the log loss of `y` under the scaled probabilities (0.05 to 20)."""
    def loss(log_t: float) -> float:
        p = with_temperature(proba.astype(np.float64), float(np.exp(log_t)))
        return float(-np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0)).mean())

    found = optimize.minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def calibration(proba: np.ndarray, y: np.ndarray) -> dict:
    """The validation split's calibration: its error, the fitted temperature, the error with it, and the
    temperature to use (the fitted one only when it lowers the error; else 1)."""
    before = expected_calibration_error(proba, y)
    temperature = fit_temperature(proba, y)
    after = expected_calibration_error(with_temperature(proba, temperature), y)
    return {"ece": before, "fitted_temperature": temperature, "ece_with_temperature": after,
            "temperature": temperature if after < before else 1.0}
