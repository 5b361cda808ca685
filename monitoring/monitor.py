"""The monitor actor: one detached, named Ray actor per served model that runs `MonitorCore` on a timer.

Named `handoff-monitor-NAME` in namespace `handoff`, restarted by Ray if it dies (`max_restarts=-1`):
a restarted actor resumes from the state its core committed after every window. It reserves
`cpus` (0.1 by default) and sleeps between passes. `start`, `stop` and `status` are the control
functions the CLI and serving's commands call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

from monitoring.config import MonitoringConfig

NAMESPACE = "handoff"
log = logging.getLogger(__name__)


def status_of(model: str, state: dict, running: bool) -> dict:
    """What a monitor's committed state says it has done (the running actor adds its own counters)."""
    from monitoring.labels import summary

    return {"model": model, "running": running, "windows": state["windows"], "rows_scored": state["rows_scored"],
            "rows_unprofiled": state["rows_unprofiled"], "files_read": state.get("files_base", 0) + len(state["files"]),
            "files_compacted_into": sum(1 for k in state.get("consumed", {}) if "compacted-" in k),
            "files_skipped": list(state["corrupt"]), "files_retrying": dict(state.get("read_retries", {})),
            "drift": state["drift"], "last_window": state["last_window"],
            "live": {v: summary(w) for v, w in state.get("labels", {}).items()}, "loop": state.get("loop"),
            # labels from label files written at or after it are joined (older ones stay on storage, for retraining)
            "label_floor": state.get("feedback_floor"), "label_files_listed": len(state.get("feedback_files", [])),
            "estimated": {v: w[max(w, key=int)] for v, w in state.get("estimated", {}).items() if w},
            "columns": column_figures(state["last_window"]), "tasks": state.get("tasks", {}),
            # a classifier's calibrated probabilities estimate its accuracy before labels come; a regression
            # model's answers carry no such estimate (its prediction drift is scored; its error needs labels)
            "label_free_estimate": {v: "expected accuracy" if t != "regression" else None
                                    for v, t in state.get("tasks", {}).items()}}


def column_figures(window: dict | None) -> dict:
    """The last window's figures of categorical columns and gaps, per figure: its share or effect,
    training's share, whether it drifted and what moved (what `handoff status` shows)."""
    if not window:
        return {}
    return {c: {k: s.get(k) for k in ("effect", "share", "reference_share", "tolerance", "drifted", "detail")}
            for c, s in window["scores"].items() if s.get("effect") is not None}


LOOP_BACKOFF_MAX_S = 300.0  # a loop action that keeps failing is tried again at least this often


def loop_retry_delay(tick_s: float, failures: int) -> float:
    """Seconds until the loop's next tick after `failures` failed ticks in a row: the tick, doubled per
    failure up to `LOOP_BACKOFF_MAX_S` (never below the tick). A failing action (a registry or Serve
    that refuses) is retried, but not every tick for as long as it fails: each try costs the monitor
    clients, calls and a logged traceback."""
    return max(tick_s, min(tick_s * 2 ** min(failures, 30), LOOP_BACKOFF_MAX_S))


def actor_name(model: str) -> str:
    return f"handoff-monitor-{model}"


