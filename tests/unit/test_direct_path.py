"""The gateway ↔ replica direct path: the wire format, and a real server and pool on 127.0.0.1
sockets (no Ray: the endpoint directory and the Serve handle are played by plain coroutines)."""

import asyncio
import socket
from types import SimpleNamespace

import numpy as np
import pytest

from serving.autoscale import DIRECT_LOAD_METRIC, ongoing_requests_policy
from serving.replica_client import ReplicaError, ReplicaPool
from serving.replica_server import ReplicaServer
from serving.wire import ERROR, HELLO, PREDICT, READY, RESULT, FrameReader, WireError, encode, encode_matrix


def test_frames_survive_any_split_of_the_byte_stream():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    stream = encode(HELLO, 0, b"secret") + encode_matrix(PREDICT, 7, x, load=5) + encode(ERROR, 9, "boom".encode())
    for step in (1, 3, 7, len(stream)):
        reader, frames = FrameReader(), []
        for i in range(0, len(stream), step):
            frames += reader.feed(stream[i:i + step])
        assert [(f.kind, f.request_id) for f in frames] == [(HELLO, 0), (PREDICT, 7), (ERROR, 9)]
        assert bytes(frames[0].payload) == b"secret"
        np.testing.assert_array_equal(frames[1].matrix(), x)
        assert frames[1].load() == 5 and frames[2].text() == "boom"


def test_bad_frames_are_refused_with_a_reason():
    with pytest.raises(WireError, match="unknown frame kind 99"):
        FrameReader().feed(encode(99, 1))
    with pytest.raises(WireError, match="outside"):
        FrameReader(max_frame_bytes=100).feed(encode(PREDICT, 1, b"x" * 200))
    truncated = encode(RESULT, 3, (2).to_bytes(4, "little") + (2).to_bytes(4, "little") + bytes(4) + bytes(8))
    with pytest.raises(WireError, match="2x2 float32 needs 16 bytes, got 8"):
        FrameReader().feed(truncated)[0].matrix()
    with pytest.raises(WireError, match="2-D"):
        encode_matrix(PREDICT, 1, np.zeros(3))


class _Deployment:
    """Stands in for the endpoint directory and the version's Serve handle (the fallback)."""

    def __init__(self, servers):
        self.servers, self.fallback_calls = servers, 0

    async def ask_endpoints(self):
        return [server.endpoint() for server in self.servers]

    async def fallback(self, x, wait_for_replica=True):
        self.fallback_calls += 1
        return np.full((x.shape[0], 2), -1.0, dtype=np.float32)


def _double(x):
    return np.concatenate([x[:, :1] * 2, x[:, :1] * 3], axis=1)


async def _connected_pool(deployment, replicas: int) -> ReplicaPool:
    pool = ReplicaPool("m/v1", deployment.ask_endpoints, deployment.fallback, refresh_s=0.2)
    await pool.predict(np.zeros((1, 2), dtype=np.float32))  # the first request wakes discovery
    pool.start()
    for _ in range(100):
        if len(pool.connections) == replicas:
            return pool
        await asyncio.sleep(0.05)
    raise AssertionError(f"pool connected to {len(pool.connections)} of {replicas} replicas")


def test_requests_go_direct_to_every_replica_and_answers_match_their_requests():
    servers = [ReplicaServer(_double, "127.0.0.1") for _ in range(2)]
    deployment = _Deployment(servers)

    async def scenario():
        pool = await _connected_pool(deployment, 2)
        xs = [np.full((1, 2), i, dtype=np.float32) for i in range(200)]
        answers = await asyncio.gather(*(pool.predict(x) for x in xs))
        pool.close()
        return xs, answers, pool

    try:
        xs, answers, pool = asyncio.run(scenario())
        for x, answer in zip(xs, answers):
            np.testing.assert_array_equal(answer, _double(x))
        assert pool.direct == 200 and pool.fallen_back == 1  # only the request before discovery
        assert all(s.requests > 0 for s in servers)  # the fewest-in-flight pick spread the load
    finally:
        for server in servers:
            server.close()


def test_a_model_failure_reaches_the_caller_and_is_not_retried():
    def failing(x):
        raise ValueError("input has 2 columns, the model takes 9")

    server = ReplicaServer(failing, "127.0.0.1")
    deployment = _Deployment([server])

    async def scenario():
        pool = await _connected_pool(deployment, 1)
        before = deployment.fallback_calls
        with pytest.raises(ReplicaError, match="ValueError: input has 2 columns, the model takes 9"):
            await pool.predict(np.zeros((1, 2), dtype=np.float32))
        assert deployment.fallback_calls == before
        pool.close()

    try:
        asyncio.run(scenario())
    finally:
        server.close()


