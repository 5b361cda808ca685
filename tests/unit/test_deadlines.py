"""Deadlines and load shedding in the gateway's path to a version (no Ray: real replica servers and
pools on 127.0.0.1; the Serve handle played by a coroutine): a replica that stops answering costs
its callers a 504 after the deadline, not forever; its connection is retired; a full queue is shed
with 503 and Retry-After; nothing is held once it is over; another version answers throughout."""

import asyncio
import threading

import numpy as np

from serving.batcher import Batcher, DeadlinePassed, Overloaded
from serving.replica_client import ReplicaPool
from serving.replica_server import ReplicaServer
from tests.unit.test_direct_path import _Deployment, _connected_pool, _double


def test_a_hung_call_gets_504_and_frees_its_slot_and_a_full_queue_is_shed_with_retry_after():
    async def scenario():
        gate = asyncio.Event()

        async def call(x):
            await gate.wait()  # a version that stopped answering, until the gate opens
            return x * 2

        batcher = Batcher(call, max_batch_size=4, max_in_flight=1, max_queued=5, timeout_s=0.3, label="m v1")
        results = await asyncio.gather(*(batcher.submit(np.full((1, 2), i, np.float32)) for i in range(12)),
                                       return_exceptions=True)
        await asyncio.sleep(0.01)  # the finished calls' callbacks run
        held = (batcher.queued, batcher._in_flight, len(batcher._tasks))
        gate.set()
        after = await batcher.submit(np.ones((1, 2), np.float32))
        return results, held, after, batcher

    results, held, after, batcher = asyncio.run(scenario())
    shed = [r for r in results if isinstance(r, Overloaded)]
    late = [r for r in results if isinstance(r, DeadlinePassed)]
    # the first goes out at once and hangs; 5 wait; the other 6 are refused at once
    assert len(shed) == 6 and len(late) == 6, results
    assert all(r.status == 503 and r.headers == {"Retry-After": "1"} and "over capacity" in str(r) for r in shed)
    assert all(r.status == 504 and "did not answer within 0.3 s" in str(r) for r in late)
    assert held == (0, 0, 0)  # nothing queued, in flight or referenced once the deadline passed
    np.testing.assert_array_equal(after, [[2.0, 2.0]])  # the slot came back
    assert batcher.shed == 6 and batcher.timed_out >= 6


def test_a_replica_that_stops_answering_under_load_costs_504s_and_its_connection_while_another_version_answers():
    stuck = threading.Event()

    def hanging(x):
        stuck.wait(timeout=30)  # the replica's endpoint thread stops here: nothing it holds is answered
        return _double(x)

    hung, healthy = ReplicaServer(hanging, "127.0.0.1"), ReplicaServer(_double, "127.0.0.1")
    hung_deployment, healthy_deployment = _Deployment([hung]), _Deployment([healthy])

    async def scenario():
        hung_pool = await _connected_pool(hung_deployment, 1)
        healthy_pool = await _connected_pool(healthy_deployment, 1)

        waits = []

        async def slow_fallback(x, wait_for_replica):  # the Serve handle reaches the same stuck replica
            waits.append(wait_for_replica)
            await asyncio.sleep(30)

        hung_pool.fallback = slow_fallback
        hung_pool.timeout_s = 0.5  # gateway.request_timeout_s
        healthy_pool.timeout_s = 5.0  # the healthy version's answers must not depend on a busy machine's speed
        # the batcher's own bound past the pool's deadline, as the router sets it (the pool's fires first)
        hung_v = Batcher(hung_pool.predict, max_batch_size=8, max_in_flight=2, max_queued=50, timeout_s=0.5, limit_s=1.0)
        healthy_v = Batcher(healthy_pool.predict, max_batch_size=8, max_in_flight=2, max_queued=50, timeout_s=5.0)
        outcomes = {"504": 0, "503": 0, "other": 0, "healthy": 0}

        async def client(batcher, n):
            for i in range(n):
                try:
                    answer = await batcher.submit(np.full((1, 2), i, np.float32))
                    if batcher is healthy_v:
                        np.testing.assert_array_equal(answer, _double(np.full((1, 2), i, np.float32)))
                        outcomes["healthy"] += 1
                except DeadlinePassed:
                    outcomes["504"] += 1
                except Overloaded:
                    outcomes["503"] += 1
                    await asyncio.sleep(0.05)
                except Exception:  # noqa: BLE001 - counted: must stay 0
                    outcomes["other"] += 1

        await asyncio.gather(*(client(hung_v, 4) for _ in range(10)), *(client(healthy_v, 40) for _ in range(4)))
        await asyncio.sleep(0.6)  # a call sent last gets its own deadline: past it, nothing may be left
        state = (len(hung_pool.connections), sum(len(c.pending) for c in hung_pool.connections.values()),
                 hung_v.queued, hung_v._in_flight, hung_pool.abandoned, hung_pool.stuck, waits)
        hung_pool.close()
        healthy_pool.close()
        return outcomes, state

    try:
        outcomes, (connections, pending, queued, in_flight, abandoned, stuck_flag, waits) = asyncio.run(scenario())
    finally:
        stuck.set()
        hung.close()
        healthy.close()
    assert outcomes["other"] == 0 and outcomes["504"] + outcomes["503"] == 40, outcomes
    assert outcomes["504"] > 0 and outcomes["healthy"] == 160, outcomes  # the other version answered every one
    assert abandoned >= 1 and connections == 0 and pending == 0  # the stuck connection retired, nothing pending
    assert queued == 0 and in_flight == 0
    # once a replica held a request past the deadline, the handle gets the deadline alone (no wait for
    # Serve to assign it: Serve would wait on the stuck replica as long as it lives)
    assert stuck_flag and waits and not any(waits), waits


