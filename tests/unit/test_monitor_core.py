"""The monitor's core on real live-log files written by the gateway's own writer (no Ray):
windows per version, restarts that neither re-score nor skip a row, corrupt files, unprofiled versions."""

import time

import numpy as np
import pytest

from monitoring.core import DriftSettings, LabelJoin, MonitorCore
from monitoring.labels import Feedback, WindowRows, summary
from monitoring.reference import build_profile
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, parse_feedback
from serving.live_log import LiveLog

FEATURES = ("f0", "f1", "f2", "f3")
RNG = np.random.default_rng(7)
REFERENCE = RNG.normal(size=(8_000, 4))
PROFILE = build_profile(REFERENCE, list(FEATURES), np.tile([0.5, 0.5], (8_000, 1)), [0, 1], "fp")


def write(root, batches):
    """One file per batch: [(version, rows, shift, shadow)], as the gateway's writer makes them."""
    log = LiveLog(str(root), flush_seconds=3600)
    for i, (version, rows, shift, shadow) in enumerate(batches):
        x = (RNG.normal(size=(rows, 4)) + shift).astype(np.float32)
        log.append("m", FEATURES, f"b{time.monotonic_ns()}-{i}", version, None, x, np.zeros(rows, dtype=np.int64), 1.0,
                   shadow=shadow)
        log.flush()
        time.sleep(0.002)
    log.close()


def core(tmp_path, spec=WindowSpec(rows=500, seconds=3600, min_rows=100), persistence=2, profiles=None):
    profiles = {1: PROFILE} if profiles is None else profiles
    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), profiles.get, spec,
                       DriftSettings(persistence=persistence), clock=lambda: time.time() + 60)


def kinds(events, kind):
    return [e for e in events if e["kind"] == kind]


def test_windows_per_version_shadow_rows_excluded_and_unprofiled_rows_counted(tmp_path):
    write(tmp_path / "live", [(1, 700, 0.0, False), (2, 300, 0.0, False), (1, 700, 0.0, True), (1, 400, 0.0, False)])
    monitor = core(tmp_path)
    events = monitor.step()
    scored = kinds(events, "window_scored")
    assert [(e["version"], e["window"], e["rows"]) for e in scored] == [(1, 0, 500), (1, 1, 500)]
    assert monitor.state["rows_scored"] == {"1": 1000} and not any(e["drifted"] for e in scored)
    assert monitor.state["rows_unprofiled"] == {}  # 300 rows of v2 wait for a window of 500
    assert monitor.windower.buffers[1].rows == 100 and monitor.windower.buffers[2].rows == 300
    write(tmp_path / "live", [(2, 300, 0.0, False)])
    events = monitor.step()
    unprofiled = kinds(events, "window_unprofiled")
    assert len(unprofiled) == 1 and unprofiled[0]["rows"] == 500 and "no reference profile" in unprofiled[0]["reason"]
    assert monitor.state["rows_unprofiled"] == {"2": 500}
    assert [e["kind"] for e in StateStore(str(tmp_path / "state"), "m").events()].count("window_scored") == 2


@pytest.mark.parametrize("crash_after_saves", range(1, 10))  # every save of the first phase
def test_a_restart_anywhere_neither_rescores_nor_skips_a_row(tmp_path, crash_after_saves):
    profiles = {1: PROFILE, 2: PROFILE}
    write(tmp_path / "live", [(1, 450, 0.0, False), (2, 120, 0.0, False), (1, 450, 0.0, False), (1, 450, 0.0, True)])
    first = core(tmp_path, profiles=profiles)
    saves, real_save = [0], first.store.save

    def crashing_save(state):  # the actor dies between writing a window's events and its state
        saves[0] += 1
        if saves[0] > crash_after_saves:
            raise RuntimeError("the actor died")
        real_save(state)

    first.store.save = crashing_save
    with pytest.raises(RuntimeError):
        for _ in range(4):
            first.step()
            write(tmp_path / "live", [(1, 450, 0.0, False), (2, 450, 0.0, False)])
    write(tmp_path / "live", [(1, 300, 0.0, False)])
    for _ in range(2):  # restarted twice: new cores over the same state
        core(tmp_path, profiles=profiles).step()
    last = core(tmp_path, profiles=profiles)
    last.step()
    windows = kinds(StateStore(str(tmp_path / "state"), "m").events(), "window_scored")
    import pyarrow.dataset as ds

    table = ds.dataset(str(tmp_path / "live"), partitioning="hive").to_table().to_pandas()
    for version in (1, 2):
        mine = [w for w in windows if w["version"] == version]
        assert [w["window"] for w in mine] == list(range(len(mine)))  # no window twice, none missing
        assert sum(w["rows"] for w in mine) == last.state["rows_scored"].get(str(version), 0)
        buffered = last.windower.buffers[version].rows if version in last.windower.buffers else 0
        live_rows = int(((table["version"] == version) & ~table["shadow"]).sum())
        assert last.state["rows_scored"].get(str(version), 0) + buffered == live_rows  # each row once


