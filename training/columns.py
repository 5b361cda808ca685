"""What a model's columns are and how a raw row becomes its input, pure (NumPy and pandas only).

Each feature column has a kind: **numeric** (integers, floats) or **categorical** (strings, booleans,
Arrow dictionaries, or any column declared so, such as an integer code). The preparation is fitted
once, on the training split, saved inside the registered version (its spec), and applied by every
caller: training, the HTTP gateway, the MLflow pyfunc, batch inference and retraining. So a row is
prepared the same way everywhere; a client sends it as it has it.

- numeric: a missing value (null, NaN) becomes the training split's median; a column that had
  gaps in training also gets an indicator input (1.0 where the value was missing), so the model
  can learn what a gap means. Infinite values are refused, never imputed.
- categorical: one-hot over the vocabulary, the values the training split holds at least
  `min_frequency` times, in a stable order (sorted). Every other value, rare in training or never
  seen, is the "other" bucket: no known column set (scikit-learn's `handle_unknown="ignore"`), a
  pattern the model learned from the rare training values. A missing value is its own category
  where the training split had gaps in the column (an input of its own), else it is answered from
  the other bucket too. A value of the wrong type (a number in a string column) is refused.

The scaling of the prepared inputs stays where it was: the network's `Standardised` wrapper, fitted
on the prepared training matrix. A table of complete numeric columns prepares to exactly the float32
matrix earlier versions took, so their training reproduces bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KINDS = (NUMERIC, CATEGORICAL)
MISSING_NAME = "<missing>"
VALUE_TYPES = ("string", "bool", "integer")


class ColumnError(ValueError):
    """A column that cannot be used as declared, or a value of the wrong kind; names the column."""


# --- kinds ------------------------------------------------------------------------------------
def infer_kind(name: str, series: pd.Series) -> str:
    """A column's kind from its data: strings, booleans and dictionaries are categorical, integers
    and floats numeric; anything else (dates, mixed objects) is refused naming the column."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
        return CATEGORICAL
    if pd.api.types.is_complex_dtype(dtype):
        raise ColumnError(f"feature {name!r} holds complex numbers; give their real and imaginary parts as two "
                          "columns, or leave it out")
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMERIC
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        types = {type(v) for v in series.dropna().head(100_000)}
        if all(issubclass(t, str) for t in types) or types <= {bool, np.bool_}:  # (no value at all: as before)
            return CATEGORICAL
        if all(issubclass(t, NUMBER_TYPES) and not issubclass(t, (bool, np.bool_)) for t in types):
            return NUMERIC  # Python numbers, or Decimal (Parquet's decimal columns)
        shown = ", ".join(sorted(t.__name__ for t in types))
        if len(types) == 1:
            raise ColumnError(f"feature {name!r} holds {shown} values, which are neither numeric nor categorical "
                              "(strings, booleans); convert it, or leave it out")
        raise ColumnError(f"feature {name!r} mixes value types ({shown}); make it one type, or declare its kind")
    raise ColumnError(f"feature {name!r} has type {dtype}, which is neither numeric nor categorical "
                      f"(strings, booleans); convert it, or leave it out")


def column_kinds(frame: pd.DataFrame, features: Sequence[str], declared: Mapping[str, str]) -> dict[str, str]:
    """Each feature's kind, in feature order: as declared, else inferred from the data."""
    unknown = sorted(set(declared) - set(features))
    if unknown:
        raise ColumnError(f"kinds declared for column(s) that are not features: {unknown}")
    bad = {n: k for n, k in declared.items() if k not in KINDS}
    if bad:
        raise ColumnError(f"unknown column kind(s) {bad}; use {' or '.join(KINDS)}")
    return {name: declared.get(name) or infer_kind(name, frame[name]) for name in features}


# --- values -----------------------------------------------------------------------------------
#: what a numeric column's values may be: Python's and NumPy's numbers, and Decimal (what a Parquet
#: decimal column, from Spark or a database export, reads back as)
NUMBER_TYPES = (int, float, np.integer, np.floating, Decimal)


def decimals_as_floats(df: pd.DataFrame, columns) -> pd.DataFrame:
    """`df` with each of `columns` that holds Decimal values (and numbers, gaps) as float64: a decimal
    column is a numeric one, in training as in serving (where `numbers_of` reads Decimal alike)."""
    converted = {}
    for c in columns:
        s = df[c]
        if pd.api.types.is_object_dtype(s.dtype):
            present = s.dropna()
            if len(present) and any(isinstance(v, Decimal) for v in present.head(1000)) and \
                    all(isinstance(v, NUMBER_TYPES) and not isinstance(v, (bool, np.bool_)) for v in present):
                converted[c] = pd.to_numeric(s.map(lambda v: None if _is_missing(v) else float(v)), errors="raise")
    return df.assign(**converted) if converted else df

