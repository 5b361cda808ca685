"""Labels held within bounds (no Ray): a label reader that lets go of the files written before its
floor, the monitor's floor behind the oldest answer a join still needs, restarts that read only the
files from the floor on, and "the latest label sent wins" by when a file was written, whatever order
the files are read in."""

import time

import numpy as np
import pyarrow.fs as pafs
import pytest

import monitoring.core as core_module
from monitoring.core import LabelJoin, MonitorCore
from monitoring.label_compaction import merge_label_files, merged_name, stamp_of
from monitoring.labels import Feedback, WindowRows
from monitoring.reference import build_profile
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, parse_feedback
from serving.live_log import LiveLog

FEATURES = ("f0", "f1", "f2")
RNG = np.random.default_rng(3)
PROFILE = build_profile(RNG.normal(size=(4_000, 3)), list(FEATURES), np.tile([0.5, 0.5], (4_000, 1)), [0, 1], "fp")
ROWS = 200  # one window


def send(root, labels, stamp_ms=None):
    """One label file as the gateway writes it; renamed to `stamp_ms` (its moment in the name) when given."""
    path = FeedbackLog(str(root)).write("m", parse_feedback(
        [{"request_id": rid, "label": label} for rid, label in labels], (0, 1)))
    time.sleep(0.003)  # each file its own millisecond: names in the order they were sent
    if stamp_ms is None:
        return path
    directory, name = path.rsplit("/", 1)
    renamed = f"{directory}/part-{stamp_ms}-{name.split('-')[2]}"
    pafs.LocalFileSystem().move(path, renamed)
    return renamed


def key_of(path):
    return path.split("model=m/", 1)[1]


def test_the_latest_label_sent_wins_by_when_its_file_was_written_in_any_read_order(tmp_path):
    older = key_of(send(tmp_path, [("a", 0), ("b", 0)], 1_000_000))
    newer = key_of(send(tmp_path, [("a", 1)], 2_000_000))
    reader = Feedback(str(tmp_path), "m")
    assert reader.read(newer) == 1 and reader.read(older) == 2  # the older file read last
    assert reader.labels == {"a": 1, "b": 0}
    assert reader.forget_before(1_500.0) == 1  # b's file was written before: b goes, a was sent again after
    assert reader.labels == {"a": 1} and reader.files_read == {newer}
    assert reader.new_files([]) == [newer]  # the older file is behind the floor: not listed again
    assert reader.forget_before(1_000.0) == 0 and reader.since == 1_500.0  # a floor never goes back


def test_a_reader_with_a_floor_reads_no_earlier_file_and_a_merge_only_its_later_sources(tmp_path):
    root = str(tmp_path)
    sources = [key_of(send(tmp_path, [(f"r{i}", i % 2), ("shared", i % 2)], 1_000_000 + i * 1_000)) for i in range(4)]
    late = key_of(send(tmp_path, [("late", 1)], 1_010_000))
    fs, base = pafs.LocalFileSystem(), str(tmp_path / "_feedback" / "model=m")
    tmp = f"{sources[0].rsplit('/', 1)[0]}/.labels-compacting.tmp"
    merge_label_files(fs, base, sources, tmp)
    merged = merged_name(sources[-1])
    fs.move(f"{base}/{tmp}", f"{base}/{merged}")
    for key in sources:
        fs.delete_file(f"{base}/{key}")
    reader = Feedback(root, "m", since=1_002.0)  # after the first two sources were written
    assert reader.catch_up() == 2
    assert reader.labels == {"r2": 0, "r3": 1, "shared": 1, "late": 1}
    assert stamp_of(merged) == 1_003.0 and reader.files_read == {merged, sources[2], sources[3], late}
    reader.reach_back(1_000.0)  # the retraining wants older labels: the merge is read again for them
    assert reader.catch_up() == 1
    whole = Feedback(root, "m")
    whole.catch_up()
    assert reader.labels == whole.labels == {"r0": 0, "r1": 1, "r2": 0, "r3": 1, "shared": 1, "late": 1}


def answer(log, window):
    """One window of rows answered now by version 1: ids w{window}, w{window}#1, ..."""
    x = RNG.normal(size=(ROWS, 3)).astype(np.float32)
    log.append("m", FEATURES, f"w{window}", 1, None, x, np.zeros(ROWS, dtype=np.int64), 1.0,
               proba=np.tile(np.array([[0.8, 0.2]], dtype=np.float32), (ROWS, 1)))
    log.flush()


def ids(window, n=ROWS):
    return [f"w{window}"] + [f"w{window}#{i}" for i in range(1, n)]


