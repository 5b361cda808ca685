"""The monitor's own files under faults (no Ray; real files): readers never write, a torn last line
is dropped at start with an event, and a monitor killed with SIGKILL at random points of many
passes neither loses nor re-scores a row, nor stops starting."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from monitoring.state_store import StateStore, parse_lines
from tests.unit.test_monitor_core import PROFILE, core, kinds, write

REPO = Path(__file__).resolve().parents[2]


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_torn_line_is_torn_whether_or_not_a_newline_followed():
    whole = b'{"kind": "a"}\n{"kind": "b"}\n'
    assert parse_lines(whole) == ([{"kind": "a"}, {"kind": "b"}], 0, 0)
    assert parse_lines(whole + b'{"kind": "c", "ro') == ([{"kind": "a"}, {"kind": "b"}], 17, 0)
    assert parse_lines(whole + b'{"kind": "c"\n') == ([{"kind": "a"}, {"kind": "b"}], 13, 0)
    assert parse_lines(b'{"kind": "a"}\n\xff\xfe\n{"kind": "b"}\n') == ([{"kind": "a"}, {"kind": "b"}], 0, 1)


def test_readers_never_write_and_see_only_committed_events(tmp_path):
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    monitor = core(tmp_path)
    monitor.step()
    store = StateStore(str(tmp_path / "state"), "m")
    committed = store.events()
    store.append_events([{"kind": "window_scored", "window": 99}])  # the actor between its two commit steps
    with open(store.events_path, "ab") as f:
        f.write(b'{"kind": "window_sc')  # and mid-append
    before = files_of(tmp_path / "state")
    assert store.events() == committed and store.read_state()["events_logged"] == len(committed)
    from types import SimpleNamespace

    from handoff.monitor_commands import _stored_status

    cfg = SimpleNamespace(state_root=str(tmp_path / "state"))
    assert _stored_status("m", None, cfg)["windows"] == {"1": 1}  # what `handoff status` falls back to
    assert files_of(tmp_path / "state") == before  # a reader wrote nothing


@pytest.mark.parametrize("saved", [b'{"model": "m", "events_lo', b"[1, 2]"])
def test_a_corrupt_state_is_named_and_the_event_log_is_still_read(tmp_path, monkeypatch, saved):
    """A state that is not a JSON object (a disk gave back half of it) is a StateCorrupt naming the file
    (not a bare JSONDecodeError); `handoff events` still lists the intact log, and nothing is rewritten."""
    from typer.testing import CliRunner

    import monitoring.state_store
    from handoff.cli import app
    from monitoring import StateCorrupt

    monkeypatch.setattr(monitoring.state_store.time, "sleep", lambda s: None)
    monkeypatch.chdir(tmp_path)  # no configs/monitoring.yaml: the default state root, under --home
    store = StateStore(str(tmp_path / "home" / "monitor"), "m")
    store.commit({"model": "m"}, [{"kind": "window_scored", "time": "t1", "version": 1, "window": 1, "rows": 5,
                                   "drifted": False, "drifted_features": []}])
    Path(store.state_path).write_bytes(saved)
    before = files_of(tmp_path / "home")
    with pytest.raises(StateCorrupt, match=re.escape(f"the monitor state {store.state_path} is corrupt")):
        store.read_state()
    assert [e["window"] for e in store.events()] == [1]
    listed = CliRunner().invoke(app, ["events", "m", "--home", str(tmp_path / "home")])
    assert listed.exit_code == 0 and "v1 window 1: 5 rows, no drift" in listed.output
    assert files_of(tmp_path / "home") == before


def test_a_torn_last_line_is_dropped_at_start_with_an_event_and_the_monitor_goes_on(tmp_path):
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    core(tmp_path).step()
    store = StateStore(str(tmp_path / "state"), "m")
    with open(store.events_path, "ab") as f:
        f.write(b'{"kind": "window_scored", "rows": 5')  # killed mid-append, or the disk filled
    restarted = core(tmp_path)  # once this raised, and a Ray actor with max_restarts=-1 looped on it
    repaired = kinds(store.events(), "event_log_repaired")
    assert len(repaired) == 1 and repaired[0]["torn_bytes"] == 35 and "torn last line" in repaired[0]["reason"]
    assert store.events_path and store._raw_events().endswith(b"\n")
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    restarted.step()
    assert [w["window"] for w in kinds(store.events(), "window_scored")] == [0, 1]
    core(tmp_path)  # nothing to repair now: no second event
    assert len(kinds(store.events(), "event_log_repaired")) == 1


WORKER = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.unit.test_monitor_core import core
monitor = core(Path({tmp!r}))
print("started", flush=True)
while True:
    monitor.step()
"""