def test_a_corrupt_file_is_skipped_recorded_and_never_stops_the_monitor(tmp_path):
    write(tmp_path / "live", [(1, 500, 0.0, False)])
    day = next((tmp_path / "live" / "model=m").iterdir())
    (day / "part-0000000000000-broken.parquet").write_bytes(b"PAR1 not really parquet")
    write(tmp_path / "live", [(1, 500, 0.0, False)])
    monitor = core(tmp_path)
    events = monitor.step()
    skipped = kinds(events, "file_skipped")
    assert len(skipped) == 1 and "broken" in skipped[0]["file"] and skipped[0]["reason"]
    assert monitor.state["rows_scored"] == {"1": 1000}
    assert kinds(core(tmp_path).step(), "file_skipped") == []  # recorded: not retried


def test_a_persistent_shift_is_declared_once_after_the_persistence_windows(tmp_path):
    write(tmp_path / "live", [(1, 500, 0.0, False)] * 2 + [(1, 500, 0.5, False)] * 4)
    events = core(tmp_path, persistence=3).step()
    drifted = [e["window"] for e in kinds(events, "window_scored") if e["drifted"]]
    declared = kinds(events, "drift_declared")
    assert drifted == [2, 3, 4, 5] and len(declared) == 1
    assert (declared[0]["first_window"], declared[0]["last_window"]) == (2, 4)
    assert set(declared[0]["features"]) == set(FEATURES) and declared[0]["version"] == 1


def test_slow_traffic_is_scored_by_age(tmp_path):
    write(tmp_path / "live", [(1, 150, 0.0, False)])
    monitor = core(tmp_path, spec=WindowSpec(rows=5_000, seconds=30, min_rows=100))
    assert [e["rows"] for e in kinds(monitor.step(), "window_scored")] == [150]  # its rows are 60 s old


def labelled_core(tmp_path):
    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), {1: PROFILE}.get,
                       WindowSpec(rows=500, seconds=3600, min_rows=100), DriftSettings(concept_min_labels=150),
                       clock=lambda: time.time() + 60,
                       labels=LabelJoin(Feedback(str(tmp_path / "live"), "m"),
                                        WindowRows(str(tmp_path / "state"), "m"), horizon=5))


def send(tmp_path, labels):
    FeedbackLog(str(tmp_path / "live")).write("m", parse_feedback(
        [{"request_id": rid, "label": label} for rid, label in labels], (0, 1)))


