"""The training→serving contract, pure: what a registered version answers and how it is named.

A version answers a float32 matrix (its prepared inputs in order) with its outputs: a classifier
with class probabilities (rows × classes), a regression model with the predicted value (rows × 1,
in the target's units). A classifier's classes are the label's values as the user had them (ids
0..K-1, False/True or strings), in class-index order. The class of a row is the most probable one
(`predicted_class`, taken once per answer and used by everything that reports it), named by
`class_labels`; the columns of tabular answers (the pyfunc `predict`, MLflow scoring payloads) are
named here and nowhere else: `prediction` (class index, or the predicted value), and for a
classifier `label` and `probability_<class>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from training.columns import Preparation
from training.task import CLASSIFICATION, REGRESSION

PREDICTION_COLUMN = "prediction"  # the class index, or the predicted value (regression)
LABEL_COLUMN = "label"            # the class as the user named it (classification)


def probability_columns(classes) -> list[str]:
    """`probability_<class>` for each class, in class order (`probability_0`… for ids 0..K-1)."""
    return [f"probability_{c}" for c in classes]


def class_labels(classes, prediction: np.ndarray) -> np.ndarray:
    """The class of each row as the user named it (strings, booleans or ids)."""
    return np.asarray(list(classes))[prediction]


def predicted_class(proba: np.ndarray) -> np.ndarray:
    """The class index of each row (int64): the most probable class."""
    return proba.argmax(axis=1).astype(np.int64, copy=False)


def predicted_values(outputs: np.ndarray) -> np.ndarray:
    """A regression model's predicted value of each row (float64, the target's units)."""
    return outputs[:, 0].astype(np.float64)


def pyfunc_answer(outputs: np.ndarray, classes, task: str = CLASSIFICATION) -> pd.DataFrame | np.ndarray:
    """What the pyfunc `predict` returns: a classifier's `prediction_frame`; a regression model's
    predicted values as a 1-D float64 array (as MLflow's own regressors answer, so MLflow's scoring
    server gives `{"predictions": [numbers]}`)."""
    return predicted_values(outputs) if task == REGRESSION else prediction_frame(outputs, classes)


def prediction_frame(proba: np.ndarray, classes, prediction: np.ndarray | None = None) -> pd.DataFrame:
    """The tabular answer: `prediction` (class index), `label` (the class) and one probability
    column per class."""
    prediction = predicted_class(proba) if prediction is None else prediction
    out = {PREDICTION_COLUMN: prediction, LABEL_COLUMN: class_labels(classes, prediction)}
    out.update({col: proba[:, k].astype("float64") for k, col in enumerate(probability_columns(classes))})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version loaded for serving: its inputs (raw columns and their preparation), its
    task and classes (none for regression), where its weights are, and its answer function
    `outputs` (the prepared float32 matrix → rows × classes of probabilities, or rows × 1 of
    predicted values; for a table of complete numeric columns the matrix is the columns in order)."""

    name: str
    version: int
    features: tuple[str, ...]
    classes: tuple
    device: str
    outputs: Callable[[np.ndarray], np.ndarray]
    preparation: Preparation | None = None
    task: str = CLASSIFICATION

    def __post_init__(self):
        if self.preparation is None:
            object.__setattr__(self, "preparation", Preparation.numeric(self.features))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def n_outputs(self) -> int:
        return 1 if self.regression else len(self.classes)

    def outputs_of_rows(self, rows) -> np.ndarray:
        """The answer for raw rows (a frame of the feature columns as the data has them), prepared
        by this version's own preparation."""
        return self.outputs(self.preparation.transform(rows).x)

    @property
    def portable(self) -> bool:
        """Whether this version can be sent to another process and moved to its device (`on`): its
        answer function is a picklable object that moves (a Handoff torch version), not a call
        into an MLflow pyfunc loaded in this process."""
        return callable(getattr(self.outputs, "to", None))

    def on(self, device: str) -> LoadedVersion:
        """This version predicting on `device` (`portable` versions only)."""
        if not self.portable:
            raise TypeError(f"{self.name} v{self.version} predicts through its MLflow pyfunc and cannot move devices")
        outputs = self.outputs.to(device)
        return replace(self, device=str(getattr(outputs, "device", device)), outputs=outputs)