class _Response:
    """A Serve handle call as the gateway sees it: assigned after `assign_s`, answered `answer_s` later."""

    def __init__(self, assign_s: float, answer_s: float):
        self.assign_s, self.answer_s, self.cancelled = assign_s, answer_s, False

    async def _answer(self):
        await asyncio.sleep(self.answer_s)
        return "answer"

    async def _to_object_ref(self):
        await asyncio.sleep(self.assign_s)
        return asyncio.ensure_future(self._answer())

    def __await__(self):
        async def whole():
            return await (await self._to_object_ref())
        return whole().__await__()

    def cancel(self):
        self.cancelled = True


def test_a_handle_call_waits_for_a_replica_only_while_none_is_known_stuck():
    from serving import replica_client

    async def scenario():
        replica_client.NO_REPLICA_WAIT_S = 0.6
        restart = _Response(assign_s=0.3, answer_s=0.05)  # no replica for 0.3 s, then a quick answer
        answered = await replica_client.handle_result(restart, timeout_s=0.2)
        stuck = _Response(assign_s=30, answer_s=0)  # Serve waits on a stuck replica's queue length
        started = asyncio.get_running_loop().time()
        try:
            await replica_client.handle_result(stuck, timeout_s=0.2, wait_for_replica=False)
        except asyncio.TimeoutError:
            waited = asyncio.get_running_loop().time() - started
        slow = _Response(assign_s=0, answer_s=30)  # assigned, then the replica holds it
        try:
            await replica_client.handle_result(slow, timeout_s=0.2)
        except asyncio.TimeoutError:
            pass
        return answered, waited, stuck.cancelled, slow.cancelled, restart.cancelled

    saved = replica_client.NO_REPLICA_WAIT_S
    try:
        answered, waited, stuck_cancelled, slow_cancelled, restart_cancelled = asyncio.run(scenario())
    finally:
        replica_client.NO_REPLICA_WAIT_S = saved
    assert answered == "answer" and not restart_cancelled  # the restart's wait is not the deadline
    assert waited < 5 and stuck_cancelled and slow_cancelled  # each past its bound, out of Serve's queue


def test_a_caller_that_gives_up_is_not_a_stuck_replica_and_leaves_nothing_queued():
    """A shadow's own bound (or a shutdown) cancels a request: the replica's connection stays open and
    the pool is not marked stuck; a batched request cancelled while queued leaves the queue."""
    slow = threading.Event()

    def answer_late(x):
        slow.wait(timeout=5)
        return _double(x)

    server = ReplicaServer(answer_late, "127.0.0.1")
    deployment = _Deployment([server])

    async def scenario():
        pool = await _connected_pool(deployment, 1)
        pool.timeout_s = 30
        try:
            await asyncio.wait_for(pool.predict(np.ones((1, 2), np.float32)), 0.2)  # the shadow's bound
        except asyncio.TimeoutError:
            pass
        kept = (len(pool.connections), pool.stuck, pool.abandoned,
                sum(len(c.pending) for c in pool.connections.values()))
        gate = asyncio.Event()

        async def blocked(x):
            await gate.wait()
            return x

        batcher = Batcher(blocked, max_batch_size=4, max_in_flight=1, max_queued=5, timeout_s=30, label="m v1")
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 2), np.float32)))  # in flight
        await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(batcher.submit(np.ones((1, 2), np.float32)), 0.1)  # queued, then given up
        except asyncio.TimeoutError:
            pass
        gate.set()
        await first
        await asyncio.sleep(0.01)
        pool.close()
        return kept, batcher.queued, batcher._in_flight

    try:
        kept, queued, in_flight = asyncio.run(scenario())
    finally:
        slow.set()
        server.close()
    assert kept == (1, False, 0, 0), kept  # connection kept, not stuck, nothing left pending
    assert queued == 0 and in_flight == 0
