"""What the label asks the model to do, decided from the config and the data, pure (pandas).

`task: classification | regression` in the experiment config says it; left out, it is inferred only
where the data leaves no doubt: text or booleans name classes; numbers with a fractional part are
quantities. A column of whole numbers could be either (class ids 0..K-1, or a count, a score, a price
in whole units): it is taken for class ids only when it holds at most `MAX_INFERRED_CLASSES`
distinct values, all of them 0..K-1; otherwise it is refused before any work, asking for `task`
(a disease-progression score of 25–346 was trained as a 214-class classifier without a word).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = (CLASSIFICATION, REGRESSION)
#: whole-number labels with more distinct values than this are not taken for class ids unless declared
MAX_INFERRED_CLASSES = 20


class TaskError(ValueError):
    """The label cannot be read one way only, or not the way the config says; the message says what to set."""


def is_text(y: pd.Series) -> bool:
    """Strings (object or string dtype holding only str values)."""
    if pd.api.types.is_string_dtype(y) and not pd.api.types.is_object_dtype(y):
        return True
    return pd.api.types.is_object_dtype(y) and bool(y.dropna().map(type).eq(str).all())


def _names_classes(y: pd.Series) -> bool:
    """Text or booleans (their values name classes)."""
    if pd.api.types.is_bool_dtype(y) or is_text(y):
        return True
    values = y.dropna()
    return pd.api.types.is_object_dtype(y) and len(values) > 0 and bool(
        values.map(lambda v: isinstance(v, (bool, np.bool_))).all())


def decide_task(y: pd.Series, label: str, declared: str | None) -> str:
    """The task for label column `y`: `declared` when given, else inferred where the data leaves no
    doubt; `TaskError` naming the label and what to set otherwise (regression of text or booleans)."""
    if declared == REGRESSION:
        if _names_classes(y) or not pd.api.types.is_numeric_dtype(y):
            raise TaskError(f"task: regression needs a number to predict, but label {label!r} holds "
                            f"{'booleans or text' if _names_classes(y) else y.dtype} (class names): "
                            "leave task out or set `task: classification`")
        return REGRESSION
    if declared == CLASSIFICATION or _names_classes(y):
        return CLASSIFICATION
    if not pd.api.types.is_numeric_dtype(y):
        return CLASSIFICATION  # another type: the label checks name it
    values = y.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if len(values) and (values != np.round(values)).any():
        return REGRESSION  # a fractional part: a quantity, never a class id
    distinct = np.unique(values)
    ids = len(distinct) == 0 or (distinct.min() >= 0 and distinct.max() < len(distinct) + 1)
    if len(distinct) > MAX_INFERRED_CLASSES or not ids:
        shown = f"{distinct.min():g}–{distinct.max():g}" if len(distinct) else "none"
        raise TaskError(f"label {label!r} holds {len(distinct)} distinct whole numbers ({shown}): class ids or a "
                        f"number to predict? Whole-number labels are taken for classes only when they are "
                        f"0..K-1 with at most {MAX_INFERRED_CLASSES} of them; set `task: regression` for a "
                        "number to predict, `task: classification` if they are classes (given as ids 0..K-1, or "
                        "other values as strings)")
    return CLASSIFICATION