def test_a_replica_shutting_down_loses_no_request_and_its_replacement_is_found():
    old, new = ReplicaServer(_double, "127.0.0.1"), ReplicaServer(_double, "127.0.0.1")
    deployment = _Deployment([old])

    async def scenario():
        pool = await _connected_pool(deployment, 1)
        deployment.servers = [new]  # the deployment now hands out the new replica
        loop = asyncio.get_running_loop()
        requests = [asyncio.ensure_future(pool.predict(np.full((1, 2), i, dtype=np.float32))) for i in range(50)]
        closing = loop.run_in_executor(None, old.close)  # GOAWAY while requests are in flight
        for i in range(50, 300):
            requests.append(asyncio.ensure_future(pool.predict(np.full((1, 2), i, dtype=np.float32))))
            await asyncio.sleep(0.002)
        answers = await asyncio.gather(*requests)
        await closing
        for _ in range(100):
            if any(s is new for s in deployment.servers) and new.requests:
                break
            await pool.predict(np.ones((1, 2), dtype=np.float32))
            await asyncio.sleep(0.02)
        pool.close()
        return answers

    try:
        answers = asyncio.run(scenario())
        direct = 0
        for i, answer in enumerate(answers):  # every request answered, by a replica or the fallback
            by_replica = _double(np.full((1, 2), i, dtype=np.float32)).tolist()
            assert answer.tolist() in (by_replica, [[-1.0, -1.0]])
            direct += answer.tolist() == by_replica
        # the replicas answered most of them: the old one what it had received, the new one once found
        assert direct > len(answers) // 2, f"only {direct} of {len(answers)} answered by a replica"
        assert old.requests > 0 and new.requests > 0
    finally:
        old.close()
        new.close()


def test_a_client_without_the_secret_is_disconnected_unanswered():
    server = ReplicaServer(_double, "127.0.0.1")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(encode(HELLO, 0, b"wrong") + encode_matrix(PREDICT, 1, np.zeros((1, 2))))
            assert sock.recv(100) == b""  # closed, nothing answered
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(encode(HELLO, 0, server.secret) + encode_matrix(PREDICT, 1, np.ones((1, 2)), load=3))
            frames, reader = [], FrameReader()
            while len(frames) < 2:
                frames += reader.feed(sock.recv(4096))
            assert [f.kind for f in frames] == [READY, RESULT]
            np.testing.assert_array_equal(frames[1].matrix(), [[2.0, 3.0]])
            assert server.load() == 3
        assert server.requests == 1
    finally:
        server.close()


def test_before_authenticating_a_client_may_send_only_the_hello_and_only_for_a_second():
    """A header announcing a 256 MiB frame, or any frame but HELLO, is refused on its first bytes (nothing
    of it is buffered); a client that sends nothing, or half a HELLO, is closed after the handshake timeout."""
    import struct

    from serving.replica_server import HANDSHAKE_TIMEOUT_S

    server = ReplicaServer(_double, "127.0.0.1")
    try:
        for first in (struct.pack("<IBI", 256 * 1024 * 1024, HELLO, 0), encode_matrix(PREDICT, 1, np.zeros((1, 2))),
                      struct.pack("<IBI", 1 << 20, HELLO, 0) + b"\0" * 4096):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(first)
                assert sock.recv(100) == b""  # closed at once, unanswered
        for partial in (b"", encode(HELLO, 0, server.secret)[:10]):
            with socket.create_connection(("127.0.0.1", server.port), timeout=HANDSHAKE_TIMEOUT_S * 5) as sock:
                sock.sendall(partial)
                assert sock.recv(100) == b""  # closed by the replica (a timeout here would raise)
        assert server.requests == 0
    finally:
        server.close()


def _ctx(replicas, serve_seen, direct, target=8.0):
    return SimpleNamespace(current_num_replicas=replicas, target_num_replicas=replicas, total_num_requests=serve_seen,
                           aggregated_metrics={DIRECT_LOAD_METRIC: direct},
                           config=SimpleNamespace(get_target_ongoing_requests=lambda: target))


def test_autoscaling_counts_direct_requests_with_those_serve_saw():
    assert ongoing_requests_policy(_ctx(2, 4, {"a": 20.0, "b": 16.0}))[0] == pytest.approx(5.0)
    assert ongoing_requests_policy(_ctx(2, 0, {}))[0] == 0
    assert ongoing_requests_policy(_ctx(1, 8, {"a": 0.0}))[0] == pytest.approx(1.0)
    assert ongoing_requests_policy(_ctx(0, 3, {}))[0] == 0  # cold start is Serve's own rule


def test_the_inference_routes_are_recognised_by_the_direct_http_front():
    from serving.http_app import match_inference

    assert match_inference("POST", "/v2/models/shuttle/infer") == ("shuttle", None, False)
    assert match_inference("POST", "/v2/models/shuttle/versions/3/infer") == ("shuttle", "3", False)
    assert match_inference("POST", "/v2/models/shuttle/versions/x/infer") == ("shuttle", "x", False)  # 400 later
    assert match_inference("POST", "/v2/models/shuttle/invocations") == ("shuttle", None, True)
    for method, path in (("GET", "/v2/models/shuttle/infer"), ("POST", "/v2/models/shuttle"),
                         ("POST", "/v2/models/a/b/infer"), ("POST", "/v2/models/shuttle/versions/3/invocations"),
                         ("POST", "/v2/models//infer")):
        assert match_inference(method, path) is None  # left to FastAPI (405/404 with a JSON error)