def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def value_type(name: str, series: pd.Series) -> str:
    """What a categorical column's values are: strings, booleans or integers (a float column can be
    categorical only when every value is whole)."""
    values = series.dropna()
    if isinstance(series.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if pd.api.types.is_bool_dtype(series.dtype) or (len(values) and values.map(type).isin([bool, np.bool_]).all()):
        return "bool"
    if pd.api.types.is_integer_dtype(series.dtype) or (
            len(values) and values.map(lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)).all()):
        return "integer"
    if pd.api.types.is_float_dtype(series.dtype):
        if (values == np.round(values)).all():
            return "integer"
        raise ColumnError(f"feature {name!r} is declared categorical but holds fractional numbers; "
                          "declare it numeric, or round it to whole codes")
    if len(values) and not values.map(type).eq(str).all():
        raise ColumnError(f"feature {name!r} mixes strings with other values; make it one type")
    return "string"


def category_of(name: str, kind: str, value):
    """A categorical value as the vocabulary holds it (str, bool or int), or None for a missing one;
    a value of another type is refused naming the column."""
    if _is_missing(value):
        return None
    if kind == "string":
        if isinstance(value, str):
            return str(value)
    elif kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise ColumnError(f"feature {name!r} takes {kind} values, got {value!r} ({type(value).__name__})")


#: a numeric column of at most this many values in a list is checked value by value (no NumPy call)
SMALL = 16
#: a column of more values than this is one-hot encoded by pandas, not value by value
VECTORISED_FROM = 256
#: what pandas infers for a column of each categorical value type that may hold it
_INFERRED_OK = {"string": {"string", "empty"}, "bool": {"boolean", "empty"},
                "integer": {"integer", "floating", "empty"}}
_WRONG = object()


def category_of_or_none(name: str, kind: str, value):
    """`category_of`, with `_WRONG` for a value of the wrong type instead of raising."""
    try:
        return category_of(name, kind, value)
    except ColumnError:
        return _WRONG


