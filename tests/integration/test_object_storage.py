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


# --- the closed loop with every location in the bucket -------------------------------------------------
@pytest.fixture(scope="module")
def bucket_head(s3, tmp_path_factory, shuttle_frame):
    """`handoff up` whose MLflow artifacts are in the bucket, and the monitoring and serving locations
    set for every process through the environment (the Ray head and its jobs inherit it), as a team
    sets them on a cluster; the training table in the bucket too."""
    import json
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.integration.conftest import free_port
    from tests.integration.test_closed_loop import FEATURES, handoff

    locations = {"HANDOFF_SERVING__LIVE_LOG__ROOT": s3.uri("loop", "live"),
                 "HANDOFF_MONITORING__STATE_ROOT": s3.uri("loop", "monitor"),
                 "HANDOFF_MONITORING__LOOP__DATA__ROOT": s3.uri("loop", "retrain")}
    saved = {k: os.environ.get(k) for k in locations}
    os.environ.update(locations)
    home = tmp_path_factory.mktemp("bucket-head") / "home"
    data = s3.uri("loop", "data", "train.parquet")
    fs, inside = filesystem(data)
    pq.write_table(pa.Table.from_pandas(shuttle_frame.iloc[:6000], preserve_index=False), inside, filesystem=fs)
    ports = {"mlflow": free_port(), "ray": free_port(), "dashboard": free_port()}
    started = handoff("up", "--home", str(home), "--num-cpus=2", f"--mlflow-port={ports['mlflow']}",
                      f"--ray-port={ports['ray']}", f"--dashboard-port={ports['dashboard']}",
                      "--artifacts", s3.uri("loop", "mlflow"), timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    replay = shuttle_frame.iloc[20000:32000]
    try:
        yield {"home": home, "gateway": free_port(), "data": data, "x": replay[FEATURES].to_numpy(np.float32),
               "y": replay["anomaly"].astype(int).tolist(), **json.loads((home / "services.json").read_text())}
    finally:
        handoff("down", "--home", str(home), timeout=180)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_the_closed_loop_with_every_location_in_the_bucket(s3, bucket_head):
    """Tune results, MLflow artifacts, the training table, the live log, labels, the monitor's state and
    events, the retraining's table and a batch run's output all in the bucket: drift → retrain → gate →
    canary → promote with no failed request; the monitor killed and restarted resumes from its state
    there; nothing of it on the head's disk."""
    import json
    import os
    import signal

    from tests.integration.test_closed_loop import API_KEY, FAST, SMALL, drive, events, handoff, kinds

    head, name = bucket_head, "in-bucket"
    tuned = handoff("tune", "configs/shuttle.yaml", "--home", str(head["home"]), "--json",
                    *[a for s in [*SMALL, f"name={name}", f"dataset.uri={head['data']}", "search.num_samples=1",
                                  f"storage_path={s3.uri('loop', 'tune')}"] for a in ("--set", s)])
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    champion = json.loads(tuned.stdout)["version"]
    served = handoff("serve", name, "--home", str(head["home"]), "--set", f"gateway.port={head['gateway']}",
                     "--set", f"gateway.api_keys=[{API_KEY}]", "--set", "gateway.cpus=0.2",
                     "--set", "version_defaults.cpus=0.2", "--set", "live_log.flush_seconds=0.5",
                     *[a for s in FAST for a in ("--monitoring-set", s)])
    assert served.returncode == 0, served.stderr[-3000:]
    killed = []

    def until(found):
        steps = kinds(found)
        if "retrain_submitted" in steps and not killed:  # the monitor dies: Ray restarts it, from the bucket
            status = json.loads(handoff("monitor", name, "status", "--json", "--home", str(head["home"])).stdout)
            os.kill(status["pid"], signal.SIGKILL)
            killed.append(status["pid"])
        return "promoted" in steps or "rolled_back" in steps or "retrain_abandoned" in steps

    try:
        replay = drive(head, name, until, seconds=480)
        assert replay.before.failed == replay.after.failed == 0, replay.errors[:5]
        steps = kinds(replay.found)
        assert killed and "promoted" in steps, [(e["kind"], e.get("reason")) for e in replay.found
                                                if e["kind"] in steps]
        deadline = time.monotonic() + 60
        while True:  # the monitor still scores what the replay sent last: read it once it is still
            scored = json.loads(handoff("monitor", name, "status", "--json", "--home", str(head["home"])).stdout)
            found = events(head, name)
            again = json.loads(handoff("monitor", name, "status", "--json", "--home", str(head["home"])).stdout)
            if scored["rows_scored"] == again["rows_scored"] or time.monotonic() > deadline:
                break
            time.sleep(2)
        windows = [e for e in found if e["kind"] == "window_scored" and e["version"] == champion]
        assert [w["window"] for w in windows] == list(range(len(windows)))  # none twice, none lost at the restart
        assert scored["rows_scored"][str(champion)] == sum(w["rows"] for w in windows)
        promoted = next(e for e in replay.found if e["kind"] == "promoted")["version"]
        again = handoff("reproduce", name, str(promoted), "--home", str(head["home"]), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["identical"], again.stderr[-2000:]
        batch = handoff("predict", name, "--input", head["data"], "--output", s3.uri("loop", "batch"),
                        "--home", str(head["home"]))
        assert batch.returncode == 0, batch.stderr[-2000:]
    finally:
        handoff("unserve", name, "--home", str(head["home"]))
    keys = s3.keys("loop/")
    for where in ("tune/", "mlflow/", f"live/model={name}/", f"live/_feedback/model={name}/",
                  f"monitor/model={name}/events/seg-", f"monitor/model={name}/window_rows/", f"retrain/{name}/",
                  "batch/"):
        assert any(k.startswith(f"loop/{where}") for k in keys), (where, sorted({k.split("/")[1] for k in keys}))
    local = [p for d in ("live", "monitor", "tune", "mlartifacts", "retrain") for p in (head["home"] / d).rglob("*")
             if p.is_file()]
    assert local == []  # nothing of it on the head's disk
