"""The version replica's direct endpoint: PREDICT frames over TCP, answered on the replica's own thread.

Each `ModelVersion` replica starts one and lists it in the endpoint directory
(serving/endpoints.py); the gateway reads address and secret there and then sends requests here
without a Serve handle call per request (one Ray actor task each: most of the gateway's CPU per request, see docs/benchmarks.md's
serving benchmark). Per-version sizing is unchanged: the replicas are still the version's Serve
deployment, with its replica count, CPUs, GPUs and autoscaling.

Shutdown is graceful: GOAWAY to every client (they send nothing new and fall back to the Serve
handle), answers to what already arrived, then the connections close.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable

import numpy as np

from serving.event_loop import new_event_loop
from serving.wire import ERROR, GOAWAY, HELLO, PREDICT, READY, RESULT, FrameReader, WireError, encode, \
    encode_matrix

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000
SECRET_BYTES = 16
LOAD_FRESH_S = 1.0  # a client that sent nothing for this long has nothing in flight here


#: the one frame a connection may send before it has authenticated: HELLO with the 16-byte secret
HELLO_HEAD = encode(HELLO, 0, bytes(SECRET_BYTES))
HELLO_BYTES = len(HELLO_HEAD)
HANDSHAKE_TIMEOUT_S = 1.0  # a connection that has not authenticated by then is closed


class _Connection(asyncio.Protocol):
    """One client. Until it has sent HELLO with the replica's secret it may send nothing else and
    nothing more: its first `HELLO_BYTES` bytes are all that is buffered (a frame header announcing
    256 MiB is refused on its first bytes, not read), and it has `HANDSHAKE_TIMEOUT_S` to send them."""

    def __init__(self, server: ReplicaServer):
        self.server, self.reader, self.authed = server, FrameReader(), False
        self.hello = bytearray()
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.load, self.load_at = 0, 0.0  # the client's requests in flight here, as its last PREDICT said

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        self.deadline = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT_S, self._too_slow)

    def _too_slow(self) -> None:
        if not self.authed:
            log.warning("closing a connection that did not authenticate within %.1f s", HANDSHAKE_TIMEOUT_S)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()

    def _refuse(self, why: str) -> None:
        log.warning("closing a connection: %s", why)
        self.transport.close()

    def _authenticate(self, data: bytes) -> bytes | None:
        """Take the HELLO from the first bytes; what follows it (None: closed, or HELLO not complete yet)."""
        self.hello += data
        if len(self.hello) >= 4 and self.hello[:4] != HELLO_HEAD[:4]:  # announces another frame, or another size
            self._refuse("its first frame is not a HELLO")
            return None
        if len(self.hello) < HELLO_BYTES:
            return None
        hello, rest = bytes(self.hello[:HELLO_BYTES]), bytes(self.hello[HELLO_BYTES:])
        self.hello = bytearray()
        if hello[4] != HELLO or not hmac.compare_digest(hello[-SECRET_BYTES:], self.server.secret):
            self._refuse("without the replica's secret")
            return None
        self.authed = True
        self.deadline.cancel()
        self.transport.write(encode(READY, 0))
        return rest

    def data_received(self, data: bytes) -> None:
        if not self.authed:
            data = self._authenticate(data)
            if not data:
                return
        try:
            frames = self.reader.feed(data)
        except WireError as exc:
            self._refuse(f"a bad frame: {exc}")
            return
        asked = [frame for frame in frames if frame.kind == PREDICT]
        if asked:  # the answers to one read go out in one write (one send, where a frame each cost one)
            self.load, self.load_at = asked[-1].load(), time.monotonic()
            answers = [self.server.answer(frame) for frame in asked]
            self.transport.write(b"".join(answers) if len(answers) > 1 else answers[0])

    def goaway(self) -> None:
        if self.authed and not self.transport.is_closing():
            self.transport.write(encode(GOAWAY, 0))


class ReplicaServer:
    """Answers PREDICT frames with `predict` (float32 matrix → class probabilities)."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], host: str):
        self.predict, self.host = predict, host
        self.secret = secrets.token_bytes(SECRET_BYTES)
        self.replica_id = secrets.token_hex(6)
        self.connections: set[_Connection] = set()
        self.requests = 0
        self._loop = new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None

        self._thread = threading.Thread(target=self._run, name="handoff-replica-endpoint", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._server is None:
            raise RuntimeError(f"the replica endpoint did not start on {host}")
        self.port = self._server.sockets[0].getsockname()[1]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                self._loop.create_server(lambda: _Connection(self), self.host, 0, backlog=1024))
        finally:
            self._ready.set()
        self._loop.run_forever()

    def answer(self, frame) -> bytes:
        """One PREDICT frame → its RESULT frame, or an ERROR frame naming the failure."""
        self.requests += 1
        try:
            return encode_matrix(RESULT, frame.request_id, np.asarray(self.predict(frame.matrix())))
        except Exception as exc:  # noqa: BLE001 - the caller gets the failure, the replica goes on
            message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return encode(ERROR, frame.request_id, message.encode())

    def endpoint(self) -> dict:
        """What a client needs: address, secret and an id (only ever sent over Ray's channels)."""
        return {"host": self.host, "port": self.port, "secret": self.secret.hex(), "replica": self.replica_id}

    def load(self) -> int:
        """Requests the connected clients have in flight here (what autoscaling scales on)."""
        recent = time.monotonic() - LOAD_FRESH_S
        return sum(c.load for c in list(self.connections) if c.load_at > recent)

    def close(self, timeout: float = 10) -> None:
        """GOAWAY, answer what already arrived, close. Safe to call twice."""
        if not self._loop.is_running():
            return

        async def shut() -> None:
            self._server.close()
            for connection in list(self.connections):
                connection.goaway()
            deadline = time.monotonic() + timeout
            # answers are written inline, so what remains is the clients closing after GOAWAY
            while self.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for connection in list(self.connections):
                connection.transport.close()

        try:
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
