"""The gateway's side of the direct path: one `ReplicaPool` per served version.

The pool learns the version's replicas (address and secret) from the endpoint directory
(serving/endpoints.py), keeps one connection per replica, and
sends each request to the replica with the fewest requests in flight. The Serve handle stays the
fallback: while no replica is connected yet, and for a request whose replica went away before it
answered (a prediction has no side effect, so sending it again is safe). Model failures are not
retried: they reach the caller as `ReplicaError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np

from serving.wire import ERROR, GOAWAY, HELLO, PREDICT, READY, RESULT, FrameReader, WireError, encode, \
    encode_matrix

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 5.0
DISCOVERY_TIMEOUT_S = 10.0


class ReplicaError(RuntimeError):
    """The version's model failed on this request (its message names why)."""


class ReplicaGone(ConnectionError):
    """The connection ended before the replica answered (the request may be sent elsewhere)."""


class _Expired(Exception):
    """A direct request's deadline passed (set on its answer by the request's timer)."""


def _expire(answer: asyncio.Future) -> None:
    if not answer.done():
        answer.set_exception(_Expired())


class _Connection(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[], None]):
        self.reader = FrameReader()
        self.pending: dict[int, asyncio.Future] = {}
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.open, self._next_id, self._on_lost = False, 0, on_lost
        self._outgoing: list[bytes] = []  # frames written at the end of this turn of the loop

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except WireError as exc:
            log.warning("replica sent a bad frame, closing: %s", exc)
            self.transport.close()
            return
        for frame in frames:
            if frame.kind == READY:
                self.open = True
                if not self.ready.done():
                    self.ready.set_result(True)
            elif frame.kind == GOAWAY:
                self._retire()
            elif frame.kind in (RESULT, ERROR):
                future = self.pending.pop(frame.request_id, None)
                if future is not None and not future.done():
                    if frame.kind == RESULT:
                        future.set_result(frame.matrix())
                    else:
                        future.set_exception(ReplicaError(frame.text()))
                if not self.open and not self.pending:
                    self.transport.close()

    def connection_lost(self, exc) -> None:
        self._retire()
        if not self.ready.done():
            self.ready.set_exception(ReplicaGone("the replica closed the connection during the handshake"))
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ReplicaGone("the replica's connection closed before it answered"))
        self.pending.clear()

    def _retire(self) -> None:
        """Send nothing new here; close once what is in flight is answered."""
        if self.open:
            self.open = False
            self._on_lost()
        if not self.pending and self.transport is not None:
            self.transport.close()

    def request(self, x: np.ndarray) -> tuple[int, asyncio.Future]:
        """Send `x`; the future its answer resolves. The frames of one turn of the event loop go out
        in one write at its end (`_flush`): each `write` is a send, and on loopback the kernel
        delivers to the replica inside it (the largest single cost left in the gateway, ~17% of its
        samples at concurrency 16, where most turns still carry one frame)."""
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending[self._next_id] = future
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(encode_matrix(PREDICT, self._next_id, x, load=len(self.pending)))
        return self._next_id, future

    def _flush(self) -> None:
        frames, self._outgoing = self._outgoing, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    def abandon(self, request_id: int) -> None:
        """A request whose caller gave up (its deadline passed): the replica is taken as stuck, the
        connection dropped at once (what else is in flight on it fails over to the Serve handle) and
        rediscovery reconnects only to a replica that completes the handshake again."""
        self.pending.pop(request_id, None)
        self._retire()
        if self.transport is not None:
            self.transport.abort()


#: how long a request may wait for the version to have a replica at all (Serve's rolling update stops a
#: version's only replica before its replacement has loaded the model): not the replica's deadline
NO_REPLICA_WAIT_S = 60.0


async def handle_result(response, timeout_s: float, wait_for_replica: bool = True):
    """A Serve handle call's answer. With `wait_for_replica` it is first assigned to a replica (waiting
    up to `NO_REPLICA_WAIT_S` while the version has none ready, as during a restart), then answered
    within `timeout_s`; without it (the version's replica is known to be stuck: it held a request past
    its deadline) `timeout_s` bounds both, since Serve would wait for the stuck replica's queue-length
    answer as long as it lives. `TimeoutError` past a bound, the call cancelled."""
    try:
        if not wait_for_replica:
            return await asyncio.wait_for(response, timeout_s)
        try:
            ref = await asyncio.wait_for(response._to_object_ref(), NO_REPLICA_WAIT_S)
        except (AttributeError, RuntimeError):  # a handle that returns by value: one deadline for both
            return await asyncio.wait_for(response, timeout_s + NO_REPLICA_WAIT_S)
        return await asyncio.wait_for(ref, timeout_s)
    except (asyncio.TimeoutError, asyncio.CancelledError):  # past a bound here, or the caller's
        cancel = getattr(response, "cancel", None)
        if cancel is not None:
            cancel()  # out of the router's queue (it would run once the replica goes on)
        raise


