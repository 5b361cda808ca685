"""Request and response bodies: Open Inference Protocol v2 and MLflow scoring payloads (pure).

Every parser turns a decoded JSON body into one float32 matrix in the model's feature order, or
raises `BadRequest` with the HTTP status and a message that names the field at fault. Nothing
here knows about Ray or HTTP servers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

NUMERIC_DATATYPES = {"FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
MATRIX_INPUT = "features"  # the name of the single 2-D input tensor in the model metadata
#: the outputs of an OIP v2 answer, in order: a classifier's, a regression model's
OUTPUTS = ("prediction", "probability", "label")
REGRESSION_OUTPUTS = ("prediction",)


#: a request id: what the answer's x-request-id header echoes and labels join on, so it must be a
#: valid header value of bounded size: 1 to 256 visible ASCII characters (no controls; no spaces,
#: which a header value loses at its ends, so such an id would not come back as sent) other than `#`;
#: a row's id in the live log is the request's, then `#k` for its k-th row after the first (k ≥ 1,
#: no leading zero): a request id holding `#` could name another request's row ("order#1" is the
#: second row of "order"), so labels could join to the wrong row
MAX_ID_CHARS = 256
REQUEST_ID_PATTERN = rf'^[!-"$-~]{{1,{MAX_ID_CHARS}}}$'
ROW_ID_PATTERN = rf'^[!-"$-~]{{1,{MAX_ID_CHARS}}}(#[1-9][0-9]{{0,8}})?$'
_REQUEST_ID, _ROW_ID = re.compile(REQUEST_ID_PATTERN), re.compile(ROW_ID_PATTERN)


class BadRequest(ValueError):
    """A request the server refuses; `status` is the 4xx code (or 503/504 for load shed or a deadline
    passed), the message names the problem; `headers` go on the answer (`Retry-After`)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@functools.cache
def _answer_readers():
    """training's readers of a version's outputs, imported once on first use (not at import: this
    module stays importable without training's dependencies; not per request: `from training import`
    through its lazy exports was ~2% of the gateway's CPU per request)."""
    from training import class_labels, predicted_class, predicted_values

    return class_labels, predicted_class, predicted_values


#: a categorical column's values → the OIP datatype that carries them
CATEGORY_DATATYPES = {"string": "BYTES", "bool": "BOOL", "integer": "INT64"}