def test_a_monitor_killed_at_random_points_of_many_passes_scores_every_row_once(tmp_path):
    """A worker process steps a monitor over a growing live log; it is killed with SIGKILL at random
    moments (inside a window's commit, between its two steps, mid-append) and started again, many
    times; then one last monitor catches up. Every window once, in order; every row scored or buffered once."""
    rng = random.Random(11)
    script = WORKER.format(repo=str(REPO), tmp=str(tmp_path))
    kills = 0
    for round_ in range(12):
        write(tmp_path / "live", [(1, rng.choice([150, 450, 700]), 0.0, False) for _ in range(3)])
        worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            assert worker.stdout.readline().strip() == "started", "the monitor did not start again"
            time.sleep(rng.uniform(0.0, 0.6))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
            kills += 1
    last = core(tmp_path)
    last.step()
    store = StateStore(str(tmp_path / "state"), "m")
    windows = kinds(store.events(), "window_scored")
    assert [w["window"] for w in windows] == list(range(len(windows))) and len(windows) > 10, \
        [w["window"] for w in windows]
    table = ds.dataset(str(tmp_path / "live"), partitioning="hive").to_table()
    buffered = last.windower.buffers[1].rows if 1 in last.windower.buffers else 0
    assert last.state["rows_scored"]["1"] == sum(w["rows"] for w in windows)
    assert last.state["rows_scored"]["1"] + buffered == table.num_rows  # each row once, none lost
    assert kills == 12 and PROFILE is not None


class FlakyFiles:
    """A pyarrow filesystem whose file opens fail with an I/O error `failures` times (an S3 throttle)."""

    def __init__(self, fs, failures: int):
        self.fs, self.failures, self.opens = fs, failures, 0

    def open_input_file(self, path):
        self.opens += 1
        if self.opens <= self.failures:
            raise OSError("When reading information for key 'live/part-1.parquet': AWS Error SLOW_DOWN")
        return self.fs.open_input_file(path)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def flaky(monkeypatch, failures: int) -> FlakyFiles:
    import monitoring.live_reader as live_reader

    real = live_reader.filesystem
    made = {}

    def patched(root):
        fs, base = real(root)
        made.setdefault("fs", FlakyFiles(fs, failures))
        return made["fs"], base

    monkeypatch.setattr(live_reader, "filesystem", patched)
    monkeypatch.setattr("monitoring.read_retry.FIRST_PAUSE_S", 0.001)
    return made


def test_a_live_log_read_that_fails_three_times_then_succeeds_loses_and_doubles_no_row(tmp_path, monkeypatch):
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    made = flaky(monkeypatch, failures=3)
    monitor = core(tmp_path)
    assert not kinds(monitor.step(), "file_skipped")
    assert made["fs"].opens >= 3 and monitor.state["rows_scored"] == {}  # this pass stopped at the file
    retrying = monitor.state["read_retries"]
    assert len(retrying) == 1 and next(iter(retrying.values()))["passes"] == 1 and "SLOW_DOWN" in str(retrying)
    events = monitor.step()  # the next pass: the fourth open works
    assert [e["rows"] for e in kinds(events, "window_scored")] == [500] and monitor.windower.buffers[1].rows == 100
    assert monitor.state["read_retries"] == {} and monitor.state["corrupt"] == []
    assert not kinds(StateStore(str(tmp_path / "state"), "m").events(), "file_skipped")


def test_a_file_that_fails_every_pass_is_given_up_after_five_and_the_rest_is_read(tmp_path, monkeypatch):
    from monitoring.read_retry import ATTEMPTS, MAX_FAILED_PASSES

    write(tmp_path / "live", [(1, 600, 0.0, False)])
    flaky(monkeypatch, failures=ATTEMPTS * MAX_FAILED_PASSES)  # the first file's opens, every try of 5 passes
    monitor = core(tmp_path)
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    found = [e for _ in range(MAX_FAILED_PASSES) for e in monitor.step()]
    skipped = kinds(found, "file_skipped")
    assert len(skipped) == 1 and "unreadable in 5 passes in a row" in skipped[0]["reason"], found
    assert len(monitor.state["corrupt"]) == 1 and monitor.state["read_retries"] == {}
    assert [e["rows"] for e in kinds(found, "window_scored")] == [500]  # the second file, read once the first was given up


def bare_monitor(tmp_path):
    """The monitor actor's class around a real core, without its thread, MLflow or Ray."""
    import threading

    from monitoring.monitor import Monitor

    monitor = object.__new__(Monitor)
    monitor.model, monitor._lock, monitor.passes, monitor.started = "m", threading.Lock(), 0, time.time()
    monitor.last_error = monitor.loop_error = None
    monitor._reload_needed = False
    monitor._new_core = lambda: core(tmp_path)
    monitor.core = monitor._new_core()
    monitor.sink = None
    monitor._snapshot()
    return monitor


