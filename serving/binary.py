"""The OIP v2 binary tensor data extension (as Triton and KServe implement it), pure.

A request may carry tensors as raw little-endian bytes after its JSON: the header
`Inference-Header-Content-Length` gives the JSON's length, and each binary input says its byte
count in `parameters.binary_data_size` (blobs follow in the order of those inputs). An answer
gives an output as bytes when asked (`parameters.binary_data_output` for all outputs, or
`outputs[i].parameters.binary_data` for one): the JSON then names each binary output's size and
the bytes follow it. `tritonclient.http` sends binary inputs and asks for binary outputs by default.
"""

from __future__ import annotations

import math
import re

import numpy as np

from serving.protocol import BadRequest

HEADER_LENGTH = "inference-header-content-length"  # lower case: headers are matched that way

#: OIP v2 numeric datatypes and their little-endian NumPy types
DTYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
          "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(the JSON part, the binary tensor data after it); all JSON without the header."""
    if header_length is None:
        return raw, b""
    if not re.fullmatch(r"[0-9]{1,12}", header_length.strip()) or not 0 < int(header_length) <= len(raw):
        raise BadRequest(f"Inference-Header-Content-Length {header_length!r} must be the JSON part's length in "
                         f"bytes, between 1 and the body's {len(raw)}")
    n = int(header_length)
    return raw[:n], raw[n:]


def attach_binary_inputs(body, tail: bytes) -> None:
    """Give every input sent as binary its values (a NumPy view of its bytes; BYTES elements decoded
    as UTF-8 text, BOOL as one byte each), in order; refuse sizes that do not match the shape and
    datatype, and bytes that belong to no input."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    offset = 0
    for tensor in inputs if isinstance(inputs, list) else []:
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            continue
        where = f"input {tensor.get('name')!r}"
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if not isinstance(datatype, str) or datatype not in (*DTYPES, "BYTES", "BOOL"):
            raise BadRequest(f"{where}: binary data of datatype {datatype!r} is not supported "
                             f"(types: {', '.join((*DTYPES, 'BYTES', 'BOOL'))})")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise BadRequest(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
        count = math.prod(shape)
        if type(size) is not int or size < 0 or offset + size > len(tail):
            raise BadRequest(f"{where}: the body holds {len(tail) - offset} byte(s) of binary data for it, "
                             f"{size!r} declared")
        if datatype == "BYTES":
            tensor["data"] = decode_bytes(tail[offset:offset + size], count, where)
        else:
            expected = count * (1 if datatype == "BOOL" else np.dtype(DTYPES[datatype]).itemsize)
            if size != expected:
                raise BadRequest(f"{where}: binary_data_size {size!r} does not match shape {shape} of {datatype} "
                                 f"({expected} bytes)")
            tensor["data"] = (np.frombuffer(tail, np.bool_, count=count, offset=offset).tolist()
                              if datatype == "BOOL" else np.frombuffer(tail, DTYPES[datatype], count=count, offset=offset))
        offset += size
    if offset != len(tail):
        raise BadRequest(f"{len(tail) - offset} byte(s) of binary data after the JSON belong to no input "
                         "(each binary input needs parameters.binary_data_size)")


def decode_bytes(blob: bytes, count: int, where: str) -> list[str]:
    """BYTES elements as the extension sends them: each a 4-byte little-endian length, then its bytes
    (text, UTF-8)."""
    values, at = [], 0
    for _ in range(count):
        if at + 4 > len(blob):
            raise BadRequest(f"{where}: binary BYTES data ends after {len(values)} of {count} element(s)")
        n = int.from_bytes(blob[at:at + 4], "little")
        if at + 4 + n > len(blob):
            raise BadRequest(f"{where}: element {len(values)} declares {n} byte(s), {len(blob) - at - 4} remain")
        try:
            values.append(blob[at + 4:at + 4 + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: element {len(values)} is not UTF-8 text") from None
        at += 4 + n
    if at != len(blob):
        raise BadRequest(f"{where}: {len(blob) - at} byte(s) after its {count} BYTES element(s)")
    return values


def encode_binary(values: np.ndarray, datatype: str) -> bytes:
    """An output's values as the extension sends them: little-endian, row-major; BOOL one byte each;
    BYTES each element as a 4-byte little-endian length and its UTF-8 bytes (as Triton does)."""
    if datatype == "BYTES":
        parts = [str(v).encode() for v in values.reshape(-1).tolist()]
        return b"".join(len(p).to_bytes(4, "little") + p for p in parts)
    if datatype == "BOOL":
        return np.ascontiguousarray(values, dtype=np.bool_).tobytes()
    return np.ascontiguousarray(values, dtype=DTYPES[datatype]).tobytes()