def test_labels_join_rows_late_and_again_idempotently_across_a_restart(tmp_path):
    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    x = RNG.normal(size=(500, 4)).astype(np.float32)
    log.append("m", FEATURES, "req", 1, None, x, np.zeros(500, dtype=np.int64), 1.0,
               proba=np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (500, 1)))
    log.close()
    monitor = labelled_core(tmp_path)
    scored = kinds(monitor.step(), "window_scored")
    assert scored and monitor.state["labels"] == {}  # no label yet
    assert scored[0]["estimated_accuracy"] == pytest.approx(0.9, abs=1e-6)  # from the probabilities alone
    ids = ["req"] + [f"req#{i}" for i in range(1, 150)]
    send(tmp_path, [(rid, 0 if i < 100 else 1) for i, rid in enumerate(ids)] + [("unknown-id", 1)])
    joined_events = monitor.step()
    joined = kinds(joined_events, "window_labels")
    concept = kinds(joined_events, "concept_drift_suspected")  # 66.7% realised where 90% was expected
    assert len(concept) == 1 and concept[0]["realised"] == pytest.approx(100 / 150) and "estimated 90.0%" in \
        concept[0]["reason"]
    assert [(e["version"], e["window"], e["rows"], e["labelled"], e["correct"]) for e in joined] == [(1, 0, 500, 150, 100)]
    assert joined[0]["log_loss_sum"] == pytest.approx(-100 * np.log(0.9) - 50 * np.log(0.1), rel=1e-6)
    send(tmp_path, [(rid, 0 if i < 100 else 1) for i, rid in enumerate(ids)])  # the same labels again
    assert kinds(monitor.step(), "window_labels") == []
    restarted = labelled_core(tmp_path)
    assert restarted.state["labels"] == {"1": {"0": {k: joined[0][k] for k in ("rows", "labelled", "correct",
                                                                                "log_loss_sum")}}}
    send(tmp_path, [("req#200", 1)])  # a late label after the restart: joined with every earlier one
    again = kinds(restarted.step(), "window_labels")
    assert [(e["labelled"], e["correct"]) for e in again] == [(151, 100)]
    assert summary(restarted.state["labels"]["1"])["accuracy"] == pytest.approx(100 / 151)


def live_rows(root):
    import pyarrow.dataset as ds

    table = ds.dataset(str(root), partitioning="hive").to_table()
    return table.num_rows, sorted(table.column("request_id").to_pylist())


def compacting_core(tmp_path, spec=None):
    from monitoring.compaction import CompactionSpec

    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), {1: PROFILE}.get,
                       WindowSpec(rows=500, seconds=3600, min_rows=100), clock=lambda: time.time() + 60,
                       compaction=spec or CompactionSpec(min_files=4, target_rows=1_000))


def test_read_files_are_merged_with_every_row_kept_and_none_read_again(tmp_path):
    write(tmp_path / "live", [(1, 120, 0.0, i % 3 == 0) for i in range(12)])  # 1,440 rows, 4 files of shadow rows
    before = live_rows(tmp_path / "live")
    monitor = compacting_core(tmp_path)
    events = monitor.step()
    compacted = kinds(events, "files_compacted")
    files = list((tmp_path / "live" / "model=m").rglob("*.parquet"))
    # window 0 ends 20 rows into file 7: files 0-6 are read by every version, 7 × 120 rows merge into one
    assert [e["files"] for e in compacted] == [7] and len(files) == 6
    assert live_rows(tmp_path / "live") == before  # the same rows, fewer files
    assert monitor.state["rows_scored"] == {"1": 500} and monitor.windower.buffers[1].rows == 460
    write(tmp_path / "live", [(1, 100, 0.0, False)])
    restarted = compacting_core(tmp_path)
    restarted.step()
    assert restarted.state["rows_scored"] == {"1": 1000} and restarted.windower.buffers[1].rows == 60
    assert restarted.state["files_base"] == 12 and len(restarted.state["files"]) == 1
    assert len(list((tmp_path / "live" / "model=m").rglob("*.parquet"))) == 3  # 840+120 rows, 4 × 120, the new one
    assert live_rows(tmp_path / "live")[0] == before[0] + 100