def numbers_of(name: str, values) -> np.ndarray:
    """A numeric column's values as float64 (NaN where missing); text, booleans and infinities are
    refused naming the column (no string is parsed as a number: "3" is a client's mistake)."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            out = values.to_numpy(dtype="float64", na_value=np.nan)
            return _finite(name, out)
        values = values.astype(object).tolist()
    arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if arr.dtype.kind in "iuf":
        return _finite(name, arr.astype("float64"))
    out = np.empty(len(arr), dtype="float64")
    for i, v in enumerate(arr.tolist()):
        if _is_missing(v):
            out[i] = np.nan
        elif isinstance(v, NUMBER_TYPES) and not isinstance(v, (bool, np.bool_)):
            out[i] = _as_float(name, v)
        else:
            raise ColumnError(f"feature {name!r} takes numbers, got {v!r} ({type(v).__name__})")
    return _finite(name, out)


#: the largest magnitude the model's float32 input holds: a larger number would reach it as infinity
FP32_MAX = float(np.finfo(np.float32).max)


def _as_float(name: str, v) -> float:
    """One number as a float, refusing one too large for float64 (an integer of hundreds of digits)."""
    try:
        return float(v)
    except OverflowError:
        raise ColumnError(f"feature {name!r} has a value too large to be a number ({str(v)[:20]}…)") from None


def _finite(name: str, x: np.ndarray) -> np.ndarray:
    """`x`, refusing infinities and numbers beyond float32's range (the model's input is float32)."""
    with np.errstate(invalid="ignore"):
        bad = np.abs(x) > FP32_MAX
    if bad.any():
        if np.isinf(x[bad]).all():
            raise ColumnError(f"feature {name!r} has {int(bad.sum())} infinite value(s)")
        raise ColumnError(f"feature {name!r} has {int(bad.sum())} value(s) infinite or beyond FP32's range "
                          f"(±{FP32_MAX:.4g})")
    return x


# --- the fitted columns -----------------------------------------------------------------------
@dataclass(frozen=True)
class NumericColumn:
    name: str
    median: float
    indicator: bool  # the training split had gaps in it: the model also sees where a value was missing
    kind: str = field(default=NUMERIC, init=False)

    @property
    def width(self) -> int:
        return 1 + int(self.indicator)

    @property
    def output_names(self) -> list[str]:
        return [self.name, *([f"{self.name}={MISSING_NAME}"] if self.indicator else [])]

    def encode(self, values, out: np.ndarray) -> int:
        """Write the column's inputs into `out` (rows × width); the number of values imputed. A few
        values in a list (a served request) are checked one by one in Python, the same rules as
        `numbers_of` (NumPy's per-call cost dominated a one-row request)."""
        if type(values) is list and len(values) <= SMALL:
            return self._encode_few(values, out)
        x = numbers_of(self.name, values)
        gaps = np.isnan(x)
        n = int(gaps.sum())
        if n:
            x = np.where(gaps, self.median, x)
        out[:, 0] = x
        if self.indicator:
            out[:, 1] = gaps
        return n

    def _encode_few(self, values: list, out: np.ndarray) -> int:
        imputed = 0
        for row, v in enumerate(values):
            if _is_missing(v):
                imputed += 1
                out[row, 0] = self.median
                if self.indicator:
                    out[row, 1] = 1.0
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, NUMBER_TYPES):
                raise ColumnError(f"feature {self.name!r} takes numbers, got {v!r} ({type(v).__name__})")
            v = _as_float(self.name, v)  # as numbers_of: through float64
            if not -FP32_MAX <= v <= FP32_MAX:
                _finite(self.name, np.array([v], dtype="float64"))
            out[row, 0] = v
        return imputed

    def to_json(self) -> dict:
        return {"name": self.name, "kind": NUMERIC, "median": self.median, "indicator": self.indicator}


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    values: str                    # the values' type: string, bool or integer
    vocabulary: tuple              # the training split's frequent values, sorted
    missing_input: bool            # the training split had gaps in it: "missing" is an input of its own
    kind: str = field(default=CATEGORICAL, init=False)

    @property
    def width(self) -> int:
        return len(self.vocabulary) + int(self.missing_input)

    @property
    def output_names(self) -> list[str]:
        return [f"{self.name}={v}" for v in self.vocabulary] + ([f"{self.name}={MISSING_NAME}"] if self.missing_input else [])

    @property
    def _index(self) -> dict:
        index = self.__dict__.get("_index_cache")
        if index is None:
            index = {v: i for i, v in enumerate(self.vocabulary)}
            object.__setattr__(self, "_index_cache", index)
        return index

    def encode(self, values, out: np.ndarray) -> tuple[int, int]:
        """Write the column's one-hot inputs into `out` (rows × width, zeros on entry); (values
        outside the vocabulary, missing values). Large batches take pandas' vectorised path, small
        ones (a served request) a dictionary lookup per value: the same answer either way."""
        if len(values) > VECTORISED_FROM:
            try:
                return self._encode_vectorised(values, out)
            except OverflowError:  # an integer code beyond int64: no vocabulary holds it, "other" as below
                pass
        return self._encode_each(values, out)

    def _encode_each(self, values, out: np.ndarray) -> tuple[int, int]:
        index, other = self._index, 0
        missing = 0
        for row, value in enumerate(values.tolist() if hasattr(values, "tolist") else values):
            category = category_of(self.name, self.values, value)
            if category is None:
                missing += 1
                if self.missing_input:
                    out[row, len(self.vocabulary)] = 1.0
                continue
            col = index.get(category)
            if col is None:
                other += 1
            else:
                out[row, col] = 1.0
        return other, missing

    def _encode_vectorised(self, values, out: np.ndarray) -> tuple[int, int]:
        series = values.astype(object) if isinstance(values, pd.Series) else pd.Series(
            values.tolist() if hasattr(values, "tolist") else list(values), dtype=object)
        gaps = series.isna().to_numpy()
        present = series[~gaps]
        inferred = pd.api.types.infer_dtype(present, skipna=True) if len(present) else "empty"
        if inferred not in _INFERRED_OK[self.values] or (inferred == "floating" and
                                                         not present.map(float.is_integer).all()):
            bad = next((v for v in present.tolist() if category_of_or_none(self.name, self.values, v) is _WRONG),
                       _WRONG)
            if bad is _WRONG:  # every value fits, in a mix pandas names otherwise (3 and 3.0): value by value
                return self._encode_each(values, out)
            category_of(self.name, self.values, bad)  # raises, naming the value
        if self.values == "integer":
            present = present.astype("int64")
        elif self.values == "bool":
            present = present.astype(bool)
        codes = pd.Categorical(present.to_numpy(), categories=list(self.vocabulary)).codes if self.vocabulary \
            else np.full(len(present), -1, dtype=np.int8)
        rows = np.nonzero(~gaps)[0]
        known = codes >= 0
        out[rows[known], codes[known]] = 1.0
        if self.missing_input:
            out[gaps, len(self.vocabulary)] = 1.0
        return int((~known).sum()), int(gaps.sum())

    def to_json(self) -> dict:
        return {"name": self.name, "kind": CATEGORICAL, "values": self.values, "vocabulary": list(self.vocabulary),
                "missing_input": self.missing_input}