@dataclass(frozen=True)
class ModelSignature:
    """What a served model takes and gives: feature names in order, each one's kind (empty: every
    column numeric), what a categorical column's values are (string, bool, integer) and the values
    it knows, whether the model imputes a gap, its task, and a classifier's classes (the label's
    values as the user had them, in class-index order; none for regression)."""

    name: str
    features: tuple[str, ...]
    classes: tuple
    kinds: tuple[str, ...] = ()
    value_types: tuple = ()          # per feature: None (numeric) or the categorical values' type
    imputes: bool = False            # a missing value (null) is the model's to fill, not an error
    categories: tuple = ()           # per feature: () or the categories it knows (metadata only)
    task: str = "classification"

    @classmethod
    def of(cls, name: str, features, classes, preparation: dict | None = None,
           task: str = "classification") -> ModelSignature:
        """The signature of a version whose replica reported `preparation` (training.columns's JSON;
        None: a version registered before, complete numeric columns) and `task`."""
        if not preparation:
            return cls(name, tuple(features), tuple(classes), task=task)
        columns = preparation["columns"]
        return cls(name, tuple(c["name"] for c in columns), tuple(classes), tuple(c["kind"] for c in columns),
                   tuple(c.get("values") for c in columns), not preparation.get("refuse_missing", False),
                   tuple(tuple(c.get("vocabulary", ())) for c in columns), task)

    @classmethod
    def of_info(cls, name: str, info: dict) -> ModelSignature:
        """The signature a version's replica reports (`ModelVersion.signature`)."""
        return cls.of(name, info["features"], info["classes"], info.get("preparation"),
                      info.get("task", "classification"))

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The OIP outputs this model gives, in order."""
        return REGRESSION_OUTPUTS if self.regression else OUTPUTS

    def read(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(prediction, label) of a version's outputs: the most probable class's index and name, or
        the predicted value (float64) and no label."""
        class_labels, predicted_class, predicted_values = _answer_readers()
        if self.regression:
            return predicted_values(outputs), None
        prediction = predicted_class(outputs)
        return prediction, class_labels(self.classes, prediction)

    @property
    def all_numeric(self) -> bool:
        return all(k == "numeric" for k in self.kinds)

    @property
    def inputs(self) -> tuple:
        """What a request must send, for comparing versions behind one endpoint: names, kinds, value types."""
        return tuple(zip(self.features, self.kinds or ("numeric",) * len(self.features),
                         self.value_types or (None,) * len(self.features)))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label_datatype(self) -> str:
        """The OIP datatype of the `label` output: BYTES for strings, BOOL, or INT64 for ids."""
        first = self.classes[0]
        return "BOOL" if isinstance(first, bool) else "BYTES" if isinstance(first, str) else "INT64"

    def metadata(self, versions: list[int]) -> dict:
        """OIP v2 model metadata: for numeric columns one FP32 [-1, n] input (or one tensor per
        feature); for a model with categorical columns one tensor per column, named after it, with
        its datatype and, for a category, the values it knows; the task (`parameters.task`); a
        classifier's three outputs and class names (`parameters.classes`, in the order of the
        probability columns), a regression model's one output `prediction` (FP32 [-1, 1])."""
        per_column = [{"name": f, "datatype": "FP32" if kind == "numeric" else CATEGORY_DATATYPES[values],
                       "shape": [-1], "parameters": {"kind": kind, "missing": "imputed" if self.imputes else "refused",
                                                     **({"categories": list(known)} if kind != "numeric" else {})}}
                      for f, kind, values, known in zip(self.features, self.kinds or ("numeric",) * len(self.features),
                                                        self.value_types or (None,) * len(self.features),
                                                        self.categories or ((),) * len(self.features))]
        if self.regression:
            outputs = [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}]
            parameters = {"task": self.task}
        else:
            outputs = [{"name": "prediction", "datatype": "INT64", "shape": [-1]},
                       {"name": "probability", "datatype": "FP32", "shape": [-1, self.num_classes],
                        "parameters": {"classes": list(self.classes)}},
                       {"name": "label", "datatype": self.label_datatype, "shape": [-1]}]
            parameters = {"task": self.task, "classes": list(self.classes)}
        out = {"name": self.name, "versions": [str(v) for v in versions], "platform": "handoff-torch",
               "outputs": outputs, "parameters": parameters}
        if not self.all_numeric:
            return {**out, "inputs": per_column}
        return {**out, "inputs": [{"name": MATRIX_INPUT, "datatype": "FP32", "shape": [-1, len(self.features)],
                                   "parameters": {"columns": list(self.features)}}],
                "parameters": {**parameters,
                               "per_feature_inputs": [{k: v for k, v in c.items() if k != "parameters"}
                                                      for c in per_column]}}