def monitor(tmp_path, horizon=3, max_delay_s=86_400.0):
    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), {1: PROFILE}.get,
                       WindowSpec(rows=ROWS, seconds=3600, min_rows=50), clock=lambda: time.time() + 10,
                       labels=LabelJoin(Feedback(str(tmp_path / "live"), "m"), WindowRows(str(tmp_path / "state"), "m"),
                                        horizon=horizon, max_delay_s=max_delay_s))


@pytest.fixture
def no_margins(monkeypatch):
    """The floor's margins (an upload's settling time, the gateways' clock skew) at 0, so that a test
    a second long sees the floor move as a day's traffic would."""
    monkeypatch.setattr(core_module, "LABEL_SETTLE_S", 0.0)
    monkeypatch.setattr(core_module, "CLOCK_SKEW_S", 0.0)


def test_the_floor_follows_the_horizon_so_labels_held_and_files_listed_stay_bounded(tmp_path, no_margins):
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    core = monitor(tmp_path)
    held, listed = [], []
    for w in range(12):
        answer(log, w)
        time.sleep(0.01)
        send(live, [(i, k % 2) for k, i in enumerate(ids(w, 100))])  # half of each window labelled
        core.step()
        held.append(len(core.labels.feedback.labels))
        listed.append(len(core.state["feedback_files"]))
        time.sleep(0.01)
    log.close()
    assert max(held[4:]) <= 4 * 100 and max(listed[4:]) <= 4  # the horizon's three windows and the newest
    assert held[-1] >= 3 * 100  # every window in the horizon keeps its labels
    floor = core.state["feedback_floor"]
    assert floor is not None and floor == pytest.approx(core.state["window_ts"]["1"]["9"], abs=1e-3)
    assert sorted(core.state["window_ts"]["1"]) == ["10", "11", "9"]
    joined = core.state["labels"]["1"]
    assert all(joined[str(w)]["labelled"] == 100 for w in range(9, 12))
    # a late label for the oldest window in the horizon still joins it
    send(live, [(i, 1) for i in ids(9)[100:150]])
    late = [e for e in core.step() if e["kind"] == "window_labels"]
    assert [(e["window"], e["labelled"]) for e in late] == [(9, 150)]


def test_a_restart_reads_only_the_label_files_from_the_floor_on_and_joins_the_same(tmp_path, no_margins, monkeypatch):
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    core = monitor(tmp_path)
    for w in range(8):
        answer(log, w)
        time.sleep(0.01)
        send(live, [(i, 1) for i in ids(w, 60)])
        core.step()
        time.sleep(0.01)
    log.close()
    floor = core.state["feedback_floor"]
    read = []
    original = Feedback.read
    monkeypatch.setattr(Feedback, "read", lambda self, key: read.append(key) or original(self, key))
    restarted = monitor(tmp_path)
    assert read and all(stamp_of(k) >= floor for k in read) and len(read) == len(core.state["feedback_files"]) <= 4
    assert restarted.labels.feedback.labels == core.labels.feedback.labels
    assert restarted.state["labels"] == core.state["labels"]
    send(live, [(i, 0) for i in ids(7, 60)])  # corrected after the restart: the latest wins in both
    assert [e["labelled"] for e in restarted.step() if e["kind"] == "window_labels"] == [60]
    assert restarted.state["labels"]["1"]["7"]["correct"] == 60


def test_labels_later_than_the_longest_delay_are_let_go(tmp_path):
    """With the floor at most `max_delay_s` behind, a version whose traffic stopped still lets its old labels go."""
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    answer(log, 0)
    log.close()
    send(live, [(i, 1) for i in ids(0, 50)])
    core = monitor(tmp_path, max_delay_s=1.0)
    core.clock = lambda: time.time() + core_module.LABEL_SETTLE_S + core_module.CLOCK_SKEW_S + 5
    core.step()
    assert core.state["labels"]["1"]["0"]["labelled"] == 50  # joined in the pass that read it
    assert core.labels.feedback.labels == {} and core.state["feedback_files"] == []


def labelled_log(tmp_path, files=30, rows=20):
    """`files` live-log files of `rows` answers each, two thirds of them labelled in label files sent
    after them, one early label corrected at the end."""
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    for f in range(files):
        log.append("m", FEATURES, f"f{f}", 1 + f % 2, None, RNG.normal(size=(rows, 3)).astype(np.float32),
                   RNG.integers(0, 2, rows), 1.0)
        log.flush()
        time.sleep(0.004)
        if f % 3:
            send(live, [(f"f{f}" if r == 0 else f"f{f}#{r}", int(RNG.integers(0, 2))) for r in range(rows)])
    log.close()
    send(live, [("f1#3", 1), ("f1#4", 0)])
    return str(live)