Column = NumericColumn | CategoricalColumn


@dataclass
class Prepared:
    """Prepared rows and what preparing them did, per column."""

    x: np.ndarray                                            # rows × width, float32
    imputed: dict[str, int] = field(default_factory=dict)    # missing values filled (numeric) or bucketed
    other: dict[str, int] = field(default_factory=dict)      # categorical values outside the vocabulary


@dataclass(frozen=True)
class Preparation:
    """The fitted preparation of a version's columns, in input order. `refuse_missing`: a missing
    value is refused, not imputed (`dataset.missing: refuse`, and versions registered before
    preparations existed)."""

    columns: tuple[Column, ...]
    refuse_missing: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def _name_set(self) -> frozenset:
        known = self.__dict__.get("_name_set_cache")
        if known is None:
            known = frozenset(c.name for c in self.columns)
            object.__setattr__(self, "_name_set_cache", known)
        return known

    @property
    def kinds(self) -> dict[str, str]:
        return {c.name: c.kind for c in self.columns}

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def output_names(self) -> list[str]:
        """The model's inputs after preparation, named (scikit-learn's `get_feature_names_out`)."""
        return [n for c in self.columns for n in c.output_names]

    @property
    def all_numeric(self) -> bool:
        return all(c.kind == NUMERIC for c in self.columns)

    def transform(self, columns: Mapping[str, Sequence] | pd.DataFrame, rows: int | None = None) -> Prepared:
        """The model's input for raw columns (a frame, or name → values); a missing column, a
        column that is not a feature, or a value of the wrong kind is a `ColumnError` naming it."""
        names = list(columns.columns) if isinstance(columns, pd.DataFrame) else list(columns)
        known = self._name_set
        if len(names) != len(known) or not known.issuperset(names):
            given = set(names)
            missing = [n for n in self.names if n not in given]
            extra = [n for n in names if n not in known]
            parts = ([f"missing column(s) {missing}"] if missing else []) + \
                    ([f"unknown column(s) {extra}"] if extra else []) or [f"column(s) given twice: {names}"]
            raise ColumnError(f"{' and '.join(parts)}; the model takes {self.names}")
        n = len(columns) if isinstance(columns, pd.DataFrame) else (
            rows if rows is not None else len(next(iter(columns.values()))) if columns else 0)
        x = np.zeros((n, self.width), dtype=np.float32)
        out = Prepared(x)
        at = 0
        for column in self.columns:
            values = columns[column.name]
            if len(values) != n:
                raise ColumnError(f"feature {column.name!r} has {len(values)} value(s), the others {n}")
            block = x[:, at:at + column.width]
            if self.refuse_missing:
                _refuse_gaps(column.name, values)
            if column.kind == NUMERIC:
                imputed = column.encode(values, block)
                if imputed:
                    out.imputed[column.name] = imputed
            else:
                other, imputed = column.encode(values, block)
                if other:
                    out.other[column.name] = other
                if imputed:
                    out.imputed[column.name] = imputed
            at += column.width
        return out

    def transform_matrix(self, x: np.ndarray) -> Prepared:
        """The model's input for a matrix of numeric columns in order (NaN for a gap): as it is when
        it has no gap and the model no indicator (no copy), else gaps imputed and indicators added."""
        if not self.all_numeric or x.ndim != 2 or x.shape[1] != len(self.columns):
            raise ColumnError(f"a matrix of {len(self.columns)} numeric column(s) {self.names} is expected")
        gaps = np.isnan(x)
        has_gaps = bool(gaps.any())
        if not has_gaps and self.width == len(self.columns):
            return Prepared(x.astype(np.float32, copy=False))
        if has_gaps and self.refuse_missing:
            column = self.columns[int(np.nonzero(gaps.any(axis=0))[0][0])]
            raise ColumnError(f"feature {column.name!r} has {int(gaps[:, self.names.index(column.name)].sum())} "
                              f"missing value(s), and this model takes none")
        out = Prepared(np.empty((x.shape[0], self.width), dtype=np.float32))
        at = 0
        for j, column in enumerate(self.columns):
            n = int(gaps[:, j].sum()) if has_gaps else 0
            out.x[:, at] = np.where(gaps[:, j], column.median, x[:, j]) if n else x[:, j]
            if n:
                out.imputed[column.name] = n
            if column.indicator:
                out.x[:, at + 1] = gaps[:, j]
            at += column.width
        return out

    def raw_columns(self, frame: pd.DataFrame) -> tuple[list[str], np.ndarray, dict[str, list]]:
        """Raw rows as the monitor sees them in the live log: the numeric columns' names and values
        (rows × columns, float64, NaN for a gap) and each categorical column's values as the
        vocabulary holds them (str, bool or int; None for a gap)."""
        numeric = [c.name for c in self.columns if c.kind == NUMERIC]
        x = np.empty((len(frame), len(numeric)))
        for j, name in enumerate(numeric):
            x[:, j] = numbers_of(name, frame[name])
        categories = {c.name: [category_of(c.name, c.values, v) for v in frame[c.name].astype(object).tolist()]
                      for c in self.columns if c.kind == CATEGORICAL}
        return numeric, x, categories

    def to_json(self) -> dict:
        return {"columns": [c.to_json() for c in self.columns], "refuse_missing": self.refuse_missing}

    @classmethod
    def from_json(cls, spec: dict) -> Preparation:
        built: list[Column] = []
        for c in spec["columns"]:
            if c["kind"] == NUMERIC:
                built.append(NumericColumn(c["name"], float(c["median"]), bool(c["indicator"])))
            else:
                built.append(CategoricalColumn(c["name"], c["values"], tuple(c["vocabulary"]), bool(c["missing_input"])))
        return cls(tuple(built), bool(spec.get("refuse_missing", False)))

    @classmethod
    def numeric(cls, features: Sequence[str]) -> Preparation:
        """The preparation of a version registered before preparations existed: complete numeric
        columns, taken as they are (a gap is refused, as it was)."""
        return cls(tuple(NumericColumn(f, 0.0, False) for f in features), refuse_missing=True)


