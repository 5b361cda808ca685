"""Pure data preparation: validate rows, put them in a canonical order, split, fit the columns'
preparation on the training split, fingerprint.

The canonical order sorts rows by a content hash, so the split depends only on the rows and the
seed, never on the order in which files or blocks were read. The fingerprint covers exactly the
rows used (after `max_rows`) in split order, with the column names, so any edit, addition or
removal that changes the training data changes it. The preparation (training/columns.py: medians,
missing indicators, vocabularies) is fitted on the training split alone and turns every split's raw
rows into the model's input matrix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.columns import FP32_MAX, NUMERIC, ColumnError, Preparation, column_kinds, decimals_as_floats, \
    fit_preparation, missing_counts, numbers_of, value_type
from training.task import CLASSIFICATION, REGRESSION, TaskError, decide_task, is_text as _is_text
from training.config import DatasetConfig


class DataError(ValueError):
    """The data does not match its declared schema; the message names column and count."""


@dataclass(frozen=True)
class PreparedData:
    """Train/validation/test splits: the model's input matrices (the raw rows prepared) and the raw
    rows themselves (feature columns as the data has them), plus what identifies them."""

    features: list[str]
    label: str
    classes: list  # the label's values in class-index order (ints 0..K-1, False/True, or sorted strings); regression: []
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str
    preparation: Preparation | None = None
    raw_train: pd.DataFrame | None = None
    raw_val: pd.DataFrame | None = None
    raw_test: pd.DataFrame | None = None
    imputed: dict = None  # missing values per column in the rows used (None: none)
    task: str = CLASSIFICATION  # regression: the y arrays are the target's values (float64), not class indices

    def __post_init__(self):
        if self.preparation is None:  # arrays given directly (tests, callers of old): complete numeric columns
            object.__setattr__(self, "preparation", Preparation.numeric(self.features))
        for split in ("train", "val", "test"):  # and the raw rows are the matrices' columns
            if getattr(self, f"raw_{split}") is None:
                object.__setattr__(self, f"raw_{split}", pd.DataFrame(getattr(self, f"x_{split}"), columns=self.features))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """The network's output width: one logit per class, or the one predicted value."""
        return 1 if self.task == REGRESSION else len(self.classes)

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}


