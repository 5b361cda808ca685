"""OIP v2 gRPC messages ↔ what the HTTP path parses and answers (pure).

A `ModelInferRequest` becomes the JSON-shaped body `serving.protocol.parse_infer` takes (each input's
values from its `raw_input_contents` entry, as the binary extension's bytes, or from the typed
`contents` field of its datatype), so both fronts refuse and accept alike; the answer's outputs go
back as raw bytes, as Triton sends them. Every refusal is a `BadRequest` naming the input at fault;
`status_code` says which gRPC status carries it.
"""

from __future__ import annotations

import json
import math
import re

import grpc
import numpy as np

from serving.binary import DTYPES, decode_bytes  # the binary extension's layouts, one reader each
from serving.oip_grpc_proto import MESSAGES
from serving.protocol import BadRequest, refuse_classification

_Code = grpc.StatusCode
#: a refusal's HTTP status → the gRPC status that carries it
STATUS_CODES = {400: _Code.INVALID_ARGUMENT, 401: _Code.UNAUTHENTICATED, 404: _Code.NOT_FOUND,
                405: _Code.UNIMPLEMENTED, 413: _Code.RESOURCE_EXHAUSTED, 422: _Code.INVALID_ARGUMENT,
                429: _Code.RESOURCE_EXHAUSTED, 503: _Code.UNAVAILABLE, 504: _Code.DEADLINE_EXCEEDED}
#: a datatype → the `InferTensorContents` field that carries it (FP16 has none: raw only)
CONTENTS_FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                   "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                   "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                   "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_VERSION = re.compile(r"[0-9]{1,18}")  # as the HTTP route: ASCII digits only
_InferResponse = MESSAGES["ModelInferResponse"]
_Output = _InferResponse.InferOutputTensor
_Metadata = MESSAGES["ModelMetadataResponse"]
_Parameter = MESSAGES["InferParameter"]


def status_code(status: int) -> grpc.StatusCode:
    """The gRPC status of a refusal with this HTTP status (another 4xx: INVALID_ARGUMENT; 5xx: UNAVAILABLE)."""
    return STATUS_CODES.get(status, _Code.INVALID_ARGUMENT if status < 500 else _Code.UNAVAILABLE)


def parse_version(text: str, where: str) -> int | None:
    """None for an empty version (the traffic policy chooses), else the version number (400 if it is not one)."""
    if not text:
        return None
    if not _VERSION.fullmatch(text):
        raise BadRequest(f"{where} {text[:40]!r} is not a version number")
    return int(text)


def request_body(request) -> dict:
    """The infer request as the HTTP path's JSON body (`id`, `inputs` with their values, `outputs`):
    refuses raw and typed contents together, a raw entry count other than the inputs', and values
    whose size or field does not match the input's shape and datatype."""
    raw, inputs = request.raw_input_contents, request.inputs
    if raw and len(raw) != len(inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(inputs)} input(s); send one per input")
    tensors = []
    for i, tensor in enumerate(inputs):
        where, datatype = f"input {tensor.name[:100]!r}", tensor.datatype
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape {shape} must be non-negative integers"[:300])
        count = math.prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise BadRequest(f"{where}: has both contents and raw_input_contents; send one of them")
            data = _raw_values(raw[i], datatype, shape, count, where)
        else:
            data = _typed_values(tensor.contents, datatype, shape, count, where)
        tensors.append({"name": tensor.name, "datatype": datatype, "shape": shape, "data": data})
    body: dict = {"inputs": tensors}
    if request.id:
        body["id"] = request.id
    for output in request.outputs:
        refuse_classification(output.name[:100], output.parameters)
    if request.outputs:
        body["outputs"] = [{"name": o.name} for o in request.outputs]
    return body


def _raw_values(blob: bytes, datatype: str, shape: list[int], count: int, where: str):
    """An input's values from its raw bytes: a NumPy view, BYTES elements as text, BOOL one byte each."""
    if datatype == "BYTES":
        return decode_bytes(blob, count, where)
    dtype = np.bool_ if datatype == "BOOL" else DTYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"{where}: datatype {datatype[:20]!r} is not supported "
                         f"(types: {', '.join((*DTYPES, 'BYTES', 'BOOL'))})")
    expected = count * np.dtype(dtype).itemsize
    if len(blob) != expected:
        raise BadRequest(f"{where}: raw_input_contents holds {len(blob)} byte(s); shape {shape} of {datatype} "
                         f"needs {expected}")
    return np.frombuffer(blob, dtype)


def _typed_values(contents, datatype: str, shape: list[int], count: int, where: str):
    """An input's values from the `contents` field of its datatype, refusing another field, a count
    other than the shape's, an integer outside its datatype's range and BYTES that are not UTF-8."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise BadRequest(f"{where}: datatype {datatype[:20]!r} has no contents field "
                         f"({'send it in raw_input_contents' if datatype == 'FP16' else 'not an OIP datatype'})")
    wrong = [f.name for f, _ in contents.ListFields() if f.name != field]
    if wrong:
        raise BadRequest(f"{where}: {datatype} values go in contents.{field}, not contents.{wrong[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise BadRequest(f"{where}: shape {shape} needs {count} value(s), contents.{field} has {len(values)}")
    if datatype == "BYTES":
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: an element of contents.bytes_contents is not UTF-8 text") from None
    if datatype == "BOOL":
        return list(values)
    wide = np.array(values, dtype=DTYPES["INT32" if field == "int_contents" else "UINT32" if field == "uint_contents"
                                          else datatype])
    if wide.dtype != np.dtype(DTYPES[datatype]):  # INT8 in int_contents: each value must fit
        narrow = wide.astype(DTYPES[datatype])
        if not np.array_equal(narrow, wide):
            raise BadRequest(f"{where}: a value of contents.{field} is outside the range of {datatype}")
        return narrow
    return wide


def infer_message(payload: dict, blobs: list[bytes]):
    """The `ModelInferResponse` of an answer built by `serving.protocol.infer_response` with every
    output as bytes: each output's name, datatype and shape, its bytes in `raw_output_contents`."""
    return _InferResponse(model_name=payload["model_name"], model_version=payload["model_version"], id=payload["id"],
                          outputs=[_Output(name=o["name"], datatype=o["datatype"], shape=o["shape"])
                                   for o in payload["outputs"]],
                          raw_output_contents=blobs)


def metadata_message(metadata: dict):
    """The `ModelMetadataResponse` of the HTTP metadata route's dict (`ModelSignature.metadata`):
    shapes as given (-1 kept), parameters as scalars (a list or an object as its JSON text)."""
    def tensor(t: dict):
        return _Metadata.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"],
                                        parameters=parameters(t.get("parameters", {})))

    return _Metadata(name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"],
                     inputs=[tensor(t) for t in metadata["inputs"]], outputs=[tensor(t) for t in metadata["outputs"]],
                     parameters=parameters(metadata.get("parameters", {})))


def parameters(values: dict) -> dict:
    """`InferParameter`s of plain values: bool, int64, double or string; anything else as JSON text."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = _Parameter(bool_param=value)
        elif isinstance(value, int) and -2**63 <= value < 2**63:
            out[key] = _Parameter(int64_param=value)
        elif isinstance(value, float):
            out[key] = _Parameter(double_param=value)
        elif isinstance(value, str):
            out[key] = _Parameter(string_param=value)
        else:
            out[key] = _Parameter(string_param=json.dumps(value, separators=(",", ":")))
    return out