@pytest.mark.parametrize("crash", ["after the merge is written", "after it is recorded", "after it is moved"])
def test_a_crash_inside_a_merge_loses_and_doubles_no_row(tmp_path, crash, monkeypatch):
    import monitoring.core as core_module

    write(tmp_path / "live", [(1, 100, 0.0, False) for _ in range(6)])
    before = live_rows(tmp_path / "live")
    monitor = compacting_core(tmp_path)
    real_merge, real_save, real_finish = core_module.merge_files, monitor.store.save, monitor._finish_merge

    class Died(BaseException):  # the process ends: nothing in the monitor catches it
        pass

    def die(*args, **kwargs):
        raise Died("the actor died")

    if crash == "after the merge is written":
        monkeypatch.setattr(core_module, "merge_files", lambda *a: (real_merge(*a), die())[0])
    elif crash == "after it is recorded":
        monitor.store.save = lambda state: (real_save(state), die() if state["compaction"] else None)
    else:
        monitor._finish_merge = die
    with pytest.raises(Died):
        monitor.step()
    monkeypatch.setattr(core_module, "merge_files", real_merge)
    restarted = compacting_core(tmp_path)
    restarted.step()
    assert live_rows(tmp_path / "live") == before and restarted.state["compaction"] is None
    assert restarted.state["rows_scored"].get("1", 0) + restarted.windower.buffers[1].rows == 600
    assert len(kinds(StateStore(str(tmp_path / "state"), "m").events(), "window_scored")) == 1
    leftovers = [p.name for p in (tmp_path / "live").rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []  # a merge written but not recorded is swept at the restart


def test_merge_plans_keep_days_schemas_and_sizes_apart():
    from monitoring.compaction import CompactionSpec, plan_merges

    spec = CompactionSpec(min_files=3, target_rows=100)
    files = [(f"date=d1/p{i}", 30, "s") for i in range(7)] + [("date=d1/big", 100, "s"), ("date=d1/other", 5, "t")]
    files += [(f"date=d2/p{i}", 10, "s") for i in range(2)]
    assert plan_merges(files, spec) == [["date=d1/p0", "date=d1/p1", "date=d1/p2"],
                                        ["date=d1/p3", "date=d1/p4", "date=d1/p5"]]


def test_labelled_rows_join_the_latest_label_of_each_answered_row(tmp_path):
    from monitoring.labelled import labelled_rows

    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    log.append("m", FEATURES, "a", 1, None, x[:3], np.array([0, 1, 1]), 1.0)
    log.append("m", FEATURES, "a", 2, None, x[:3], np.array([1, 1, 1]), 1.0, shadow=True)  # a mirror: never
    log.flush()
    time.sleep(0.02)
    log.append("m", FEATURES, "b", 2, None, x[3:], np.array([0, 0, 1]), 1.0)
    log.close()
    send(tmp_path, [("a", 1), ("a#2", 0), ("b#1", 1)])
    send(tmp_path, [("a", 0)])  # corrected later: the latest label counts
    rows = labelled_rows(str(tmp_path / "live"), "m")
    assert rows.y.tolist() == [0, 0, 1] and rows.version.tolist() == [1, 1, 2] and rows.prediction.tolist() == [0, 1, 0]
    assert rows.frame["f0"].tolist() == [0.0, 8.0, 16.0] and rows.features == list(FEATURES)
    assert rows.take([2]).frame["f1"].tolist() == [17.0]
    bare = labelled_rows(str(tmp_path / "live"), "m", with_features=False)
    assert bare.y.tolist() == [0, 0, 1] and list(bare.frame.columns) == []
    assert labelled_rows(str(tmp_path / "live"), "m", versions={2}).y.tolist() == [1]
    assert len(labelled_rows(str(tmp_path / "live"), "m", last=2)) == 2
    assert len(labelled_rows(str(tmp_path / "live"), "m", since=time.time() + 3600)) == 0
    assert len(labelled_rows(str(tmp_path / "nowhere"), "m")) == 0


def test_a_kept_label_reader_reads_each_file_once_and_still_sees_new_and_corrected_labels(tmp_path):
    """The canary's figures are read every tick: with the reader kept, a tick reads only the label
    files that arrived since the last one, and the join is the same as a fresh reader's."""
    from monitoring.labelled import labelled_rows
    from monitoring.labels import Feedback

    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    log.append("m", FEATURES, "a", 1, None, np.zeros((3, 4), np.float32), np.array([0, 1, 1]), 1.0)
    log.close()
    root = str(tmp_path / "live")
    send(tmp_path, [("a", 1)])
    kept = Feedback(root, "m")
    assert labelled_rows(root, "m", feedback=kept).y.tolist() == [1] and len(kept.files_read) == 1
    read = []
    original = kept.read
    kept.read = lambda key: read.append(key) or original(key)
    assert labelled_rows(root, "m", feedback=kept).y.tolist() == [1] and read == []  # nothing new: nothing read
    send(tmp_path, [("a#1", 0), ("a", 0)])  # a new row's label, and the first one corrected
    again = labelled_rows(root, "m", feedback=kept)
    assert len(read) == 1 and again.y.tolist() == [0, 0] == labelled_rows(root, "m").y.tolist()
