"""Requests for a model with categorical columns, parsed into raw columns (pure).

Such a model takes one input tensor per column, named after it (the convention of MLServer's and
KServe's pandas codec): BYTES for text, BOOL for booleans, an integer type for an integer code, a
number type (FP32, FP64, INT64, …) for a numeric column; null where the model imputes a gap.
MLflow's scoring payloads carry the same columns by name (`dataframe_split`, `dataframe_records`,
`instances`/`inputs` as records, rows in column order, or columns). Values are kept as they came;
the chosen version's preparation (training/columns.py) checks each one and makes the rows its input,
so a value of the wrong kind is refused naming its column there.
"""

from __future__ import annotations

from serving.protocol import NUMERIC_DATATYPES, BadRequest, ModelSignature, check_unique, tensors_by_name

_INTEGER_DATATYPES = {d for d in NUMERIC_DATATYPES if "INT" in d}
#: what a column of each kind may be sent as
ACCEPTED = {None: NUMERIC_DATATYPES, "string": {"BYTES"}, "bool": {"BOOL"}, "integer": _INTEGER_DATATYPES}
_TEXT = {None: "a number", "string": "text", "bool": "a boolean", "integer": "an integer code"}

Columns = dict[str, list]


def _value_types(sig: ModelSignature) -> dict[str, str | None]:
    return dict(zip(sig.features, sig.value_types or (None,) * len(sig.features)))


def _check_names(names: list, sig: ModelSignature, where: str) -> None:
    missing = [f for f in sig.features if f not in names]
    extra = [n for n in names if n not in sig.features]
    if missing or extra:
        parts = ([f"missing column(s) {missing}"] if missing else []) + ([f"unknown column(s) {extra}"] if extra else [])
        raise BadRequest(f"{where}: {' and '.join(parts)}; the model takes {list(sig.features)}", status=422)


def _flat(data, shape: list[int], where: str) -> list:
    """A column tensor's values: `data` flat or nested one level ([[v], [v]] for shape [n, 1])."""
    values = data.tolist() if hasattr(data, "tolist") else data
    if not isinstance(values, list):
        raise BadRequest(f"{where}: 'data' must be a list")
    if values and all(isinstance(v, list) for v in values):
        if not all(len(v) == 1 for v in values):
            raise BadRequest(f"{where}: nested data must hold one value per row")
        values = [v[0] for v in values]
    if any(isinstance(v, (list, dict)) for v in values):
        raise BadRequest(f"{where}: 'data' must hold one value per row")
    if len(values) != shape[0]:
        raise BadRequest(f"{where}: shape {shape} needs {shape[0]} value(s), data has {len(values)}")
    return values


def parse_infer_columns(inputs: list, sig: ModelSignature) -> Columns:
    """OIP v2 inputs, one tensor per column → the columns' values (same length, at least one row)."""
    by_name = tensors_by_name(inputs, f" (one tensor per column: {list(sig.features)})")
    _check_names(list(by_name), sig, "inputs")
    columns: Columns = {}
    for name, values in _value_types(sig).items():
        tensor, where = by_name[name], f"input {name!r}"
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in ACCEPTED[values]:
            raise BadRequest(f"{where} is {_TEXT[values]}: send it as {' or '.join(sorted(ACCEPTED[values]))}, "
                             f"not {datatype!r}", status=422)
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or \
                len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"{where}: shape {shape!r} must be [rows] or [rows, 1]")
        columns[name] = _flat(tensor.get("data"), shape, where)
    return _same_rows(columns, "inputs")


def _same_rows(columns: Columns, where: str) -> Columns:
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise BadRequest(f"{where}: every column must have the same number of rows "
                         f"({', '.join(f'{n}: {len(v)}' for n, v in columns.items())})")
    if sizes == {0}:
        raise BadRequest(f"{where}: the batch is empty; send at least one row")
    return columns


def _records(rows, sig: ModelSignature, where: str) -> Columns:
    if not isinstance(rows, list) or not rows:
        raise BadRequest(f"{where}: expected a non-empty list of rows")
    if all(isinstance(r, dict) for r in rows):
        for i, r in enumerate(rows):
            _check_names(list(r), sig, f"{where}[{i}]")
        return {f: [r[f] for r in rows] for f in sig.features}
    if all(isinstance(r, list) for r in rows):
        if any(len(r) != len(sig.features) for r in rows):
            raise BadRequest(f"{where}: each row must have {len(sig.features)} values in the order {list(sig.features)}")
        return {f: [r[j] for r in rows] for j, f in enumerate(sig.features)}
    raise BadRequest(f"{where}: rows must all be objects (by column name) or all lists (in column order)")


def parse_invocations_columns(body, sig: ModelSignature) -> Columns:
    """An MLflow scoring payload → the columns' values."""
    formats = ("dataframe_split", "dataframe_records", "instances", "inputs")
    if not isinstance(body, dict) or sum(k in body for k in formats) != 1:
        raise BadRequest(f"the body must be a JSON object with exactly one of {', '.join(formats)}")
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or \
                not isinstance(split.get("data"), list):
            raise BadRequest("dataframe_split: needs 'columns' (list) and 'data' (list of rows)")
        columns, data = split["columns"], split["data"]
        check_unique(columns, "dataframe_split")
        _check_names(columns, sig, "dataframe_split")
        if not data:
            raise BadRequest("dataframe_split: the batch is empty; send at least one row")
        if not all(isinstance(r, list) and len(r) == len(columns) for r in data):
            raise BadRequest(f"dataframe_split: each row must have {len(columns)} values (one per column)")
        return {f: [r[columns.index(f)] for r in data] for f in sig.features}
    if "dataframe_records" in body:
        return _records(body["dataframe_records"], sig, "dataframe_records")
    key = "instances" if "instances" in body else "inputs"
    value = body[key]
    if isinstance(value, dict):  # columnar: {column: [values...]}
        _check_names(list(value), sig, key)
        for f in sig.features:
            if not isinstance(value[f], list):
                raise BadRequest(f"{key}[{f!r}]: expected a list of values")
        return _same_rows({f: list(value[f]) for f in sig.features}, key)
    return _records(value, sig, key)
