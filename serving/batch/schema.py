"""Batch inference's table contract, pure: which input columns a version can score, and what the
output holds.

Input: a Parquet table holding the version's feature columns by name, each of its kind (numbers;
text, booleans or integer codes for a categorical column, plain or dictionary-encoded; gaps where the
version imputes them); any other columns may be carried through (ids, timestamps). The version's
preparation (training/columns.py) makes the rows its input, as for a served request. Output, one row per scored input row: the
carried columns, `prediction` (class index), `label` (the class as the user named it), one
`probability_<class>` column per class (`training.probability_columns`) and `version`; for a
regression version `prediction` is the predicted value (float64, the target's units) and there
is no `label` or probability column.
The Parquet files' key-value metadata name the model, the version and the MLflow run that wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from serving.protocol import FP32_MAX  # a larger number would reach the model as infinity
from training import class_labels, predicted_class, predicted_values, probability_columns

PREDICTION, LABEL, VERSION = "prediction", "label", "version"
#: what makes a row invalid (`invalid_rows`), as refusals name it
INVALID = ("infinite values or gaps the version does not impute (null, NaN), numbers beyond float32's range or "
           "fractional integer codes")
#: key-value metadata of every output file (`handoff.node`/`handoff.device`: where its rows were predicted)
META_MODEL, META_VERSION, META_RUN, META_NODE, META_DEVICE = (
    "handoff.model", "handoff.version", "handoff.mlflow_run_id", "handoff.node", "handoff.device")


class BatchInputError(ValueError):
    """An input, a column choice or an output that cannot be used; the message names it."""


def output_names(classes: Sequence, task: str = "classification") -> list[str]:
    """The columns batch inference adds to every row, in order."""
    if task == "regression":
        return [PREDICTION, VERSION]
    return [PREDICTION, LABEL, *probability_columns(classes), VERSION]


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _fits(t: pa.DataType, values: str | None) -> bool:
    """Whether an Arrow column type can hold a feature of this kind (None: numeric)."""
    t = _plain_type(t)
    if values is None:  # numbers, or a column every row left empty (Arrow types it null)
        return _numeric(t) or pa.types.is_null(t)
    if values == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
    if values == "bool":
        return pa.types.is_boolean(t) or pa.types.is_null(t)
    # integer codes: an integer type, or floats (what pandas writes for integers with a gap; training
    # takes them too), whose fractional values are invalid rows (`invalid_rows`)
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def check_input(schema: pa.Schema, features: Sequence[str], classes: Sequence,
                carry: Sequence[str] | None, preparation=None, task: str = "classification") -> list[str]:
    """The columns to carry through, once the input is known to hold every feature as a number.

    `carry` None carries every column that is not a feature (ids, timestamps, labels); a list
    names them (it may include features). Refuses, naming the columns: a missing feature, a
    feature that is not numeric, a carried column that does not exist, a carried column whose
    name an output column takes."""
    types = {f.name: f.type for f in schema}
    missing = [f for f in features if f not in types]
    if missing:
        raise BatchInputError(f"the input has no feature column(s) {_some(missing)}; the version needs "
                              f"{_some(features)} and the input has {_some(sorted(types))}")
    values = _value_types(preparation, features)
    wrong = {f: str(types[f]) for f in features if not _fits(types[f], values[f])}
    if wrong:
        raise BatchInputError("feature column(s) are not of their kind: " + ", ".join(
            f"{name} is {t}, the version takes {'numbers' if values[name] is None else values[name]}"
            for name, t in wrong.items()))
    if carry is None:
        feature_set = set(features)
        carry = [c for c in types if c not in feature_set]
    else:
        unknown = [c for c in carry if c not in types]
        if unknown:
            raise BatchInputError(f"--columns names column(s) the input does not have: {_some(unknown)}; "
                                  f"it has {_some(sorted(types))}")
    taken = sorted(set(carry) & set(output_names(classes, task)))
    if taken:
        raise BatchInputError(f"input column(s) {taken} would be overwritten by the output's own columns "
                              f"({', '.join(output_names(classes, task))}); leave them out with --columns")
    return list(carry)


def check_files(files: Sequence[tuple[str, pa.Schema]], schema: pa.Schema, features: Sequence[str],
                carry: Sequence[str], preparation=None) -> None:
    """Refuses a file of the input that does not hold what `check_input` found in the table's `schema`
    (its first file's), naming the file: a feature or carried column it lacks (its rows would be
    scored with gaps), a feature not of its kind there (text would be parsed as numbers), a carried
    column of another type (the output's files would disagree). A column a file left wholly empty
    (Arrow's null type) fits any."""
    values = _value_types(preparation, features)
    feature_set, needed = set(features), list(dict.fromkeys([*features, *carry]))
    for path, file_schema in files:
        if file_schema.equals(schema):
            continue
        types = {f.name: f.type for f in file_schema}
        missing = [c for c in needed if c not in types]
        if missing:
            raise BatchInputError(f"input file {path} has no column(s) {_some(missing)}, which the input's first "
                                  "file has; every file must hold the features and the carried columns")
        wrong = [f"{name} is {types[name]}, the version takes {'numbers' if values[name] is None else values[name]}"
                 for name in features if not _fits(types[name], values[name])]
        wrong += [f"{name} is {types[name]}, the first file's is {schema.field(name).type}" for name in carry
                  if name not in feature_set and not _same_column_type(types[name], schema.field(name).type)]
        if wrong:
            more = f" and {len(wrong) - 10} more" if len(wrong) > 10 else ""
            raise BatchInputError(f"input file {path} holds column(s) of another type than the input's first file: "
                                  f"{', '.join(wrong[:10])}{more}")


def _same_column_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether two files' types of a carried column agree (dictionary-encoded or not, or left empty)."""
    return pa.types.is_null(a) or pa.types.is_null(b) or _plain_type(a) == _plain_type(b)


def _plain_type(t: pa.DataType) -> pa.DataType:
    """The type of a column's values (a dictionary-encoded column's: its dictionary's)."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _some(names: Sequence[str], shown: int = 10) -> str:
    """`names` as a list, the first `shown` of a long one (a very wide table's)."""
    return str(list(names)) if len(names) <= shown else f"{list(names[:shown])} and {len(names) - shown} more"


def feature_matrix(batch: pa.Table, features: Sequence[str]) -> np.ndarray:
    """The float32 matrix of `features` in order; a null becomes NaN (an invalid row)."""
    x = np.empty((batch.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        column = batch.column(name)
        if pa.types.is_decimal(column.type) or pa.types.is_boolean(column.type) or pa.types.is_dictionary(column.type):
            column = _as_float64(column)
        x[:, j] = column if isinstance(column, np.ndarray) else column.to_numpy(zero_copy_only=False)
    return x


def _value_types(preparation, features: Sequence[str]) -> dict[str, str | None]:
    if preparation is None:
        return {f: None for f in features}
    return {c.name: None if c.kind == "numeric" else c.values for c in preparation.columns}


def invalid_rows(batch: pa.Table, preparation) -> np.ndarray:
    """Rows that cannot be scored: an infinite number or one beyond float32's range (the model's input:
    it would reach the model as infinity, as a served request's is refused), or a gap (null, NaN) the
    version does not impute (every gap, for versions registered before preparations existed), or an
    integer code stored as a float that is not a whole number (no category is 2.5)."""
    bad = np.zeros(batch.num_rows, dtype=bool)
    for column in preparation.columns:
        values = batch.column(column.name)
        if preparation.refuse_missing:
            bad |= values.is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
        if column.kind == "numeric":
            x = _as_float64(values)
            with np.errstate(invalid="ignore"):
                bad |= (np.abs(x) > FP32_MAX) | (np.isnan(x) if preparation.refuse_missing else False)
        elif getattr(column, "values", None) == "integer" and pa.types.is_floating(_plain_type(values.type)):
            x = _as_float64(values)
            with np.errstate(invalid="ignore"):
                bad |= np.isfinite(x) & (x != np.floor(x)) | np.isinf(x)
    return bad


def _as_float64(column) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.cast(pa.float64()).to_numpy(zero_copy_only=False)


def prepared_matrix(batch: pa.Table, preparation) -> np.ndarray:
    """The version's input for the rows of `batch` (its preparation: the same as for a served request)."""
    if preparation.all_numeric:
        return preparation.transform_matrix(feature_matrix(batch, preparation.names)).x
    columns = {}
    for column in preparation.columns:
        values = batch.column(column.name)
        columns[column.name] = _as_float64(values) if column.kind == "numeric" else values.to_pylist()
    return preparation.transform(columns, rows=batch.num_rows).x


def output_table(carried: pa.Table, proba: np.ndarray, classes: Sequence, version: int,
                 metadata: Mapping[str, str], task: str = "classification") -> pa.Table:
    """The scored rows: the carried columns, then the prediction, the class, the probabilities and the
    version (regression: the predicted value and the version), with `metadata` as the schema's
    key-value metadata (written into each Parquet file)."""
    columns = {name: carried.column(name) for name in carried.column_names}
    if task == "regression":  # `proba` is the outputs: rows × 1
        prediction = predicted_values(proba)
        columns[PREDICTION] = pa.array(prediction, pa.float64())
    else:
        prediction = predicted_class(proba)
        columns[PREDICTION] = pa.array(prediction)
        columns[LABEL] = pa.array(class_labels(classes, prediction))
        for k, name in enumerate(probability_columns(classes)):
            columns[name] = pa.array(proba[:, k].astype(np.float64, copy=False))
    columns[VERSION] = pa.array(np.full(len(prediction), int(version), dtype=np.int64))
    table = pa.table(columns)
    return table.replace_schema_metadata({str(k): str(v) for k, v in metadata.items()})


def run_metadata(model: str, version: int, run_id: str) -> dict[str, str]:
    """What every output file says of its origin."""
    return {META_MODEL: model, META_VERSION: str(int(version)), META_RUN: run_id}
