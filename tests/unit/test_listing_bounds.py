"""What a pass lists stays a few days' files however long a model is served (no Ray): readers with a
floor skip the day directories before it, the monitor stops listing live-log days every version has
read once they are over, and a label reader whose file is merged away between listing and reading
reads the merge in the same call."""

import time
from datetime import datetime, timezone

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from monitoring.compaction import CompactionSpec
from monitoring.core import MonitorCore
from monitoring.label_compaction import merge_label_files, merged_name
from monitoring.labels import Feedback
from monitoring.live_reader import day_before, day_of, list_files, parquet_files
from monitoring.reference import build_profile
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, labels_table, parse_feedback
from serving.live_log import LiveLog

FEATURES = ("f0", "f1", "f2")
RNG = np.random.default_rng(11)
PROFILE = build_profile(RNG.normal(size=(2_000, 3)), list(FEATURES), np.tile([0.5, 0.5], (2_000, 1)), [0, 1], "fp")
DAY_S = 86_400.0


def send(root, labels):
    path = FeedbackLog(str(root)).write("m", parse_feedback([{"request_id": r, "label": y} for r, y in labels], (0, 1)))
    time.sleep(0.003)
    return path


def test_day_of_a_key_and_the_day_before_a_moment():
    assert day_of("date=2026-12-06/part-1-a.parquet") == "2026-12-06"
    assert day_of("part-1-a.parquet") is None and day_of("other/part-1-a.parquet") is None
    midnight = 1_796_515_200.0  # 2026-12-06T00:00:00Z
    assert day_before(midnight) == "2026-12-05" and day_before(midnight + 1) == "2026-12-06"
    assert day_before(float("inf")) == "9999-12-31"  # no file is wanted: no day directory listed
    assert day_before(float("-inf")) is None and day_before(None) is None


def test_a_reader_with_a_floor_does_not_list_earlier_days(tmp_path):
    fs = pafs.LocalFileSystem()
    base = tmp_path / "_feedback" / "model=m"
    old_day = base / "date=2020-01-01"
    old_day.mkdir(parents=True)
    labels = parse_feedback([{"request_id": "old", "label": 1}], (0, 1))
    pq.write_table(labels_table(labels, datetime.now(timezone.utc)), str(old_day / "unnamed.parquet"))
    (base / "elsewhere").mkdir()
    pq.write_table(labels_table(labels, datetime.now(timezone.utc)), str(base / "elsewhere" / "x.parquet"))
    today = send(tmp_path, [("new", 0)]).split("model=m/", 1)[1]
    everything = {k for _, k in parquet_files(fs, str(base))}
    assert everything == {"date=2020-01-01/unnamed.parquet", "elsewhere/x.parquet", today}
    # a file not named by a gateway counts as new wherever it lies, so only the day's directory leaves it out
    assert set(Feedback(str(tmp_path), "m").new_files([])) == everything
    assert set(Feedback(str(tmp_path), "m", since=time.time() - 60).new_files([])) == {"elsewhere/x.parquet", today}


def test_a_file_merged_away_between_listing_and_reading_is_read_from_its_merge_in_the_same_call(tmp_path):
    sources = [send(tmp_path, [(f"r{i}", i % 2), ("again", i % 2)]).split("model=m/", 1)[1] for i in range(4)]
    expected = Feedback(str(tmp_path), "m")
    expected.catch_up()
    fs, base = pafs.LocalFileSystem(), str(tmp_path / "_feedback" / "model=m")
    reader, real_read = Feedback(str(tmp_path), "m"), Feedback.read

    def merged_first(self, key):  # the monitor merges the four after this reader listed them
        if fs.get_file_info(f"{base}/{sources[0]}").type == pafs.FileType.File:
            tmp = f"{sources[0].rsplit('/', 1)[0]}/.labels-compacting.tmp"
            merge_label_files(fs, base, sources, tmp)
            fs.move(f"{base}/{tmp}", f"{base}/{merged_name(sources[-1])}")
            for source in sources:
                fs.delete_file(f"{base}/{source}")
        return real_read(self, key)

    reader.read = merged_first.__get__(reader)
    reader.catch_up()
    assert reader.labels == expected.labels and len(reader.labels) == 5
    assert merged_name(sources[-1]) in reader.files_read


