"""The training→serving contract, pure: what a registered version answers and how it is named.

A version predicts class probabilities for a float32 matrix whose columns are its features in
order. The class of a row is the most probable one (`predicted_class`, taken once per answer and
used by everything that reports it); the probability columns of tabular answers (the pyfunc
`predict`, MLflow scoring payloads) are named here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

PREDICTION_COLUMN = "prediction"


def probability_columns(num_classes: int) -> list[str]:
    """`probability_0` … `probability_{K-1}`: one column per class, in class order."""
    return [f"probability_{k}" for k in range(num_classes)]


def predicted_class(proba: np.ndarray) -> np.ndarray:
    """The class index of each row (int64): the most probable class."""
    return proba.argmax(axis=1).astype(np.int64, copy=False)


def prediction_frame(proba: np.ndarray, prediction: np.ndarray | None = None) -> pd.DataFrame:
    """The tabular answer: `prediction` and one probability column per class."""
    prediction = predicted_class(proba) if prediction is None else prediction
    out = {PREDICTION_COLUMN: prediction}
    out.update({col: proba[:, k].astype("float64") for k, col in enumerate(probability_columns(proba.shape[1]))})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version loaded for serving: its inputs, its classes, where its weights are, and
    its probability function (float32 matrix in feature order → rows × classes)."""

    name: str
    version: int
    features: tuple[str, ...]
    num_classes: int
    device: str
    predict_proba: Callable[[np.ndarray], np.ndarray]