def validate_frame(df: pd.DataFrame, features: list[str], label: str, declared: dict | None = None,
                   missing: str = "impute", task: str = CLASSIFICATION) -> dict[str, str]:
    """Each feature's kind (declared, else inferred); `DataError` naming every problem at once:
    missing columns, a column of no usable kind, gaps where `missing` is "refuse", infinite numbers,
    missing or invalid labels (class ids, or for `task` regression finite numbers)."""
    absent = [c for c in [*features, label] if c not in df.columns]
    if absent:
        raise DataError(f"declared column(s) missing from the data: {absent}; "
                        f"the data has {list(df.columns)}")
    problems = []
    try:
        kinds = column_kinds(df, features, declared or {})
    except ColumnError:
        kinds = {}
        for name in features:  # every column's problem, not just the first one's
            try:
                kinds.update(column_kinds(df, [name], {k: v for k, v in (declared or {}).items() if k == name}))
            except ColumnError as exc:
                problems.append(str(exc))
    for col, kind in kinds.items():
        s = df[col]
        n_missing = int(s.isna().sum())
        if n_missing and missing == "refuse":
            problems.append(f"feature {col!r} has {n_missing} NaN/missing value(s) (dataset.missing: refuse)")
            continue
        if n_missing and n_missing == len(s):
            problems.append(f"feature {col!r} has no value at all ({n_missing} missing): nothing to learn or impute from")
            continue
        try:
            if kind == NUMERIC:
                numbers_of(col, s)
            else:
                value_type(col, s)
        except ColumnError as exc:
            problems.append(str(exc))
    y = df[label]
    n_missing = int(y.isna().sum())
    if n_missing:
        problems.append(f"label {label!r} is missing in {n_missing} row(s)")
    if task == REGRESSION:
        values = y.to_numpy(dtype="float64", na_value=np.nan)
        n_bad = int((np.abs(values) > FP32_MAX).sum())
        if n_bad:
            what = "infinite value(s)" if np.isinf(values).sum() == n_bad else \
                "value(s) infinite or beyond FP32's range (±3.4e38)"
            problems.append(f"label {label!r} has {n_bad} {what}: a number to predict must be finite in the "
                            "model's float32")
    elif pd.api.types.is_bool_dtype(y) or _is_text(y):
        if 0 < y.nunique() < 2:  # a classifier of one class learns nothing
            problems.append(f"label {label!r} holds one class only ({y.dropna().iloc[0]!r}): a classifier needs "
                            "at least two")
    elif pd.api.types.is_numeric_dtype(y):
        values = y.to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        n_bad = int(((finite < 0) | (finite != np.round(finite))).sum()) + int(np.isinf(values).sum())
        distinct = np.unique(finite)
        if n_bad:
            problems.append(f"label {label!r} has {n_bad} value(s) that are not class ids 0..K-1 (whole, not "
                            "negative numbers); give the classes as strings or booleans (class names), or map "
                            "them to 0..K-1")
        elif len(distinct) == 1:
            problems.append(f"label {label!r} holds one class only ({distinct[0]:g}): a classifier needs at least two")
        elif len(distinct) and distinct.max() + 1 > max(2 * len(distinct), len(distinct) + MAX_UNUSED_IDS):
            problems.append(f"label {label!r} holds {len(distinct)} distinct class ids from {distinct.min():g} to "
                            f"{distinct.max():g}: as ids 0..{distinct.max():g} that is {distinct.max() + 1:g} "
                            f"classes, {distinct.max() + 1 - len(distinct):g} of them never seen; map them to "
                            "0..K-1, or give them as strings (class names)")
    else:
        problems.append(f"label {label!r} has type {y.dtype}; use class ids 0..K-1, booleans or strings")
    if len(df) == 0:
        problems.append("the data has no rows")
    if problems:
        raise DataError("data does not match the declared schema:\n  " + "\n  ".join(problems))
    return kinds


#: class ids a label may leave unused beyond its distinct values (labels 1..5: class 0 unused), besides
#: up to as many again; more, and the ids are not ids (years, codes): the model would get that many outputs
MAX_UNUSED_IDS = 10


def label_classes(y: pd.Series) -> list:
    """The classes in their stable order: integer ids 0..max (ids are their own index), False/True,
    or the distinct strings sorted."""
    if pd.api.types.is_bool_dtype(y):
        return [False, True]
    if _is_text(y):
        return sorted(str(v) for v in y.unique())
    return list(range(max(int(y.max()) + 1, 2)))  # as before class names: ids of the rows used (see prepare)


def class_index(y: pd.Series, classes: list) -> np.ndarray:
    """Each label's class index (int64)."""
    if pd.api.types.is_bool_dtype(y):
        return y.to_numpy(dtype="int64")
    if _is_text(y):
        return np.searchsorted(np.asarray(classes, dtype=object), y.astype(str).to_numpy(dtype=object)).astype("int64")
    return y.to_numpy(dtype="int64")


