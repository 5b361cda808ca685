"""Label files merged by the monitor (no Ray): the same labels in the same order from fewer files,
for the monitor, for a fresh reader and for a reader kept between calls; a crash at any step of a
merge loses and doubles no label."""

import time

import pytest

from monitoring.compaction import CompactionSpec
from monitoring.core import LABEL_SETTLE_S, LabelJoin, MonitorCore
from monitoring.label_compaction import generation_of, merged_name, plan_label_merges, stamp_of
from monitoring.labels import Feedback, WindowRows
from monitoring.state_store import StateStore
from monitoring.windows import WindowSpec
from serving.feedback import FeedbackLog, parse_feedback


def send(tmp_path, labels):
    FeedbackLog(str(tmp_path / "live")).write("m", parse_feedback(
        [{"request_id": rid, "label": label} for rid, label in labels], (0, 1)))
    time.sleep(0.002)  # each file its own millisecond: names in the order they were sent


def monitor(tmp_path, spec=CompactionSpec(min_files=4, target_rows=1_000)):
    return MonitorCore("m", str(tmp_path / "live"), StateStore(str(tmp_path / "state"), "m"), {}.get,
                       WindowSpec(rows=500, seconds=3600, min_rows=100), clock=lambda: time.time() + LABEL_SETTLE_S + 1,
                       labels=LabelJoin(Feedback(str(tmp_path / "live"), "m"), WindowRows(str(tmp_path / "state"), "m")),
                       compaction=spec)


def label_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "live" / "_feedback").rglob("*") if p.is_file())


def fresh_labels(tmp_path):
    reader = Feedback(str(tmp_path / "live"), "m")
    reader.catch_up()
    return reader.labels


def test_small_files_of_a_day_schema_and_generation_are_planned_in_name_order():
    spec = CompactionSpec(min_files=2, target_rows=10)
    files = [("d1/a", 3, "s"), ("d1/b", 3, "s"), ("d1/big", 20, "s"), ("d1/c", 3, "s"), ("d1/bad", 0, None),
             ("d1/d", 3, "s"), ("d1/e", 3, "t"), ("d1/f", 3, "t"), ("d2/g", 5, "t"), ("d2/h", 5, "t"), ("d2/i", 1, "t")]
    # no merge takes a big file, an unparseable one, another schema's or another day's; none passes 10 rows
    assert plan_label_merges(files, spec) == [["d1/a", "d1/b"], ["d1/c", "d1/d"], ["d1/e", "d1/f"], ["d2/g", "d2/h"]]
    # runs of three: a, b and c; g and h hold all one merge may (10 rows)
    assert plan_label_merges(files, CompactionSpec(min_files=3, target_rows=10)) == [["d1/a", "d1/b", "d1/c"],
                                                                                     ["d2/g", "d2/h"]]


def test_merges_take_min_files_of_one_generation_at_a_time_past_stragglers():
    spec = CompactionSpec(min_files=2, target_rows=100)
    files = [("d/a-m1", 4, "s"), ("d/late", 1, "s"), ("d/b-m1", 4, "s"), ("d/c-m1", 4, "s"), ("d/d", 1, "s"),
             ("d/e", 1, "s"), ("d/g-m2", 8, "s")]
    # two of a generation make one of the next: a label is rewritten once a generation, not once a pass;
    # a file that appeared late (it sorts between merges) is merged with its own generation's next files
    assert plan_label_merges(files, spec) == [["d/a-m1", "d/b-m1"], ["d/late", "d/d"]]
    assert generation_of("d/part-1-x-m12.parquet") == 12 and generation_of("d/part-1-x.parquet") == 0


def test_a_merge_is_named_beside_its_last_source_and_keeps_its_stamp():
    first = merged_name("date=2026-12-03/part-1764770000123-0a1b2c3d.parquet")
    assert first == "date=2026-12-03/part-1764770000123-0a1b2c3d-m1.parquet"
    assert merged_name(first) == "date=2026-12-03/part-1764770000123-0a1b2c3d-m2.parquet"
    assert stamp_of(first) == stamp_of("date=2026-12-03/part-1764770000123-0a1b2c3d.parquet") == 1764770000.123
    assert stamp_of("elsewhere.parquet") is None