def answer(log, n=200):
    log.append("m", FEATURES, "w", 1, None, RNG.normal(size=(n, 3)).astype(np.float32),
               np.zeros(n, dtype=np.int64), 1.0, proba=np.tile(np.array([[0.7, 0.3]], dtype=np.float32), (n, 1)))
    log.flush()
    time.sleep(0.003)


def monitor(tmp_path, clock):
    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), {1: PROFILE}.get,
                       WindowSpec(rows=200, seconds=3600, min_rows=50), clock=clock,
                       compaction=CompactionSpec(min_files=2, target_rows=10_000))


def test_a_day_every_version_has_read_leaves_the_state_and_the_listing_once_it_is_over(tmp_path):
    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    for _ in range(3):
        answer(log)
    now = {"t": time.time() + 60}
    core = monitor(tmp_path, lambda: now["t"])
    core.step()
    core.step()  # the files every version read: consumed, merged; the day is not over
    assert core.state["retired_before"] <= day_before(time.time()) and core.state["consumed"]
    scored = dict(core.state["rows_scored"])
    assert sum(scored.values()) == 600
    now["t"] += 3 * DAY_S  # three days on: the day is over and read
    core.step()
    assert core.state["retired_before"] > day_before(time.time() + 1) and core.state["consumed"] == {}
    listed = list_files(str(tmp_path / "live"), "m", from_day=core.state["retired_before"])
    assert listed == [] and list_files(str(tmp_path / "live"), "m")  # on storage still, for retraining
    core.step()
    restarted = monitor(tmp_path, lambda: now["t"])  # a restart lists from the same day: nothing read again
    restarted.step()
    assert restarted.state["rows_scored"] == scored and restarted.state["files"] == []
    log.close()


def test_a_day_with_a_file_some_version_has_not_read_is_kept(tmp_path):
    log = LiveLog(str(tmp_path / "live"), flush_seconds=3600)
    answer(log)
    now = {"t": time.time() + 3 * DAY_S}
    core = monitor(tmp_path, lambda: now["t"])
    core.state["files"] = ["date=2026-01-01/part-1-unread.parquet"]  # listed, not yet read by a version
    core._retire_days()
    assert core.state["retired_before"] == "2026-01-01"
    log.close()


def test_the_latest_labelled_rows_are_read_from_the_newest_days_only(tmp_path, monkeypatch):
    """A retraining's read of its last rows lists and reads the footers of the days it reaches back
    to, newest first (a row lies in its answer's day), not of the log's whole life."""
    import monitoring.labelled as labelled
    from monitoring.labelled import labelled_rows
    from tests.unit.test_label_floor import labelled_log

    root = labelled_log(tmp_path, files=12, rows=20)
    base = tmp_path / "live" / "model=m"
    (today,) = [d for d in base.iterdir() if d.name.startswith("date=")]
    older = base / "date=2020-01-01"
    older.mkdir()
    for path in sorted(today.iterdir())[:6]:  # the first six files as an earlier day's
        path.rename(older / path.name)
    whole = labelled_rows(root, "m")
    footers = []
    real = labelled._row_groups
    monkeypatch.setattr(labelled, "_row_groups", lambda fs, path, mtime: footers.append(path) or real(fs, path, mtime))
    recent = labelled_rows(root, "m", last=30)
    assert not [p for p in footers if "date=2020-01-01" in p] and footers  # the newest day held 30 labelled rows
    assert recent.y.tolist() == labelled_rows(root, "m", last=30, since=None).y.tolist()
    everything = labelled_rows(root, "m", last=10_000)  # more than there are: every day read, oldest day last
    assert any("date=2020-01-01" in p for p in footers)
    assert sorted(everything.frame.index) == list(range(len(whole))) and len(everything) == len(whole)