@pytest.mark.parametrize(("last", "files_read"), [(1, 8), (120, 8), (200, 24), (10_000, 30)])
def test_the_last_labelled_rows_read_from_the_newest_files_back_are_the_whole_reads_last(tmp_path, last, files_read,
                                                                                         monkeypatch):
    import monitoring.labelled as labelled
    from monitoring.labelled import labelled_rows

    root = labelled_log(tmp_path)
    whole = labelled_rows(root, "m")
    read, original = [], labelled._answered
    monkeypatch.setattr(labelled, "_answered", lambda fs, path, *a: read.append(path) or original(fs, path, *a))
    recent = labelled_rows(root, "m", last=last)
    tail = slice(-min(last, len(whole)), None)
    assert recent.y.tolist() == whole.y[tail].tolist() and recent.version.tolist() == whole.version[tail].tolist()
    assert recent.frame.equals(whole.frame.iloc[tail].reset_index(drop=True))
    assert len(read) == files_read  # batches of 8, 16, ... files, from the newest, as far back as the rows asked


def test_a_kept_labelled_reader_reads_each_live_file_once_and_answers_as_a_fresh_one(tmp_path):
    from monitoring.labelled import LabelledReader, labelled_rows
    import monitoring.labelled as labelled

    root = labelled_log(tmp_path, files=6)
    since = time.time() - 3600
    kept = LabelledReader(root, "m", since=since, versions={1, 2}, with_features=False)
    first = kept.rows()
    read, original = [], labelled._answered
    labelled._answered = lambda fs, path, *a: read.append(path) or original(fs, path, *a)
    try:
        assert kept.rows().y.tolist() == first.y.tolist() and read == []
        log = LiveLog(root, flush_seconds=3600)
        log.append("m", FEATURES, "new", 2, None, RNG.normal(size=(4, 3)).astype(np.float32), np.ones(4, int), 1.0)
        log.close()
        send(root, [("new#2", 1), ("f2", 0)])  # a new answer's label, an old one corrected
        again = kept.rows()
    finally:
        labelled._answered = original
    fresh = labelled_rows(root, "m", since=since, versions={1, 2}, with_features=False)
    assert len(read) == 1 and again.y.tolist() == fresh.y.tolist() and len(again) == len(first) + 1


def test_a_merged_files_older_row_groups_are_not_read_for_the_last_rows(tmp_path, monkeypatch):
    """Compaction merges a day's files into one that is rewritten as it grows (its latest answers are
    the newest): a retraining's read of the last rows reads its newest row groups only."""
    import monitoring.compaction as compaction
    import monitoring.labelled as labelled
    from monitoring.labelled import labelled_rows
    from monitoring.live_reader import list_files

    root = labelled_log(tmp_path)
    whole = labelled_rows(root, "m")
    keys = list_files(root, "m", now=time.time() + 60)
    monkeypatch.setattr(compaction, "MERGED_ROW_GROUP", 20)  # a source file's rows per group
    base = tmp_path / "live" / "model=m"
    day = keys[0].rsplit("/", 1)[0]
    assert compaction.merge_files(root, "m", keys, f"{day}/.merge.tmp") == 600
    (base / day / ".merge.tmp").rename(base / day / "compacted-1.parquet")
    for key in keys:
        (base / key).unlink()
    read, original = [], labelled._answered
    monkeypatch.setattr(labelled, "_answered", lambda fs, path, *a: read.append(a[-1]) or original(fs, path, *a))
    recent = labelled_rows(root, "m", last=30)
    assert recent.y.tolist() == whole.y[-30:].tolist() and recent.frame.equals(whole.frame.iloc[-30:].reset_index(drop=True))
    assert read == list(range(29, 21, -1))  # the newest 8 of its 30 row groups


def test_a_window_the_floor_passed_keeps_its_figures_when_later_labels_arrive(tmp_path):
    """Past `max_delay_s` a window's labels are let go: a late label must not shrink its joined figures."""
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    answer(log, 0)
    log.close()
    send(live, [(i, 1) for i in ids(0, 100)])
    core = monitor(tmp_path, max_delay_s=1.0)
    core.clock = lambda: time.time() + core_module.LABEL_SETTLE_S + core_module.CLOCK_SKEW_S + 5
    core.step()
    assert core.state["labels"]["1"]["0"]["labelled"] == 100 and core.labels.feedback.labels == {}
    later = int((time.time() + core_module.LABEL_SETTLE_S + core_module.CLOCK_SKEW_S + 6) * 1000)  # after the floor
    send(live, [(ids(0)[150], 0)], stamp_ms=later)  # a label later than the longest delay: not joined, nothing undone
    assert [e for e in core.step() if e["kind"] == "window_labels"] == []
    assert core.state["labels"]["1"]["0"]["labelled"] == 100