class Monitor:
    """Runs one model's monitor: a pass every `poll_seconds` on a thread of the actor."""

    def __init__(self, model: str, live_root: str, state_root: str, tracking_uri: str, cfg: dict, port=None):
        """`port` (monitoring/loop_runner.LoopPort) lets the closed loop act; None: the monitor only reports."""
        from monitoring.compaction import CompactionSpec
        from monitoring.core import DriftSettings, LabelJoin, MonitorCore
        from monitoring.labels import Feedback, WindowRows
        from monitoring.mlflow_sink import MlflowSink
        from monitoring.profiles import load_profile
        from monitoring.state_store import StateStore
        from monitoring.windows import WindowSpec
        from training import Registry

        self.model, self.cfg = model, MonitoringConfig.model_validate(cfg)
        registry = Registry(tracking_uri)
        self._new_core = lambda: MonitorCore(model, live_root, StateStore(state_root, model),
                                lambda version: load_profile(registry, model, version),
                                WindowSpec(self.cfg.window_rows, self.cfg.window_seconds, self.cfg.min_rows),
                                DriftSettings(self.cfg.alpha, self.cfg.correction, self.cfg.persistence, self.cfg.min_shift,
                                              self.cfg.tolerance_rate, self.cfg.concept_gap,
                                              self.cfg.concept_min_labels),
                                labels=LabelJoin(Feedback(live_root, model), WindowRows(state_root, model),
                                                 self.cfg.label_windows, self.cfg.label_max_delay_s),
                                compaction=CompactionSpec(self.cfg.compact_min_files, self.cfg.compact_target_rows)
                                if self.cfg.compact else None)
        self.core = self._new_core()
        self.sink = MlflowSink(tracking_uri, model) if self.cfg.mlflow else None
        from monitoring.metrics import MonitorMetrics

        self.metrics = MonitorMetrics()
        self.passes, self.last_error, self.started = 0, None, time.time()
        self.port, self.loop_error, self._last_tick, self._loop_failures = port, None, 0.0, 0
        self._loop_news, self._reload_needed = self._unseen_drift(), False
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._snapshot()
        self._thread = threading.Thread(target=self._run, name="handoff-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._reload_needed and not self._undo_pass():
                    self._stop.wait(self.cfg.poll_seconds)  # no pass on a core its commit does not account for
                    continue
                with self._lock:
                    events = self.core.step()
                    self.passes += 1
                    self.metrics.set_from(self.model, self.core.state, self._buffered())
                    self._snapshot()
                self._publish(events)
                self._loop(events)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a bad pass is reported, undone, and the monitor goes on
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("monitor %s: pass failed: %s", self.model, traceback.format_exc())
                self._undo_pass()
            self._stop.wait(self.cfg.poll_seconds)

    def _undo_pass(self) -> bool:
        """Back to the last commit: a pass that failed half-way (a window scored, its drift event
        not yet built) must not leave in memory a state its saved events do not account for (drift
        marked declared with no `drift_declared` recorded, so never acted on); the rows are read
        and scored again from the saved positions. False while the reload fails (the store
        unreadable): the pass thread then tries again before any pass."""
        try:
            with self._lock:
                self.core = self._new_core()
                self._loop_news = self._unseen_drift()  # a drift committed before the failure is still acted on
                self._snapshot()
            self._reload_needed = False
        except Exception:  # noqa: BLE001 - the store unreadable now: no pass until a reload works
            self._reload_needed = True
            log.error("monitor %s: reloading after a failed pass failed: %s", self.model, traceback.format_exc())
        return not self._reload_needed

    def _unseen_drift(self) -> list[dict]:
        """The committed `drift_declared` events the loop has not looked at yet (from `loop_seen` on)."""
        seen = self.core.state.get("loop_seen", self.core.state["events_logged"])
        return [e for e in self.core.store.events(start=seen) if e["kind"] == "drift_declared"]

    def _buffered(self) -> int:
        return sum(b.rows for b in self.core.windower.buffers.values())

    def _snapshot(self) -> None:
        """What `status` shows, built whole and copied deep (the pass thread mutates nested dicts); called
        with the lock held, after each pass and loop commit, so a status never waits for a pass (on an
        object store a pass can take seconds)."""
        import copy

        self._shown = (copy.deepcopy(status_of(self.model, self.core.state, running=True)), self._buffered())

    def status(self) -> dict:
        """What the monitor has done: windows and rows per version, drift state, the last window (as of
        the last pass or loop step committed)."""
        shown, buffered = self._shown
        return {**shown, "passes": self.passes, "last_error": self.last_error,
                "loop_error": self.loop_error, "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 1), "rows_buffered": buffered}

    def record(self, events: list[dict]) -> None:
        """Append events that happened outside the monitor (a person's decision about the model, such as
        an accepted environment difference) to its event log, the one writer of it."""
        with self._lock:
            self.core._record(events)
            self._snapshot()

    def step_now(self) -> list[dict]:
        """One pass now (tests and `handoff monitor NAME status --refresh`); its events."""
        with self._lock:
            events = self.core.step()
            self._snapshot()
        self._publish(events)
        return events

    def _loop(self, events: list[dict]) -> None:
        """A tick of the closed loop every `loop.tick_seconds` (its actions outside the lock: moving
        traffic takes seconds); its state and records are committed together afterwards."""
        import copy

        from monitoring.loop_runner import tick

        self._loop_news += [e for e in events if e["kind"] == "drift_declared"]
        wait = loop_retry_delay(self.cfg.loop.tick_seconds, self._loop_failures)
        if self.port is None or not self.cfg.loop.enabled or time.time() - self._last_tick < wait:
            return
        self._last_tick = time.time()
        with self._lock:
            state = copy.deepcopy(self.core.state.get("loop"))
            labels = copy.deepcopy(self.core.state.get("labels", {}))
            estimated = copy.deepcopy(self.core.state.get("estimated", {}))
            logged = self.core.state["events_logged"]
        try:
            new_state, records = tick(self.model, state, labels, list(self._loop_news), self.cfg.loop, self.port,
                                      estimated=estimated)
        except Exception as exc:  # noqa: BLE001 - nothing committed: a later tick tries the same step again
            self._loop_failures += 1
            retry = loop_retry_delay(self.cfg.loop.tick_seconds, self._loop_failures)
            self.loop_error = f"{type(exc).__name__}: {exc} (failed {self._loop_failures} time(s) in a row; " \
                              f"next try in {retry:.0f} s)"
            log.error("monitor %s: loop tick failed: %s", self.model, traceback.format_exc())
            return
        self.loop_error, self._loop_failures = None, 0
        with self._lock:
            self.core.state["loop"] = new_state
            self.core.state["loop_seen"] = logged
            # a drift the cooldown deferred is kept, so the loop acts on it once the cooldown ends
            # (a lasting drift is declared once per episode: it would not come again)
            waiting = set(new_state.get("deferred", ())) - set(new_state.get("handled", ()))
            self.core._record(records)
            self._snapshot()
            self._loop_news = [e for e in self._loop_news if e.get("event_id") in waiting]
        if records:
            log.info("monitor %s: loop %s", self.model, [r["kind"] for r in records])
            if self.sink is not None:
                self.sink.tag_loop(records)

    def _publish(self, events: list[dict]) -> None:
        """Log the pass's windows to MLflow, and each drift event's report as artifacts of its run."""
        if self.sink is None:
            return
        self.sink.log(events)
        for event in (e for e in events if e["kind"] == "drift_declared"):
            try:
                self._log_report(event)
            except Exception:  # noqa: BLE001 - a report that fails is logged; `handoff report` can redraw it
                log.error("monitor %s: drift report %s failed: %s", self.model, event["event_id"],
                          traceback.format_exc())

    def _log_report(self, event: dict) -> None:
        import tempfile
        from pathlib import Path

        from monitoring.report import write_report

        with tempfile.TemporaryDirectory() as tmp:
            write_report(event, self.core.store.events(), Path(tmp))
            self.sink.log_artifact_dir(event["version"], tmp, f"drift-reports/{event['event_id']}")

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def start(model: str, live_root: str, state_root: str, tracking_uri: str, cfg: MonitoringConfig, port=None):
    """The model's monitor actor, started if it is not running (idempotent); `port` lets its loop act."""
    import ray

    actor = ray.remote(Monitor).options(
        name=actor_name(model), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=-1, num_cpus=cfg.cpus, resources=dict(cfg.resources), max_concurrency=4)
    return actor.remote(model, live_root, state_root, tracking_uri, cfg.model_dump(), port)


def find(model: str):
    """The running monitor actor of `model`, or None."""
    import ray

    try:
        return ray.get_actor(actor_name(model), namespace=NAMESPACE)
    except ValueError:
        return None


def stop(model: str) -> bool:
    """Stop the model's monitor for good (its state stays); False when none ran."""
    import ray

    actor = find(model)
    if actor is None:
        return False
    try:
        ray.get(actor.shutdown.remote(), timeout=60)
    except Exception:  # noqa: BLE001 - it is killed below either way
        pass
    ray.kill(actor, no_restart=True)
    return True