def test_the_monitors_status_is_a_copy_made_whole_under_its_lock_and_never_waits_for_a_pass(tmp_path):
    import threading

    write(tmp_path / "live", [(1, 1200, 0.0, False)])
    monitor = bare_monitor(tmp_path)
    assert monitor.status()["windows"] == {}  # before the first pass: the state as loaded
    monitor.step_now()
    with monitor._lock:  # a pass holds the lock (on an object store, seconds): the status answers meanwhile
        answered = []
        asking = threading.Thread(target=lambda: answered.append(monitor.status()))
        asking.start()
        asking.join(timeout=10)
        assert answered and answered[0]["windows"] == {"1": 2}
    shown = monitor.status()
    frozen = json.dumps(shown, sort_keys=True, default=str)
    monitor.core.state["windows"]["1"] = 999  # the pass thread goes on changing the state's nested dicts
    monitor.core.state["drift"].setdefault("1", {})["consecutive"] = 999
    monitor.core.state["last_window"]["rows"] = -1
    assert json.dumps(shown, sort_keys=True, default=str) == frozen


def test_a_pass_that_fails_half_way_is_undone_back_to_the_last_commit(tmp_path):
    write(tmp_path / "live", [(1, 1200, 0.0, False)])
    monitor = bare_monitor(tmp_path)
    monitor.core.step()
    committed = StateStore(str(tmp_path / "state"), "m").read_state()
    monitor.core.state["drift"]["1"] = {"consecutive": 3, "first_window": 0, "declared": True}  # no event for it
    monitor._undo_pass()
    assert monitor.core.state["drift"] == committed["drift"] and monitor.core.state["windows"] == committed["windows"]
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    monitor.core.step()  # goes on from the commit: rows neither lost nor doubled
    windows = kinds(StateStore(str(tmp_path / "state"), "m").events(), "window_scored")
    assert [w["window"] for w in windows] == [0, 1, 2]


def test_a_drift_committed_before_a_pass_failed_is_still_handed_to_the_loop(tmp_path):
    """A pass commits window A's `drift_declared`, then fails on window B before the loop saw the
    pass's events: after the undo the loop is still handed A's drift (it is declared once per
    episode and would not come again)."""
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    monitor = bare_monitor(tmp_path)
    monitor._loop_news = monitor._unseen_drift()
    monitor.core.step()
    monitor.core._record([{"kind": "drift_declared", "version": 1, "event_id": "drift-a"}])  # committed...
    monitor._undo_pass()  # ...then the pass raised: its events never reached `_loop`
    assert [e["event_id"] for e in monitor._loop_news] == ["drift-a"]


def test_a_bad_line_inside_the_log_still_counts_as_one_committed_line(tmp_path):
    """The state counts lines: a line spoilt inside the log (not its torn end) must not let the first
    uncommitted event pass as committed (its window would be scored again and its event doubled)."""
    store = StateStore(str(tmp_path), "m")
    state = {}
    for n in (1, 2, 3):
        store.commit(state, [{"kind": "e", "n": n}])
    lines = Path(store.events_path).read_bytes().split(b"\n")
    lines[1] = b"\xff not json"
    Path(store.events_path).write_bytes(b"\n".join(lines))
    store.append_events([{"kind": "e", "n": 4}])  # written, never committed
    assert [e["n"] for e in store.events()] == [1, 3]
    state, repaired = store.recover()
    assert [e["n"] for e in store.events()] == [1, 3] and state["events_logged"] == 2
    assert repaired[0]["unparseable_lines"] == 1 and repaired[0]["uncommitted_events"] == 1


def test_while_the_reload_after_a_failed_pass_fails_no_pass_runs_on_the_half_done_core(tmp_path):
    write(tmp_path / "live", [(1, 600, 0.0, False)])
    monitor = bare_monitor(tmp_path)
    monitor.core.step()
    working = monitor._new_core

    def unreadable():
        raise OSError("the state store cannot be read now")

    monitor._new_core = unreadable
    assert monitor._undo_pass() is False and monitor._reload_needed
    monitor._new_core = working
    assert monitor._undo_pass() is True and not monitor._reload_needed