def _refuse_gaps(name: str, values) -> None:
    gaps = sum(1 for v in (values.tolist() if hasattr(values, "tolist") else values) if _is_missing(v))
    if gaps:
        raise ColumnError(f"feature {name!r} has {gaps} missing value(s), and this model takes none")


def fit_preparation(train: pd.DataFrame, kinds: Mapping[str, str], min_frequency: int = 1,
                    max_categories: int | None = None, refuse_missing: bool = False) -> Preparation:
    """The preparation fitted on the training split's raw columns (`kinds` in input order): a
    category gets an input of its own when seen `min_frequency` times or more, and only the
    `max_categories` most frequent do (equal counts: the smaller value first)."""
    columns: list[Column] = []
    for name, kind in kinds.items():
        series = train[name]
        if kind == NUMERIC:
            x = numbers_of(name, series)
            present = x[~np.isnan(x)]
            if not len(present):
                raise ColumnError(f"feature {name!r} has no value in the training split")
            columns.append(NumericColumn(name, float(np.median(present)), bool(len(present) < len(x))))
            continue
        values = value_type(name, series)
        categories = [category_of(name, values, v) for v in series.astype(object).tolist()]
        counts = pd.Series([c for c in categories if c is not None], dtype=object).value_counts()
        frequent = sorted(((-k, v) for v, k in counts.items() if k >= min_frequency), key=_by_count_then_value)
        vocabulary = tuple(sorted(v for _, v in frequent[:max_categories]))
        columns.append(CategoricalColumn(name, values, vocabulary, any(c is None for c in categories)))
    return Preparation(tuple(columns), refuse_missing)


def _by_count_then_value(entry: tuple) -> tuple:
    negative_count, value = entry
    return negative_count, (str(type(value)), value)


def missing_counts(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, int]:
    """Missing values per column (null or NaN), only the columns that have some."""
    counts = {n: int(frame[n].isna().sum()) for n in names}
    return {n: k for n, k in counts.items() if k}