#: the largest magnitude a float32 holds: a model's input is float32, so a larger number would reach it as infinity
FP32_MAX = float(np.finfo(np.float32).max)
#: the values an integer datatype holds (a JSON number outside them is not a value of that type)
INTEGER_RANGES = {d: (int(np.iinfo(d.lower()).min), int(np.iinfo(d.lower()).max))
                  for d in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")}


def _finite_matrix(values, where: str, sig: ModelSignature | None = None) -> np.ndarray:
    """The batch as float32, checking the shape is [rows, features] with at least one row and every
    value finite in float32 (a number beyond FP32's range would reach the model as infinity); a gap
    (null: NaN) only where the model imputes it (`sig.imputes`)."""
    if values.ndim != 2:
        raise BadRequest(f"{where}: expected a 2-D batch, got {values.ndim} dimension(s)")
    if values.shape[0] == 0:
        raise BadRequest(f"{where}: the batch is empty; send at least one row")
    imputes = sig is not None and sig.imputes
    # before the cast (which would warn of the overflow): a gap (NaN) fails `<=`, so it is bad unless imputed
    bad = np.abs(values) > FP32_MAX if imputes else ~(np.abs(values) <= FP32_MAX)
    if bad.any():
        rows, cols = np.nonzero(bad)
        first = float(values[rows[0], cols[0]])
        what = f"beyond FP32's range (±{FP32_MAX:.4g})" if np.isfinite(first) else \
            "infinite" if imputes else "NaN or infinite"
        raise BadRequest(f"{where}: {int(bad.sum())} value(s) are {'' if imputes else 'NaN, '}infinite or beyond FP32's "
                         f"range; the first, at row {int(rows[0])}, column {int(cols[0])}, is {what}", status=422)
    return values.astype(np.float32, copy=False)


def _first_not_number(data) -> tuple | None:
    """(the first boolean or text value,) in nested lists, else None: NumPy reads `true` as 1 and
    "3" as 3.0, which would answer a request the client got wrong."""
    for v in data:
        cls = v.__class__
        if cls is list:
            found = _first_not_number(v)
            if found is not None:
                return found
        elif cls is bool or cls is str:
            return (v,)
    return None


def _as_numbers(data, where: str, datatype: str | None = None) -> np.ndarray:
    """A tensor's values as float64 (null: NaN), refusing text, booleans, nested lists of different
    lengths, a number too large for a float, and for an integer datatype a fraction or a value out
    of its range. Values decoded from bytes (the binary extension, gRPC) are already of their type."""
    if isinstance(data, np.ndarray):
        return data.astype(np.float64, copy=False)
    if isinstance(data, (str, bool, bytes)):  # one value for a one-row tensor: the same rule as in a list
        data = [data]
    if isinstance(data, list):
        wrong = _first_not_number(data)
        if wrong is not None:
            what = "text" if isinstance(wrong[0], str) else "a boolean"
            raise BadRequest(f"{where}: data must be numbers; got {what}, {str(wrong[0])[:40]!r}"
                             f"{' (send numbers, not strings)' if isinstance(wrong[0], str) else ''}", status=422)
    try:
        arr = np.asarray(data, dtype=np.float64)
    except OverflowError:
        raise BadRequest(f"{where}: a value is too large to be a number (over 1.8e308)", status=422) from None
    except (TypeError, ValueError):
        raise BadRequest(f"{where}: data must be a list of numbers (nested lists of equal lengths)") from None
    if datatype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[datatype]
        given = arr[~np.isnan(arr)]
        if given.size and ((given != np.trunc(given)).any() or given.min() < low or given.max() > high):
            bad = given[(given != np.trunc(given)) | (given < low) | (given > high)][0]
            raise BadRequest(f"{where}: {bad:g} is not a value of {datatype} (whole numbers from {low} to {high}); "
                             f"send FP32 or FP64 for fractions", status=422)
    return arr


def _shown(value) -> str:
    """A refused id or key as a message shows it: at most 40 characters."""
    return repr(value[:40]) + ("…" if len(value) > 40 else "") if isinstance(value, str) else repr(value)[:40]


#: a routing key: a header value of bounded size like a request id, `#` allowed (it names no row)
_ROUTING_KEY = re.compile(rf"^[!-~]{{1,{MAX_ID_CHARS}}}$")


def check_routing_key(value, where: str) -> str | None:
    """`value` if it is a usable routing key (1 to 256 visible ASCII characters), None when absent;
    else a 400 naming the rule."""
    if value is None:
        return None
    if not isinstance(value, str) or not _ROUTING_KEY.fullmatch(value):
        shown = _shown(value)
        raise BadRequest(f"{where} {shown} is not a routing key: use 1 to {MAX_ID_CHARS} visible ASCII characters "
                         "(letters, digits, punctuation; no spaces)")
    return value


def check_request_id(value, where: str, row: bool = False) -> str | None:
    """`value` if it is a usable request id (`row`: or a row's, `ID#k`), None when absent; else a
    400 naming the rule."""
    if value is None:
        return None
    if not isinstance(value, str) or not (_ROW_ID if row else _REQUEST_ID).fullmatch(value):
        shown = _shown(value)
        raise BadRequest(f"{where} {shown} is not a request id: use 1 to {MAX_ID_CHARS} visible ASCII characters "
                         "(letters, digits, punctuation but #; no spaces)" +
                         (", then #K (K = 1, 2, ...) for a row after the first" if row else ""))
    return value


def _check_datatype(tensor: dict, where: str) -> None:
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMERIC_DATATYPES:
        raise BadRequest(f"{where}: datatype {datatype!r} is not supported; use FP32 "
                         f"(numeric types accepted: {', '.join(sorted(NUMERIC_DATATYPES))})")


def _shape(tensor: dict, where: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}"[:300])
    return shape


def parse_infer(body, sig: ModelSignature) -> tuple[np.ndarray | dict, str | None]:
    """An OIP v2 infer request → (the rows, request id or None): for a model of numeric columns a
    float32 matrix in feature order (NaN for a gap the model imputes), for one with categorical
    columns each column's raw values (serving/columns_in.py)."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with an 'inputs' list")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    if "id" in body and not isinstance(body["id"], str):  # `"id": null` is not an id left out
        raise BadRequest(f"'id' must be a string, not {type(body['id']).__name__}")
    request_id = check_request_id(body.get("id"), "'id'")
    if not sig.all_numeric:
        from serving.columns_in import parse_infer_columns

        return parse_infer_columns(inputs, sig), request_id
    if len(inputs) == 1 and isinstance(inputs[0], dict) and inputs[0].get("name") not in sig.features:
        return _matrix_tensor(inputs[0], sig), request_id
    return _per_feature_tensors(inputs, sig), request_id


def _matrix_tensor(tensor: dict, sig: ModelSignature) -> np.ndarray:
    where = f"input {tensor.get('name')!r}"
    _check_datatype(tensor, where)
    shape = _shape(tensor, where)
    if len(shape) != 2 or shape[1] != len(sig.features):
        raise BadRequest(f"{where}: shape {shape} does not match [rows, {len(sig.features)}] "
                         f"(features in order: {', '.join(sig.features)})")
    data = _as_numbers(tensor.get("data"), where, tensor["datatype"])
    if data.size != shape[0] * shape[1]:
        raise BadRequest(f"{where}: shape {shape} needs {shape[0] * shape[1]} values, data has {data.size}")
    return _finite_matrix(data.reshape(shape), where, sig)


def tensors_by_name(inputs: list, hint: str = "") -> dict[str, dict]:
    """The OIP input tensors by name; a tensor without a name, or a name given twice, is a 400."""
    by_name: dict[str, dict] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise BadRequest(f"input #{i}: each tensor needs a 'name'{hint}")
        if tensor["name"] in by_name:
            raise BadRequest(f"input {tensor['name']!r} is given twice")
        by_name[tensor["name"]] = tensor
    return by_name


def _per_feature_tensors(inputs: list, sig: ModelSignature) -> np.ndarray:
    by_name = tensors_by_name(inputs)
    _check_columns(list(by_name), sig, "inputs")
    columns = []
    for f in sig.features:
        where = f"input {f!r}"
        _check_datatype(by_name[f], where)
        shape = _shape(by_name[f], where)
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"{where}: shape {shape} must be [rows] or [rows, 1]")
        data = _as_numbers(by_name[f].get("data"), where, by_name[f]["datatype"]).reshape(-1)
        if data.size != shape[0]:
            raise BadRequest(f"{where}: shape {shape} needs {shape[0]} values, data has {data.size}")
        columns.append(data)
    if len({c.size for c in columns}) > 1:
        raise BadRequest("inputs: every feature tensor must have the same number of rows")
    return _finite_matrix(np.stack(columns, axis=1), "inputs", sig)


def check_unique(columns: list, where: str) -> None:
    """A 400 for a column named twice (which of its values the model would take is a guess)."""
    if len(set(map(str, columns))) != len(columns):
        seen: set = set()
        twice = next(c for c in columns if str(c) in seen or seen.add(str(c)))
        raise BadRequest(f"{where}: column {str(twice)[:60]!r} is named more than once in 'columns'")


def _check_columns(names: list[str], sig: ModelSignature, where: str) -> None:
    missing = [f for f in sig.features if f not in names]
    extra = [n for n in names if n not in sig.features]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing feature(s) {missing}")
        if extra:
            parts.append(f"unknown feature(s) {extra}")
        raise BadRequest(f"{where}: {' and '.join(parts)}; expected {list(sig.features)}", status=422)


def _records(rows, sig: ModelSignature, where: str) -> np.ndarray:
    if not isinstance(rows, list):
        raise BadRequest(f"{where}: expected a list of rows")
    if not rows:
        raise BadRequest(f"{where}: the batch is empty; send at least one row")
    if all(isinstance(r, dict) for r in rows):
        for i, r in enumerate(rows):
            _check_columns(list(r), sig, f"{where}[{i}]")
        return _finite_matrix(_as_numbers([[r[f] for f in sig.features] for r in rows], where), where, sig)
    matrix = _as_numbers(rows, where)
    if matrix.ndim != 2 or matrix.shape[1] != len(sig.features):
        raise BadRequest(f"{where}: each row must have {len(sig.features)} values in the order "
                         f"{list(sig.features)}")
    return _finite_matrix(matrix, where, sig)


def parse_invocations(body, sig: ModelSignature) -> np.ndarray | dict:
    """An MLflow scoring payload (`dataframe_split`, `dataframe_records`, `instances`, `inputs`): a
    matrix for a model of numeric columns, each column's raw values for one with categorical columns."""
    if not sig.all_numeric:
        from serving.columns_in import parse_invocations_columns

        return parse_invocations_columns(body, sig)
    formats = ("dataframe_split", "dataframe_records", "instances", "inputs")
    if not isinstance(body, dict) or sum(k in body for k in formats) != 1:
        raise BadRequest(f"the body must be a JSON object with exactly one of {', '.join(formats)}")
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
            raise BadRequest("dataframe_split: needs 'columns' (list) and 'data' (list of rows)")
        columns, data = split["columns"], split.get("data")
        check_unique(columns, "dataframe_split")
        _check_columns(columns, sig, "dataframe_split")
        matrix = _as_numbers(data, "dataframe_split")
        if matrix.ndim != 2 or matrix.shape[1] != len(columns):
            if matrix.size == 0:
                raise BadRequest("dataframe_split: the batch is empty; send at least one row")
            raise BadRequest(f"dataframe_split: each row must have {len(columns)} values (one per column)")
        order = [columns.index(f) for f in sig.features]
        return _finite_matrix(matrix[:, order], "dataframe_split", sig)
    if "dataframe_records" in body:
        return _records(body["dataframe_records"], sig, "dataframe_records")
    key = "instances" if "instances" in body else "inputs"
    value = body[key]
    if isinstance(value, dict):  # columnar: {feature: [values...]}
        _check_columns(list(value), sig, key)
        columns = [_as_numbers(value[f], f"{key}[{f!r}]").reshape(-1) for f in sig.features]
        if len({c.size for c in columns}) > 1:
            raise BadRequest(f"{key}: every feature must have the same number of values")
        return _finite_matrix(np.stack(columns, axis=1), key, sig)
    return _records(value, sig, key)


def requested_outputs(body: dict, available: tuple[str, ...] = ("prediction", "probability", "label")
                      ) -> list[tuple[str, bool]]:
    """(output name, as binary?) for each output the request wants: the ones it names in `outputs`
    (each one of `available`, the model's), else all; binary where `outputs[i].parameters.binary_data`
    or `parameters.binary_data_output` say so."""
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    default_binary = bool(params.get("binary_data_output", False))
    asked = body.get("outputs")
    if asked is None:
        return [(name, default_binary) for name in available]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    chosen: list[tuple[str, bool]] = []
    for o in asked:
        if not isinstance(o.get("name"), str) or o.get("name") not in available:
            raise BadRequest(f"output {o.get('name')!r} is not one of this model's outputs {list(available)}")
        if any(o["name"] == name for name, _ in chosen):
            raise BadRequest(f"output {o['name']!r} is asked for twice")
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"output {o['name']!r}: 'parameters' must be an object")
        refuse_classification(o["name"], params)
        chosen.append((o["name"], bool(params.get("binary_data", default_binary))))
    return chosen