def test_the_event_log_is_kept_in_segments_read_from_a_line_on_and_repaired_in_its_last(tmp_path):
    store = StateStore(str(tmp_path / "state"), "m", segment_bytes=200)
    state = {"model": "m"}
    for i in range(30):
        store.commit(state, [{"kind": "e", "i": i, "pad": "x" * 20}])
    segments = store.segments()
    assert len(segments) > 3 and [f for f, _ in segments] == sorted(f for f, _ in segments) and segments[0][0] == 0
    assert [e["i"] for e in store.events()] == list(range(30))
    assert [e["i"] for e in StateStore(str(tmp_path / "state"), "m").events(start=25)] == [25, 26, 27, 28, 29]
    # killed after a commit began a new segment, before its state was saved: the segment goes at the start
    first_late = 30
    with open(Path(segments[0][1]).parent / f"seg-{first_late:012d}.jsonl", "wb") as f:
        f.write(b'{"kind": "late"}\n')
    with open(segments[-1][1], "ab") as f:
        f.write(b'{"kind": "torn", "i')
    saved, repaired = StateStore(str(tmp_path / "state"), "m", segment_bytes=200).recover()
    assert saved["events_logged"] == 30 and repaired[0]["torn_bytes"] == 19 and repaired[0]["uncommitted_events"] == 1
    assert store.segments() == segments and [e["i"] for e in store.events()] == list(range(30))


def test_a_one_file_log_of_an_earlier_version_is_read_and_becomes_the_first_segment(tmp_path):
    directory = tmp_path / "state" / "model=m"
    directory.mkdir(parents=True)
    (directory / "events.jsonl").write_bytes(b'{"kind": "a"}\n{"kind": "b"}\n')
    (directory / "state.json").write_text(json.dumps({"model": "m", "events_logged": 2}))
    assert [e["kind"] for e in StateStore(str(tmp_path / "state"), "m").events()] == ["a", "b"]
    store = StateStore(str(tmp_path / "state"), "m")
    state, repaired = store.recover()
    assert repaired == [] and not (directory / "events.jsonl").exists()
    store.commit(state, [{"kind": "c"}])
    assert [e["kind"] for e in store.events()] == ["a", "b", "c"] and store.segments()[0][0] == 0


def test_a_state_read_torn_by_its_replacement_on_an_object_store_is_read_again(tmp_path):
    """pyarrow reads an object in ranges: a read overlapping a put can mix both versions (CI saw
    `handoff events` fail so on S3). The reader reads again; the writer's put is whole."""
    store = StateStore(str(tmp_path / "state"), "m")
    store.save({"model": "m", "events_logged": 0, "pad": "x" * 100})
    whole = Path(store.state_path).read_bytes()
    real, reads = store.fs, []

    class Tearing:
        def __getattr__(self, name):
            return getattr(real, name)

        def open_input_stream(self, path):
            reads.append(path)
            if len(reads) == 1:
                import io

                class Torn(io.BytesIO):
                    def __enter__(self):
                        return self

                return Torn(whole[:40] + b'"y"' + whole[60:])  # the old version's start, the new one's end
            return real.open_input_stream(path)

    store.fs = Tearing()
    assert store.read_state()["model"] == "m" and len(reads) == 2


def test_a_loop_action_that_keeps_failing_is_retried_less_and_less_often(tmp_path, monkeypatch):
    """The loop backs off a failing action (doubling from the tick to five minutes) instead of paying
    for it every tick; one success brings the tick back."""
    import monitoring.loop_runner as loop_runner
    from monitoring.config import MonitoringConfig
    from monitoring.monitor import LOOP_BACKOFF_MAX_S, loop_retry_delay

    assert [loop_retry_delay(5, n) for n in (0, 1, 2, 3)] == [5, 10, 20, 40]
    assert loop_retry_delay(5, 40) == LOOP_BACKOFF_MAX_S and loop_retry_delay(600, 3) == 600
    calls, now = [], [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])

    def failing(*args, **kwargs):
        calls.append(now[0])
        raise RuntimeError("the registry refused")

    monkeypatch.setattr(loop_runner, "tick", failing)
    monitor = bare_monitor(tmp_path)
    monitor.cfg = MonitoringConfig.model_validate({"loop": {"enabled": True, "tick_seconds": 5}})
    monitor.port, monitor._loop_news, monitor._last_tick, monitor._loop_failures = object(), [], 0.0, 0
    for _ in range(130):  # eleven minutes, a look every five seconds
        monitor._loop([])
        now[0] += 5
    assert [round(t - 1000) for t in calls] == [0, 10, 30, 70, 150, 310, 610], calls
    assert "failed 7 time(s) in a row; next try in 300 s" in monitor.loop_error

    def succeeding(model, state, *args, **kwargs):
        calls.append(now[0])
        return {"stage": "idle", "handled": [], "deferred": []}, []

    monkeypatch.setattr(loop_runner, "tick", succeeding)
    now[0] += 300
    monitor._loop([])
    assert monitor.loop_error is None and monitor._loop_failures == 0
