"""Per-version request coalescing in the gateway: one Serve handle call carries many requests.

A Serve handle call costs milliseconds of CPU (routing in the caller, a task in the replica)
against ~0.1 ms for the forward pass, so under load the gateway sends requests that arrive while
calls are in flight as one batch. Nothing waits on a timer: at low load a request goes out at once
(batch of one); as load grows, batches grow by themselves. `max_batch_size=1` turns it off (one
call per request).

It also bounds what the gateway holds for a version: at most `max_queued` requests wait beyond the
calls in flight (past it `submit` refuses at once with a 503 and `Retry-After`: load shed, not
queued without end), and every call has a deadline (`timeout_s`) after which its waiters get a 504
and its slot is free again, so a version whose replica stopped answering neither holds requests
nor grows memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from serving.protocol import BadRequest

RETRY_AFTER_S = 1  # what a shed request is told to wait


class Overloaded(BadRequest):
    """The version's queue is full: 503 with Retry-After."""

    def __init__(self, label: str, queued: int):
        super().__init__(f"{label} is over capacity ({queued} request(s) waiting); retry after {RETRY_AFTER_S} s",
                         status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


class DeadlinePassed(BadRequest):
    """No answer within the deadline: 504."""

    def __init__(self, label: str, timeout_s: float):
        super().__init__(f"{label} did not answer within {timeout_s:g} s (gateway.request_timeout_s)", status=504)


class Batcher:
    def __init__(self, call: Callable[[np.ndarray], Awaitable[np.ndarray]], max_batch_size: int,
                 max_in_flight: int, max_queued: int = 1000, timeout_s: float = 5.0, label: str = "the version",
                 limit_s: float | None = None):
        """`timeout_s`: the request's deadline, as the 504 names it (the call applies it to a replica);
        `limit_s` (default `timeout_s`): the most a request is held here in all, waiting for a replica
        to exist included, after which its slot is freed whatever the call does."""
        self.call, self.max_batch_size = call, max_batch_size
        self.max_in_flight = max_in_flight if max_batch_size > 1 else max_in_flight + max_queued
        self.max_queued, self.timeout_s, self.label = max_queued, timeout_s, label
        self.limit_s = timeout_s if limit_s is None else limit_s
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()  # the calls under way (a reference each, until done)
        self.shed = self.timed_out = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """The version's answer to `x`: `Overloaded` when the queue is full, `DeadlinePassed` past the deadline."""
        if len(self._queue) >= self.max_queued or (self.max_batch_size == 1 and self._in_flight >= self.max_in_flight):
            self.shed += 1
            raise Overloaded(self.label, len(self._queue) + (self._in_flight if self.max_batch_size == 1 else 0))
        if self.max_batch_size == 1:
            self._in_flight += 1
            try:
                return await self._deadline(self.call(x))
            finally:
                self._in_flight -= 1
        future = asyncio.get_running_loop().create_future()
        self._queue.append((x, future))
        self._dispatch()
        try:  # waiting in the queue counts against the deadline too
            return await asyncio.wait_for(asyncio.shield(future), self.limit_s)
        except asyncio.TimeoutError:
            self.timed_out += 1
            future.cancel()  # still queued: it is skipped; in a call: its share of the answer is dropped
            raise DeadlinePassed(self.label, self.timeout_s) from None
        except asyncio.CancelledError:  # the caller gave up (a shadow's bound): out of the queue too
            future.cancel()
            raise

    async def _deadline(self, awaitable):
        """`awaitable` within `limit_s` (`asyncio.timeout`: a timer on this task, where `wait_for` made a
        second task per request)."""
        try:
            async with asyncio.timeout(self.limit_s):
                return await awaitable
        except asyncio.TimeoutError:
            self.timed_out += 1
            raise DeadlinePassed(self.label, self.timeout_s) from None

    def _dispatch(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0][0].shape[0] <= self.max_batch_size):
                item = self._queue.popleft()
                if item[1].done():  # its caller's deadline passed while it waited
                    continue
                batch.append(item)
                rows += item[0].shape[0]
            if not batch:
                continue
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        try:
            x = np.concatenate([x for x, _ in batch], axis=0) if len(batch) > 1 else batch[0][0]
            proba = await asyncio.wait_for(self.call(x), self.limit_s)  # a hung call frees its slot
            start = 0
            for x, future in batch:
                if not future.done():
                    future.set_result(proba[start:start + x.shape[0]])
                start += x.shape[0]
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the failure
            if isinstance(exc, asyncio.TimeoutError):
                exc = DeadlinePassed(self.label, self.timeout_s)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight -= 1
            self._dispatch()