def refuse_classification(output: str, params) -> None:
    """A 400 for Triton's classification extension (`class_count`: the top classes as "score:index:label"
    text), which this server does not implement: answering the whole tensor instead would hand the
    client something other than it asked for."""
    if "classification" in params:
        raise BadRequest(f"output {output!r}: the classification extension (class_count) is not supported; ask for "
                         "'probability' (every class's probability, in the order of parameters.classes) and 'label'")


def infer_response(model: str, version: int, request_id: str, sig: ModelSignature, proba: np.ndarray,
                   prediction: np.ndarray, label: np.ndarray | None,
                   outputs: list[tuple[str, bool]] | None = None) -> tuple[dict, list[bytes]]:
    """The OIP v2 answer (`prediction`: class index as the router took it; `probability`: rows ×
    classes; `label`: the class as the user named it; for regression `prediction` alone, the
    predicted values as FP32 [rows, 1]) with the outputs asked for, and the bytes of those asked
    for as binary, in order."""
    from serving.binary import encode_binary

    rows = [int(proba.shape[0])]
    if sig.regression:  # `proba` is the outputs: rows × 1 float32
        tensors = {"prediction": ("FP32", [rows[0], 1], proba)}
    else:
        tensors = {"prediction": ("INT64", rows, prediction),
                   "probability": ("FP32", list(map(int, proba.shape)), proba),
                   "label": (sig.label_datatype, rows, label)}
    entries, blobs = [], []
    for name, binary in outputs or [(name, False) for name in sig.outputs]:
        datatype, shape, values = tensors[name]
        entry = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            blob = encode_binary(values, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif name == "probability":
            entry["data"] = [round(float(p), 7) for p in values.reshape(-1)]
        elif datatype == "FP32":  # a float32's shortest decimal form, not its float64 expansion
            entry["data"] = [float(str(v)) for v in values.reshape(-1)]
        else:
            entry["data"] = values.tolist()
        entries.append(entry)
    return {"model_name": model, "model_version": str(version), "id": request_id, "outputs": entries}, blobs


def invocations_response(sig: ModelSignature, proba: np.ndarray, prediction: np.ndarray,
                         label: np.ndarray | None) -> dict:
    """MLflow's scoring answer, as MLflow's own server gives the registered pyfunc model's: one
    record per row (`prediction`, `label` and one probability column per class, named by
    `training.probability_columns`); for regression the predicted values as numbers."""
    from training import probability_columns

    if sig.regression:
        return {"predictions": [float(str(v)) for v in proba[:, 0]]}
    columns = probability_columns(sig.classes)
    return {"predictions": [{"prediction": int(c), "label": name, **{col: float(p) for col, p in zip(columns, row)}}
                            for c, name, row in zip(prediction.tolist(), label.tolist(), proba)]}
