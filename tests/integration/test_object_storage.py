"""Every location on object storage, against a real S3 API (moto's server on 127.0.0.1).

The gateway's own writers put the live log and the labels in the bucket; the monitor's core keeps
its state, its event log and the scored windows' rows there, compacts files there (an object store
cannot rename: a move is a copy and a delete) and is killed at moments of many passes and
restarted against the bucket: no row is lost or scored twice, every label is joined once.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pyarrow.dataset as ds
import pytest

from cluster.storage import filesystem
from monitoring.compaction import CompactionSpec
from monitoring.core import LabelJoin, MonitorCore
from monitoring.labels import Feedback, WindowRows
from monitoring.reference import build_profile
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, parse_feedback
from serving.live_log import LiveLog
from tests.integration.s3_server import s3_server

pytestmark = pytest.mark.integration

FEATURES = ("f0", "f1", "f2")
RNG = np.random.default_rng(5)
PROFILE = build_profile(RNG.normal(size=(4_000, 3)), list(FEATURES), np.tile([0.5, 0.5], (4_000, 1)), [0, 1], "fp")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


class Died(BaseException):
    """The process ends here: nothing in the monitor catches it."""


def monitor(live: str, state: str) -> MonitorCore:
    return MonitorCore("m", live, StateStore(state, "m", segment_bytes=2_048), {1: PROFILE}.get, WindowSpec(rows=300, seconds=3600, min_rows=50),
                       clock=lambda: time.time() + 60,
                       labels=LabelJoin(Feedback(live, "m"), WindowRows(state, "m"), horizon=20),
                       compaction=CompactionSpec(min_files=4, target_rows=2_000))


def test_the_monitor_on_object_storage_killed_at_random_moments_scores_every_row_once(s3):
    live, state = s3.uri("kills", "live"), s3.uri("kills", "monitor")
    log, labels = LiveLog(live, flush_seconds=3600), FeedbackLog(live)
    chooser = random.Random(17)
    core, kills, sent = monitor(live, state), 0, {}
    for round_ in range(24):
        rows = chooser.randrange(60, 200)
        log.append("m", FEATURES, f"r{round_}", 1, None, RNG.normal(size=(rows, 3)).astype(np.float32),
                   np.zeros(rows, dtype=np.int64), 1.0, proba=np.tile(np.float32([[0.7, 0.3]]), (rows, 1)))
        log.flush()
        ids = [f"r{round_}"] + [f"r{round_}#{i}" for i in range(1, rows)]
        chosen = {i: int(chooser.random() < 0.5) for i in ids if chooser.random() < 0.6}
        labels.write("m", parse_feedback([{"request_id": i, "label": v} for i, v in chosen.items()], (0, 1)))
        sent.update(chosen)
        if chooser.random() < 0.6:  # killed just before or just after its n-th write of state or events in this pass
            n, after, writes = chooser.randrange(1, 5), chooser.random() < 0.5, [0]
            real = core.store._write_beside

            def dying(path, data, real=real, n=n, after=after, writes=writes):
                writes[0] += 1
                if writes[0] == n and not after:
                    raise Died(f"killed before write {n}")
                real(path, data)
                if writes[0] == n:
                    raise Died(f"killed after write {n} ({path.rsplit('/', 1)[-1]})")

            core.store._write_beside = dying
            try:
                core.step()
            except Died:
                kills += 1
            core = monitor(live, state)  # restarted against the bucket
        else:
            core.step()
    log.close()
    core.step()
    assert kills >= 8
    table = ds.dataset(f"{live.removeprefix('s3://')}/model=m", filesystem=filesystem(live)[0],
                       partitioning="hive").to_table(columns=["request_id"])
    answered = table.num_rows
    store = StateStore(state, "m")
    assert len(store.segments()) > 2  # kills fell inside segments and between them
    windows = [e for e in store.events() if e["kind"] == "window_scored"]
    assert [w["window"] for w in windows] == list(range(len(windows)))  # none twice, none missing
    scored = sum(w["rows"] for w in windows)
    assert scored == core.state["rows_scored"]["1"] and scored + core.windower.buffers[1].rows == answered
    assert len(set(table.column("request_id").to_pylist())) == answered  # compaction doubled none
    joined = sum(s["labelled"] for s in core.state["labels"]["1"].values())
    waiting = {i for c in core.windower.buffers[1].chunks for i in c.ids}  # rows not scored yet: joined later
    assert joined == sum(1 for i in sent if i not in waiting)  # every label of a scored row, once
    assert [k for k in s3.keys("kills/") if k.rsplit("/", 1)[-1].startswith((".compacting", ".labels-compacting"))] == []


def test_the_event_log_on_object_storage_is_repaired_and_read_without_a_write(s3):
    state = s3.uri("events", "monitor")
    store = StateStore(state, "m")
    store.commit({"model": "m"}, [{"kind": "a"}, {"kind": "b"}])
    fs, base = filesystem(state)
    path = store.events_path
    with fs.open_input_stream(path) as f:
        whole = f.read()
    with fs.open_output_stream(path) as f:  # an uncommitted event and a torn line after the committed two
        f.write(whole + b'{"kind": "c"}\n{"kind": "d", "ti')
    before = s3.keys("events/")
    assert [e["kind"] for e in StateStore(state, "m").events()] == ["a", "b"]
    assert s3.keys("events/") == before  # a reader never writes
    saved, repaired = StateStore(state, "m").recover()
    assert saved["events_logged"] == 2 and repaired[0]["kind"] == "event_log_repaired"
    with fs.open_input_stream(path) as f:
        assert f.read() == whole


def test_a_commit_on_object_storage_rewrites_its_last_segment_only(s3):
    import boto3

    store = StateStore(s3.uri("segments", "monitor"), "m", segment_bytes=400)
    state = {"model": "m"}
    for i in range(40):
        store.commit(state, [{"kind": "e", "i": i, "pad": "y" * 30}])
    objects = boto3.client("s3").list_objects_v2(Bucket="handoff-test", Prefix="segments/")["Contents"]
    segments = [o for o in objects if "/events/seg-" in o["Key"]]
    assert len(segments) >= 4 and max(o["Size"] for o in segments) < 400 + 80  # a segment and one commit at most
    assert [e["i"] for e in StateStore(s3.uri("segments", "monitor"), "m").events()] == list(range(40))
    assert not [o["Key"] for o in objects if o["Key"].rsplit("/", 1)[-1].startswith(".")]  # nothing left beside

# The closed loop with every location in the bucket (Tune, MLflow's artifacts, the training table, the
# live log, labels, the monitor's state and events, the retraining's table, batch output), the monitor
# restarted against it: tests/integration/test_loop_across_nodes.py, on several nodes.