class ReplicaPool:
    """Direct connections to one version's replicas; `fallback(x, wait_for_replica)` (the Serve handle
    call) otherwise. `stuck`: the last replica lost held a request past the deadline (until a replica
    completes the handshake again): the fallback then gets the deadline alone, no wait for a replica."""

    def __init__(self, label: str, ask_endpoints: Callable[[], Awaitable[list]],
                 fallback: Callable[[np.ndarray, bool], Awaitable[np.ndarray]], refresh_s: float = 5.0,
                 timeout_s: float = 5.0):
        self.label, self.ask_endpoints, self.fallback = label, ask_endpoints, fallback
        self.refresh_s = refresh_s
        self.connections: dict[str, _Connection] = {}
        self.direct = self.fallen_back = self.abandoned = 0
        self.timeout_s = timeout_s
        self.last_discovery = "not yet"
        self.stuck = False
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._discover())

    async def predict(self, x: np.ndarray) -> np.ndarray:
        connection = self._pick()
        if connection is not None:
            request_id, answer = connection.request(x)
            # the deadline as a timer on the answer itself: `asyncio.wait_for(shield(...))` made a task,
            # a shield and a timer per request (~4% of the gateway's CPU per request, py-spy)
            expiry = asyncio.get_running_loop().call_later(self.timeout_s, _expire, answer)
            try:
                result = await answer
                self.direct += 1
                return result
            except ReplicaGone:
                pass
            except _Expired:  # this replica held it past the deadline
                self.abandoned += 1
                log.warning("%s: a replica did not answer in time; its connection is retired", self.label)
                self.stuck = True
                connection.abandon(request_id)
                raise asyncio.TimeoutError(f"{self.label}: no answer within {self.timeout_s:g} s") from None
            except asyncio.CancelledError:  # the caller gave up (a shadow's bound, a shutdown): not the replica's fault
                connection.pending.pop(request_id, None)
                raise
            finally:
                expiry.cancel()
        self.fallen_back += 1
        self._wake.set()
        return await self.fallback(x, not self.stuck)

    def _pick(self) -> _Connection | None:
        best = None
        for connection in self.connections.values():
            if connection.open and (best is None or len(connection.pending) < len(best.pending)):
                best = connection
        return best

    def _lost(self, replica_id: str) -> None:
        self.connections.pop(replica_id, None)
        self._wake.set()  # look for the replacement now, not at the next refresh

    async def _discover(self) -> None:
        """Read the version's live endpoints, connect to new ones; again every `refresh_s` (every
        second while none is connected), at once after a replica left or a request found no
        connection. Reading the directory costs the version's replicas nothing."""
        while True:
            try:
                endpoints = await asyncio.wait_for(self.ask_endpoints(), DISCOVERY_TIMEOUT_S)
                self.last_discovery = f"{len(endpoints)} replica(s) listed"
                for endpoint in endpoints:
                    if endpoint["replica"] not in self.connections:
                        await self._connect(endpoint)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - discovery retries; requests use the handle meanwhile
                self.last_discovery = f"failed: {type(exc).__name__}: {exc}"
                log.warning("%s: replica discovery failed (%s); retrying", self.label, exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.refresh_s if self.connections else 1.0)
            except asyncio.TimeoutError:
                pass

    async def _connect(self, endpoint: dict) -> None:
        replica = endpoint["replica"]
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(lambda: self._lost(replica)), endpoint["host"], endpoint["port"]),
                CONNECT_TIMEOUT_S)
            connection.transport.write(encode(HELLO, 0, bytes.fromhex(endpoint["secret"])))
            await asyncio.wait_for(connection.ready, CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, ReplicaGone) as exc:
            self.last_discovery += f"; cannot reach {endpoint['host']}:{endpoint['port']}: {exc!r}"
            log.warning("%s: cannot reach replica %s at %s:%s (%s); it stays on the Serve handle", self.label,
                     replica, endpoint["host"], endpoint["port"], exc)
            return
        self.connections[replica] = connection
        self.stuck = False

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for connection in list(self.connections.values()):
            connection._retire()
        self.connections.clear()
