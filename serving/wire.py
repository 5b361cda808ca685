"""The gateway ↔ version-replica wire format (pure: bytes in, frames out; no Ray, no sockets).

One TCP connection carries many requests at once; each frame is

    u32 length of what follows | u8 kind | u32 request id | payload

HELLO    client → replica: the replica's secret (handed out through the authenticated Serve handle)
READY    replica → client: the secret was right
PREDICT  client → replica: u32 rows, u32 cols, u32 load, rows×cols little-endian float32
         (load: the client's requests in flight to this replica, what autoscaling reads)
RESULT   replica → client: the same layout (class probabilities; load 0)
ERROR    replica → client: a UTF-8 message (the model failed on this request)
GOAWAY   replica → client: this replica is shutting down; send nothing new, in-flight answers follow

Why by hand: the alternatives at hand (Serve handles, HTTP between processes, gRPC) each cost more
CPU per request than the forward pass; this is a length-prefixed frame and a NumPy buffer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

HELLO, READY, PREDICT, RESULT, ERROR, GOAWAY = 1, 2, 3, 4, 5, 6
KINDS = {HELLO, READY, PREDICT, RESULT, ERROR, GOAWAY}
_HEAD = struct.Struct("<IBI")   # length, kind, request id
_SHAPE = struct.Struct("<III")  # rows, cols, load
MAX_FRAME_BYTES = 256 * 1024 * 1024


class WireError(ValueError):
    """A frame that is not what the protocol allows (the connection is closed on it)."""


@dataclass(frozen=True)
class Frame:
    kind: int
    request_id: int
    payload: bytes | memoryview

    def matrix(self) -> np.ndarray:
        """A PREDICT or RESULT payload as a float32 matrix (a copy the caller owns)."""
        rows, cols, _ = self._shape()
        body = self.payload[_SHAPE.size:]
        if len(body) != rows * cols * 4:
            raise WireError(f"frame {self.request_id}: {rows}x{cols} float32 needs {rows * cols * 4} bytes, "
                            f"got {len(body)}")
        return np.frombuffer(body, dtype="<f4").reshape(rows, cols).astype(np.float32, copy=True)

    def load(self) -> int:
        """The sender's requests in flight to this replica when it sent this PREDICT."""
        return self._shape()[2]

    def _shape(self) -> tuple[int, int, int]:
        if len(self.payload) < _SHAPE.size:
            raise WireError(f"frame {self.request_id}: payload of {len(self.payload)} bytes has no shape")
        return _SHAPE.unpack_from(self.payload)

    def text(self) -> str:
        return bytes(self.payload).decode("utf-8", errors="replace")


def encode(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) + 5, kind, request_id) + payload


def encode_matrix(kind: int, request_id: int, x: np.ndarray, load: int = 0) -> bytes:
    """A PREDICT or RESULT frame for a 2-D array (sent as little-endian float32)."""
    if x.ndim != 2:
        raise WireError(f"a matrix frame needs a 2-D array, got shape {x.shape}")
    data = np.ascontiguousarray(x, dtype="<f4").tobytes()
    rows, cols = x.shape
    return _HEAD.pack(len(data) + 5 + _SHAPE.size, kind, request_id) + _SHAPE.pack(rows, cols, load) + data


class FrameReader:
    """Splits a byte stream into frames, whatever sizes it arrives in."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES):
        self._buffer = bytearray()
        self.max_frame_bytes = max_frame_bytes

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data` (WireError on a frame the protocol does not allow)."""
        buffer = self._buffer
        buffer += data
        frames, offset = [], 0
        while len(buffer) - offset >= _HEAD.size:
            length, kind, request_id = _HEAD.unpack_from(buffer, offset)
            if length < 5 or length > self.max_frame_bytes:
                raise WireError(f"frame length {length} is outside 5..{self.max_frame_bytes}")
            if kind not in KINDS:
                raise WireError(f"unknown frame kind {kind}")
            end = offset + 4 + length
            if len(buffer) < end:
                break
            frames.append(Frame(kind, request_id, bytes(buffer[offset + _HEAD.size:end])))
            offset = end
        if offset:
            del buffer[:offset]
        return frames