def test_windows_scored_before_answer_times_were_kept_hold_the_floor(tmp_path, no_margins):
    """A state from an earlier version has no answer times for its windows: the floor waits until its
    horizon holds only windows whose answer times are known."""
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    core = monitor(tmp_path, horizon=2)
    for w in range(3):
        answer(log, w)
        time.sleep(0.01)
        send(live, [(i, 1) for i in ids(w, 20)])
        core.step()
        time.sleep(0.01)
    store = StateStore(str(tmp_path / "state"), "m")
    saved = store.read_state()
    saved.pop("window_ts"), saved.pop("feedback_floor")  # as an earlier version saved it
    store.save(saved)
    restarted = monitor(tmp_path, horizon=2)
    restarted.step()
    assert restarted.label_floor_candidate() is None and restarted.state["feedback_floor"] is None
    assert len(restarted.labels.feedback.labels) == 60  # nothing let go
    for w in range(3, 5):  # the horizon's windows now all have answer times: the floor moves again
        answer(log, w)
        time.sleep(0.01)
        send(live, [(i, 1) for i in ids(w, 20)])
        restarted.step()
        time.sleep(0.01)
    log.close()
    assert restarted.state["feedback_floor"] is not None and len(restarted.labels.feedback.labels) <= 60


def test_a_kept_labelled_reader_reads_a_file_again_after_an_io_error(tmp_path, monkeypatch):
    import monitoring.labelled as labelled
    from monitoring.labelled import LabelledReader, labelled_rows

    root = labelled_log(tmp_path, files=4)
    calls, original = [0], labelled._answered

    def flaky(fs, path, *a):
        calls[0] += 1
        if calls[0] == 2:  # the second newest file, which has labels
            raise OSError("503 Slow Down")  # an object store's throttle, once
        return original(fs, path, *a)

    monkeypatch.setattr(labelled, "_answered", flaky)
    kept = LabelledReader(root, "m", with_features=False)
    first = kept.rows()
    assert len(first) < len(labelled_rows(root, "m", with_features=False))  # the file that failed is missing
    assert kept.rows().y.tolist() == labelled_rows(root, "m", with_features=False).y.tolist()  # read again


def test_a_version_taken_out_of_traffic_holds_the_floor_no_more(tmp_path, no_margins, monkeypatch):
    """After a promotion the old champion answers nothing: its windows stop holding the label floor once
    it has been out of traffic `RETIRED_AFTER_S`, so the labels held stay those of the new champion's
    horizon instead of growing for a day (seen in the whole loop's soak: the floor stuck at the old
    champion's last windows, the monitor's memory growing with every label sent)."""
    monkeypatch.setattr(core_module, "RETIRED_AFTER_S", 0.5)
    live = tmp_path / "live"
    log = LiveLog(str(live), flush_seconds=3600)
    core = MonitorCore("m", str(live), StateStore(str(tmp_path / "state"), "m"), {1: PROFILE, 2: PROFILE}.get,
                       WindowSpec(rows=ROWS, seconds=3600, min_rows=50), clock=lambda: time.time() + 10,
                       labels=LabelJoin(Feedback(str(live), "m"), WindowRows(str(tmp_path / "state"), "m"), horizon=3))

    def answer_by(version, window):
        x = RNG.normal(size=(ROWS, 3)).astype(np.float32)
        log.append("m", FEATURES, f"v{version}w{window}", version, None, x, np.zeros(ROWS, dtype=np.int64), 1.0,
                   proba=np.tile(np.array([[0.8, 0.2]], dtype=np.float32), (ROWS, 1)))
        log.flush()
        time.sleep(0.01)
        send(live, [(f"v{version}w{window}" if r == 0 else f"v{version}w{window}#{r}", 1) for r in range(100)])
        core.step()

    for w in range(3):
        answer_by(1, w)
    old_windows = core.state["window_ts"]["1"]
    held, floors = [], []
    for w in range(12):  # the promotion: version 2 answers everything from here on
        answer_by(2, w)
        time.sleep(0.1)
        held.append(len(core.labels.feedback.labels))
        floors.append(core.state["feedback_floor"])
    log.close()
    assert core.state["feedback_floor"] > max(old_windows.values())  # past the old champion's windows
    assert max(held[-4:]) <= 4 * 100  # the new champion's horizon (three windows) and the newest
    assert not core._holding_floor("1") and core._holding_floor("2")
    restarted = MonitorCore("m", str(live), StateStore(str(tmp_path / "state"), "m"), {1: PROFILE, 2: PROFILE}.get,
                            WindowSpec(rows=ROWS, seconds=3600, min_rows=50), clock=lambda: time.time() + 10,
                            labels=LabelJoin(Feedback(str(live), "m"), WindowRows(str(tmp_path / "state"), "m"),
                                             horizon=3))
    assert restarted.state["last_answer"] == core.state["last_answer"]  # kept across a restart