def row_hashes(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A 64-bit content hash per row over `columns` (numbers cast to float64, so int/float agree;
    text, booleans of an object column and categories hashed as text; a gap as a gap)."""
    canon = pd.DataFrame({i: (df[c].astype(str).where(df[c].notna(), None) if _hashed_as_text(df[c])
                              else df[c].astype("float64")) for i, c in enumerate(columns)})
    return pd.util.hash_pandas_object(canon, index=False).to_numpy(dtype="uint64")


def _hashed_as_text(s: pd.Series) -> bool:
    return _is_text(s) or isinstance(s.dtype, pd.CategoricalDtype) or (
        pd.api.types.is_object_dtype(s) and not pd.api.types.is_numeric_dtype(s.dropna().infer_objects()))


def prepare(df: pd.DataFrame, cfg: DatasetConfig, seed: int, task: str | None = None) -> PreparedData:
    """Validate, decide the task (`task`: the config's, None: inferred where the data leaves no
    doubt, training/task.py), order canonically, subsample (`max_rows`), split by `seed`, fit the
    preparation on the training split and prepare every split, fingerprint."""
    twice = sorted({str(c) for c in df.columns[df.columns.duplicated()]} & {str(c) for c in [*cfg.features, cfg.label]})
    if twice:  # which of the two a name means would be a guess
        raise DataError(f"the data has more than one column named {', '.join(map(repr, twice))}; rename one of each")
    df = decimals_as_floats(df, [c for c in dict.fromkeys([*cfg.features, cfg.label]) if c in df.columns])
    if cfg.label in df.columns:
        try:
            task = decide_task(df[cfg.label], cfg.label, task)
        except TaskError as exc:
            raise DataError(str(exc)) from None
    kinds = validate_frame(df, cfg.features, cfg.label, cfg.kinds, cfg.missing, task or CLASSIFICATION)
    columns = [*cfg.features, cfg.label]
    hashes = row_hashes(df, columns)
    order = np.lexsort((hashes,))  # stable: equal hashes are equal rows
    raw_all = df[cfg.features].iloc[order].reset_index(drop=True)
    if task == REGRESSION:  # the target's values, in its units
        classes, y_all = [], df[cfg.label].to_numpy(dtype="float64")[order]
    else:
        classes = label_classes(df[cfg.label])
        y_all = class_index(df[cfg.label], classes)[order]
    hashes = hashes[order]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y_all))
    if cfg.max_rows is not None:
        perm = perm[: cfg.max_rows]
    n = len(perm)
    n_test = max(1, int(round(n * cfg.test_fraction)))
    n_val = max(1, int(round(n * cfg.validation_fraction)))
    if n - n_test - n_val < 1:
        raise DataError(f"{n} row(s) are too few to split into train/validation/test")
    test_idx, val_idx, train_idx = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    used = np.concatenate([train_idx, val_idx, test_idx])
    if classes and isinstance(classes[0], int) and not isinstance(classes[0], bool):  # ids: as many classes as the rows used show
        classes = list(range(max(int(y_all[used].max()) + 1, 2)))
    raw = {split: raw_all.iloc[idx].reset_index(drop=True)
           for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    try:
        preparation = fit_preparation(raw["train"], kinds, cfg.min_frequency, cfg.max_categories,
                                      refuse_missing=cfg.missing == "refuse")
        x = {split: preparation.transform(rows).x for split, rows in raw.items()}
    except ColumnError as exc:
        raise DataError(str(exc)) from None
    return PreparedData(
        features=list(cfg.features),
        label=cfg.label,
        classes=classes,
        x_train=x["train"], y_train=y_all[train_idx],
        x_val=x["val"], y_val=y_all[val_idx],
        x_test=x["test"], y_test=y_all[test_idx],
        fingerprint=fingerprint(columns, hashes[used], (len(train_idx), len(val_idx), len(test_idx))),
        preparation=preparation, raw_train=raw["train"], raw_val=raw["val"], raw_test=raw["test"],
        imputed=missing_counts(raw_all.iloc[used], cfg.features) or None,
        task=task or CLASSIFICATION,
    )


def fingerprint(columns: list[str], hashes: np.ndarray, sizes: tuple[int, int, int]) -> str:
    """sha256 over column names, split sizes and the row hashes in split order."""
    h = hashlib.sha256()
    h.update(("\x1f".join(columns) + f"|{sizes}").encode())
    h.update(np.ascontiguousarray(hashes, dtype="<u8").tobytes())
    return h.hexdigest()