def test_merged_label_files_give_every_reader_the_same_latest_labels(tmp_path):
    kept = Feedback(str(tmp_path / "live"), "m")  # a reader kept between calls (the canary's)
    for i in range(6):
        send(tmp_path, [(f"r{i}", i % 2), ("relabelled", i % 2)])
    kept.catch_up()  # has read the first six files
    for i in range(6, 12):
        send(tmp_path, [(f"r{i}", i % 2), ("relabelled", i % 2)])
    expected = fresh_labels(tmp_path)
    assert expected["relabelled"] == 1 and len(expected) == 13
    send(tmp_path, [("relabelled", 0), ("r0", 1)])  # a correction, sent last
    corrected = {**expected, "relabelled": 0, "r0": 1}
    read_all = Feedback(str(tmp_path / "live"), "m")  # another, that has read every file, the correction too
    read_all.catch_up()
    core = monitor(tmp_path)
    events = core.step()  # runs of four files of a generation merged as soon as read; the thirteenth waits
    merged = [e for e in events if e["kind"] == "files_compacted" and e["what"] == "labels"]
    assert [e["files"] for e in merged] == [4, 4, 4] and len(label_files(tmp_path)) == 4
    assert core.state["feedback_files"] == sorted([e["output"] for e in merged] + core.state["feedback_files"][-1:])
    assert set(core.state["feedback_shapes"]) == set(core.state["feedback_files"])
    assert core.labels.feedback.labels == corrected == fresh_labels(tmp_path)
    # the kept reader meets the merges after the correction: of the six files it had read (the first
    # merge's four, two of the second's) none is applied again, the six it had not are (the
    # correction's ids are not among them), the correction stands
    kept.catch_up()
    assert kept.labels == corrected
    assert read_all.catch_up() == 3 and read_all.labels == corrected  # the merges read, none of their rows applied
    restarted = monitor(tmp_path)  # a restart reads the merge and the correction back
    restarted.step()
    assert restarted.labels.feedback.labels == corrected


def test_label_files_counted_but_not_read_back_at_a_start_are_not_merged(tmp_path):
    for i in range(8):
        send(tmp_path, [(f"r{i}", 1)])
    core = monitor(tmp_path, CompactionSpec(min_files=4, target_rows=1_000))
    core._compact_labels = lambda: []  # read, listed, nothing merged yet
    core.step()
    del core._compact_labels
    listed = sorted(core.state["feedback_files"])
    core._labels_unread = [listed[2]]  # a file a restart could not read back (an I/O error)
    assert core._compact_labels() == []  # merged now, it would never be read: no run reaches past it
    core._labels_unread = []
    assert [e["files"] for e in core._compact_labels()] == [4, 4]


def test_label_files_are_merged_once_read_and_merges_merge_a_generation_up(tmp_path):
    for i in range(5):
        send(tmp_path, [(f"r{i}", 1)])
    core = monitor(tmp_path)
    core.step()  # four merged at once, the fifth waits for three more
    assert len(label_files(tmp_path)) == 2 and len(core.state["feedback_files"]) == 2
    for i in range(5, 16):
        send(tmp_path, [(f"r{i}", int(i < 5))])
    core.step()  # sixteen files: four of the first generation
    assert [f.rsplit("-", 1)[-1] for f in label_files(tmp_path)] == ["m1.parquet"] * 4
    core.step()  # which make one of the second
    (only,) = label_files(tmp_path)
    assert only.endswith("-m2.parquet") and fresh_labels(tmp_path) == {f"r{i}": int(i < 5) for i in range(16)}
    assert len(core.state["feedback_files"]) == 1
    assert core.labels.feedback.labels == fresh_labels(tmp_path)


@pytest.mark.parametrize("crash", ["after the merge is written", "after it is recorded", "after it is moved",
                                   "after a source is deleted"])
def test_a_crash_inside_a_label_merge_loses_and_doubles_no_label(tmp_path, crash, monkeypatch):
    import monitoring.core as core_module

    for i in range(6):
        send(tmp_path, [(f"r{i}", i % 2), ("again", i % 2)])
    expected = fresh_labels(tmp_path)
    core = monitor(tmp_path)
    real_merge, real_save = core_module.merge_label_files, core.store.save

    class Died(BaseException):  # the process ends: nothing in the monitor catches it
        pass

    def die(*args, **kwargs):
        raise Died("the actor died")

    if crash == "after the merge is written":
        monkeypatch.setattr(core_module, "merge_label_files", lambda *a: (real_merge(*a), die())[0])
    elif crash == "after it is recorded":
        core.store.save = lambda state: (real_save(state), die() if state["label_compaction"] else None)
    elif crash == "after it is moved":
        core._finish_label_merge = die
    else:  # the restart reads the merge for the deleted source's labels (it once only marked the merge read)
        real_delete = core._delete_label_file
        core._delete_label_file = lambda key: (real_delete(key), die())
    with pytest.raises(Died):
        core.step()
    monkeypatch.setattr(core_module, "merge_label_files", real_merge)
    assert fresh_labels(tmp_path) == expected  # a reader in between sees every label once, the latest
    restarted = monitor(tmp_path)
    restarted.step()
    assert restarted.state["label_compaction"] is None and restarted.labels.feedback.labels == expected
    assert fresh_labels(tmp_path) == expected and len(label_files(tmp_path)) == 3  # four merged, two wait
    assert len(restarted.state["feedback_files"]) == 3
    leftovers = [p.name for p in (tmp_path / "live").rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []  # a merge written but not recorded is swept at the restart
