"""One model's monitor without Ray: read new live-log rows, cut windows, score, decide, persist.

`MonitorCore.step()` is one pass: it reads the files written since the last pass, scores every
window that is due against the reference profile of the version that answered its rows, runs the
drift decision, and saves its state after every window, so a restarted monitor (a new
`MonitorCore` over the same store) neither scores a row twice nor skips one. The Ray actor
(monitoring/monitor.py) only calls `step` on a timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow.fs as pafs

from cluster.storage import filesystem

from monitoring.categorical import size_bucket
from monitoring.compaction import CompactionSpec, describe, merge_files, plan_merges
from monitoring.decision import DriftState, decide
from monitoring.estimation import expected_accuracy
from monitoring.label_compaction import merge_label_files, merged_name, plan_label_merges, shape_of, stamp_of
from monitoring.labels import CLOCK_SKEW_S, Feedback, WindowRows, epoch_s, label_stats
from monitoring.live_reader import START, CorruptFile, Position, day_before, day_of, list_files, model_dir, read_rows
from monitoring.read_retry import RetryLater, TransientRead, after_failed_pass, read_with_retries
from monitoring.reference import ReferenceProfile
from monitoring.report import category_shares, drift_reason, histograms, shown_features
from monitoring.scoring import WindowScores, score_window
from monitoring.state_store import StateStore
from monitoring.tolerance import shift_tolerance
from monitoring.windows import Window, Windower, WindowSpec

END_ROW = 1 << 62  # a row index after every row of a file: "the whole file"
#: a live-log day directory this long past gets no new file (a gateway writes a row into its answer's
#: day, at most a buffer's flush later): once every version has read it, it is no longer listed
RETIRE_AFTER_S = 2 * 86_400.0
LABEL_SETTLE_S = 300.0  # a label file may appear this long after its name's moment (an upload): the floor waits for it
#: a version that has answered nothing for this long while another answers was taken out of traffic: its
#: scored windows hold the label floor no more (labels for them later than that are not joined; they stay
#: on storage, for retraining). A canary at 1% of a slow model still answers every few seconds.
RETIRED_AFTER_S = 600.0


@dataclass(frozen=True)
class DriftSettings:
    alpha: float = 0.05
    correction: str = "benjamini-hochberg"
    persistence: int = 3
    min_shift: float = 0.1
    tolerance_rate: float = 0.001    # share of windows whose noise may exceed the calibrated tolerance
    concept_gap: float = 0.05        # realised accuracy this far from the estimate: concept drift suspected
    concept_min_labels: int = 200


@dataclass(frozen=True)
class LabelJoin:
    """Where labels come from and where scored windows' rows are kept for them, over the last `horizon` windows."""

    feedback: Feedback
    window_rows: WindowRows
    horizon: int = 50
    max_delay_s: float = 86_400.0  # a label sent later than this after its answer is not joined (retraining still reads it)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class MonitorCore:
    def __init__(self, model: str, live_root: str, store: StateStore,
                 profile_of: Callable[[int], ReferenceProfile | None], spec: WindowSpec = WindowSpec(),
                 drift: DriftSettings = DriftSettings(), clock: Callable[[], float] = time.time,
                 labels: LabelJoin | None = None, compaction: CompactionSpec | None = None):
        self.model, self.live_root, self.store, self.compaction = model, live_root, store, compaction
        self.profile_of, self.spec, self.drift, self.clock, self.labels = profile_of, spec, drift, clock, labels
        self._profiles: dict[int, ReferenceProfile | None] = {}
        self._tolerance_cache: dict[tuple[int, int], dict[str, float]] = {}
        saved, repaired = store.recover()
        saved = saved or {}
        self.state = {
            "model": model,
            # files in read order from number `files_base` on (a file's number: base + its index); the files
            # before it every version has read: kept in `consumed` (rows, schema id) until compacted away
            "files": saved.get("files", []),
            "files_base": saved.get("files_base", 0),
            "consumed": saved.get("consumed", {}),
            "retired_before": saved.get("retired_before"),  # day directories before it: all read, not listed
            "compaction": saved.get("compaction"),  # a merge under way: finished (or undone) on restart
            "read_head": saved.get("read_head", START.to_json()),
            "next": saved.get("next", {}),
            "windows": saved.get("windows", {}),
            "rows_scored": saved.get("rows_scored", {}),
            "rows_unprofiled": saved.get("rows_unprofiled", {}),
            "drift": saved.get("drift", {}),
            "corrupt": saved.get("corrupt", []),
            "last_window": saved.get("last_window"),
            "events_logged": saved.get("events_logged", 0),
            "feedback_files": saved.get("feedback_files", []),
            "feedback_shapes": saved.get("feedback_shapes", {}),  # label file → (rows, schema id), for merges
            "label_compaction": saved.get("label_compaction"),  # a label-file merge under way
            # label files written before it can label no row the monitor still joins: not listed, not read
            "feedback_floor": saved.get("feedback_floor"),
            "window_ts": saved.get("window_ts", {}),  # version → window → when its earliest row was answered (epoch s)
            "last_answer": saved.get("last_answer", {}),  # version → its latest answer read (epoch s)
            "labels": saved.get("labels", {}),  # version → window → label_stats
            "estimated": saved.get("estimated", {}),  # version → window → expected accuracy
            "tasks": saved.get("tasks", {}),  # version → classification | regression (its profile's)
            "concept_flagged": saved.get("concept_flagged", {}),  # version → windows with a concept-drift event
            "loop": saved.get("loop"),  # the closed loop's state (monitoring/loop.py LoopState)
            # events the loop has looked at (never past the log: one cut short is counted down at recovery)
            "loop_seen": min(saved.get("loop_seen", saved.get("events_logged", 0)), saved.get("events_logged", 0)),
        }
        self.state["read_retries"] = saved.get("read_retries", {})  # file → passes failed in a row, last error
        self._labels_unread: list[str] = []  # label files already counted that did not read back at start
        self._labels_behind = False  # a label file listed this pass waits for a later one (an I/O error)
        if labels is not None:  # the labels the joins still need, back in memory, in name order (the readers' order)
            if self.state["feedback_floor"] is not None:
                labels.feedback.forget_before(self.state["feedback_floor"])
            for key in sorted(self.state["feedback_files"]):
                try:
                    read_with_retries(lambda: labels.feedback.read(key))
                except TransientRead:
                    self._labels_unread.append(key)
        self._new_windows: list[tuple[int, int]] = []
        if self.state["compaction"] is not None:
            self._finish_merge()
        if labels is not None and self.state["label_compaction"] is not None:
            self._finish_label_merge()
        if labels is not None and compaction is not None:
            self._sweep_unrecorded_label_merges()
        if compaction is not None:
            self._sweep_unrecorded_merges()
        skip = {int(v): Position.from_json(p) for v, p in self.state["next"].items()}
        self.windower = Windower(spec, skip_before=skip)
        floor = self.floor()  # a restart re-reads the files from the floor on (a whole file read: after it)
        self._read_upto = max(floor.file if floor.row >= END_ROW else floor.file - 1, -1)
        self.features: list[str] | None = None   # the live log's numeric feature columns
        self.categorical: list[str] = []          # and its categorical ones
        if repaired:  # committed with the state as saved (its positions untouched: nothing re-read yet)
            self.store.commit(self.state, [{"time": _now_iso(), "model": model, **e} for e in repaired])

    # --- positions ------------------------------------------------------------------------------
    @property
    def read_head(self) -> Position:
        return Position.from_json(self.state["read_head"])

    def floor(self) -> Position:
        """The first row any version still needs: where a restarted monitor starts reading."""
        positions = [Position.from_json(p) for p in self.state["next"].values()]
        return min(positions, default=self.read_head)

    # --- one pass -------------------------------------------------------------------------------------
    def step(self) -> list[dict]:
        """Read what is new, score every window that is due; the events of this pass, oldest first.
        State and events are saved after every window."""
        events: list[dict] = []
        known = set(self.state["files"]) | set(self.state["consumed"]) | set(self.state["corrupt"])
        for key in list_files(self.live_root, self.model, now=self.clock(), from_day=self.state["retired_before"]):
            if key not in known:  # a new file: numbered after every file read so far
                known.add(key)
                self.state["files"].append(key)
        base = self.state["files_base"]
        for number in range(max(self._read_upto + 1, base), base + len(self.state["files"])):
            key = self.state["files"][number - base]
            if key not in self.state["corrupt"]:
                try:
                    events += self._read(key, number)
                except RetryLater:  # an I/O error every try: nothing after it is read before it
                    break
            self._read_upto = number
            if Position(number, END_ROW) > self.read_head:
                self.state["read_head"] = Position(number, END_ROW).to_json()
        now = np.datetime64(int(self.clock() * 1000), "ms")
        for window in self.windower.ready(now):
            events += self._record(self._score(window))
        if self.labels is not None:
            events += self._record(self._join_labels())
            self._raise_label_floor()
        self._record([])  # the read head moved: saved even when no window was due
        if self.compaction is not None:
            events += self._record(self._compact())
            if self.labels is not None:
                events += self._record(self._compact_labels())
        return events

    # --- label-file compaction ------------------------------------------------------------------------
    def _compact_labels(self) -> list[dict]:
        """Merge the label files read so far in runs of consecutive small files of one generation
        (monitoring/label_compaction.py): the same labels in the same order, fewer files. As soon as
        they are read: a file that appears late (an upload that took long) lies beside a merge, not
        inside it, and every reader applies a label by when its file was written, not by where its
        name sorts, so the merge and the late file read as their sources did."""
        shapes, feedback, files = self.state["feedback_shapes"], self.labels.feedback, []
        for key in sorted(self.state["feedback_files"]):
            if key in self._labels_unread:  # counted, not read back at start: merged, it would never be read
                break
            if key not in shapes:  # read before shapes were kept, or skipped as unparseable
                try:
                    shapes[key] = list(shape_of(feedback.fs, feedback.dir, key))
                except OSError:
                    break
            files.append((key, *shapes[key]))
        events = []
        for sources in plan_label_merges(files, self.compaction):
            events += self._merge_labels(sources)
        return events

    def _merge_labels(self, sources: list[str]) -> list[dict]:
        """Merge label files `sources`: written unlisted, recorded, moved into place, sources deleted."""
        day = sources[0].rsplit("/", 1)[0] + "/" if "/" in sources[0] else ""
        output = merged_name(sources[-1])
        pending = {"tmp": f"{day}.labels-compacting-{output.rsplit('/', 1)[-1]}.tmp", "output": output,
                   "sources": sources, "rows": sum(self.state["feedback_shapes"][k][0] for k in sources)}
        fs, base = self.labels.feedback.fs, self.labels.feedback.dir
        try:
            rows, schema = merge_label_files(fs, base, sources, pending["tmp"])
        except Exception as exc:  # noqa: BLE001 - a merge that fails leaves the sources as they are
            self._delete_label_file(pending["tmp"])
            return [{"kind": "compaction_failed", "files": len(sources), "what": "labels",
                     "reason": f"{type(exc).__name__}: {exc}"}]
        if rows != pending["rows"]:
            self._delete_label_file(pending["tmp"])
            return [{"kind": "compaction_failed", "files": len(sources), "what": "labels",
                     "reason": f"merged {rows} labels, the sources have {pending['rows']}"}]
        pending["schema"] = schema
        self.state["label_compaction"] = pending
        self.store.save(self.state)
        fs.move(f"{base}/{pending['tmp']}", f"{base}/{output}")
        return self._finish_label_merge()

    def _finish_label_merge(self) -> list[dict]:
        """Complete the recorded label merge: if its file is in place, it replaces its sources in the
        list of files read and the sources go; else it is undone."""
        pending = self.state["label_compaction"]
        fs, base = self.labels.feedback.fs, self.labels.feedback.dir
        events = []
        if fs.get_file_info(f"{base}/{pending['output']}").type == pafs.FileType.File:
            gone = set(pending["sources"])
            self.state["feedback_files"] = sorted({k for k in self.state["feedback_files"] if k not in gone}
                                                  | {pending["output"]})
            self.state["feedback_shapes"][pending["output"]] = [pending["rows"], pending["schema"]]
            try:  # its sources' labels this reader has not applied (some deleted before a restart read them)
                read_with_retries(lambda: self.labels.feedback.read(pending["output"]))
            except TransientRead:
                self._labels_unread.append(pending["output"])
            for key in pending["sources"]:
                self._delete_label_file(key)
                self.state["feedback_shapes"].pop(key, None)
            events.append({"kind": "files_compacted", "what": "labels", "files": len(pending["sources"]),
                           "rows": pending["rows"], "output": pending["output"]})
        else:
            self._delete_label_file(pending["tmp"])
        self.state["label_compaction"] = None
        self.store.save(self.state)
        return events

    def _sweep_unrecorded_label_merges(self) -> None:
        """Delete label merges written but never recorded (the monitor died between the two)."""
        fs, base = self.labels.feedback.fs, self.labels.feedback.dir
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
            if info.base_name.startswith(".labels-compacting-") and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)

    def _delete_label_file(self, key: str) -> None:
        fs, base = self.labels.feedback.fs, self.labels.feedback.dir
        try:
            fs.delete_file(f"{base}/{key}")
        except FileNotFoundError:
            pass

    # --- compaction -------------------------------------------------------------------------------------
    def _compact(self) -> list[dict]:
        """Move the files every version has read out of the numbered list, then merge small ones."""
        floor = self.floor()
        limit = floor.file + (1 if floor.row >= END_ROW else 0)  # numbers below it are read by every version
        files, consumed = self.state["files"], self.state["consumed"]
        while self.state["files_base"] < limit and files:
            key = files.pop(0)
            self.state["files_base"] += 1
            if key not in self.state["corrupt"]:
                try:
                    consumed[key] = list(describe(self.live_root, self.model, key))
                except Exception:  # noqa: BLE001 - gone or unreadable now: nothing to merge
                    pass
        events = []
        for sources in plan_merges([(k, rows, schema) for k, (rows, schema) in consumed.items()], self.compaction):
            events += self._merge(sources)
        self._retire_days()
        return events

    def _retire_days(self) -> None:
        """Stop listing the day directories that are over (`RETIRE_AFTER_S`) and that every version has
        read: their files leave `consumed`, and the state and each pass's listing stay a few days' files
        however long the model is served. A day that still holds a file some version has not read, or
        a merge under way, is kept."""
        cutoff = day_before(self.clock() - RETIRE_AFTER_S + 1)  # the day RETIRE_AFTER_S ago
        held = [day_of(k) for k in self.state["files"]]
        if self.state["compaction"] is not None:
            held += [day_of(k) for k in self.state["compaction"]["sources"]]
        if None in held:  # a file outside a day directory: nothing can be said of its days
            return
        before = min([cutoff, *held])
        if self.state["retired_before"] is not None and before <= self.state["retired_before"]:
            return
        self.state["retired_before"] = before
        self.state["consumed"] = {k: v for k, v in self.state["consumed"].items()
                                  if day_of(k) is None or day_of(k) >= before}

    def _merge(self, sources: list[str]) -> list[dict]:
        """Merge `sources` into one file: written unlisted, recorded, moved into place, sources deleted."""
        day = sources[0].rsplit("/", 1)[0] + "/" if "/" in sources[0] else ""
        tag = f"{int(self.clock() * 1000)}-{len(self.state['consumed'])}"
        pending = {"tmp": f"{day}.compacting-{tag}.tmp", "output": f"{day}compacted-{tag}.parquet",
                   "sources": sources, "rows": sum(self.state["consumed"][k][0] for k in sources),
                   "schema": self.state["consumed"][sources[0]][1]}
        try:
            rows = merge_files(self.live_root, self.model, sources, pending["tmp"])
        except Exception as exc:  # noqa: BLE001 - a merge that fails leaves the sources as they are
            self._delete(pending["tmp"])
            return [{"kind": "compaction_failed", "files": len(sources), "reason": f"{type(exc).__name__}: {exc}"}]
        if rows != pending["rows"]:
            self._delete(pending["tmp"])
            return [{"kind": "compaction_failed", "files": len(sources),
                     "reason": f"merged {rows} rows, the sources have {pending['rows']}"}]
        self.state["compaction"] = pending
        self.store.save(self.state)
        fs, base = filesystem(model_dir(self.live_root, self.model))
        fs.move(f"{base}/{pending['tmp']}", f"{base}/{pending['output']}")
        return self._finish_merge()

    def _finish_merge(self) -> list[dict]:
        """Complete the recorded merge: if its file is in place, the sources go; else it is undone."""
        pending = self.state["compaction"]
        fs, base = filesystem(model_dir(self.live_root, self.model))
        events = []
        if fs.get_file_info(f"{base}/{pending['output']}").type == pafs.FileType.File:
            self.state["consumed"][pending["output"]] = [pending["rows"], pending["schema"]]
            for key in pending["sources"]:
                self._delete(key)
                self.state["consumed"].pop(key, None)
            events.append({"kind": "files_compacted", "files": len(pending["sources"]), "rows": pending["rows"],
                           "output": pending["output"]})
        else:
            self._delete(pending["tmp"])
        self.state["compaction"] = None
        self.store.save(self.state)
        return events

    def _sweep_unrecorded_merges(self) -> None:
        """Delete merges written but never recorded (the monitor died between the two): no reader lists them."""
        fs, base = filesystem(model_dir(self.live_root, self.model))
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
            if info.base_name.startswith(".compacting-") and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)

    def _delete(self, key: str) -> None:
        fs, base = filesystem(model_dir(self.live_root, self.model))
        try:
            fs.delete_file(f"{base}/{key}")
        except FileNotFoundError:
            pass

    def _read(self, key: str, number: int) -> list[dict]:
        """Buffer one file's rows; a file that cannot be read, or has other features, is skipped with an event."""
        try:
            rows, features = read_with_retries(lambda: read_rows(self.live_root, self.model, key, number))
        except CorruptFile as exc:
            reason = str(exc)
        except TransientRead as exc:
            reason = after_failed_pass(self.state["read_retries"], key, exc)
            if reason is None:
                raise RetryLater(key) from None
        else:
            self.state["read_retries"].pop(key, None)
            columns = [*features, *rows.categories]
            if self.features is None or columns == [*self.features, *self.categorical]:
                self.features, self.categorical = features, list(rows.categories)
                self.windower.add(rows)
                self._note_answers(rows)
                return []
            reason = f"{key}: its features {columns} are not the model's {[*self.features, *self.categorical]}"
        self.state["corrupt"].append(key)
        return self._record([{"kind": "file_skipped", "file": key, "reason": reason}])

    def _note_answers(self, rows) -> None:
        """Each version's latest answer among `rows` (what tells a retired version from a served one)."""
        last = self.state["last_answer"]
        for version in np.unique(rows.version):
            latest = epoch_s(rows.ts[rows.version == version].max())
            last[str(int(version))] = max(last.get(str(int(version)), latest), latest)

    def _holding_floor(self, version: str) -> bool:
        """Whether `version`'s scored windows still hold the label floor: not while it has answered nothing
        for `RETIRED_AFTER_S` behind the latest answer of any version (it left the traffic)."""
        last = self.state["last_answer"]
        return version not in last or last[version] >= max(last.values()) - RETIRED_AFTER_S

    def _profile(self, version: int) -> ReferenceProfile | None:
        if version not in self._profiles:
            self._profiles[version] = self.profile_of(version)
        return self._profiles[version]

    def _score(self, window: Window) -> list[dict]:
        """Score one window (or count it, for a version without a usable profile) and move its version's
        position past it."""
        v = str(window.version)
        profile = self._profile(window.version)
        if profile is not None and (list(profile.features) != self.features
                                    or sorted(profile.categories) != sorted(self.categorical)):
            reason = (f"its reference profile has features {[*profile.features, *profile.categories]}, the live log "
                      f"{[*self.features, *self.categorical]}")
            profile = None
        else:
            reason = "it has no reference profile (`handoff monitor profile` makes one)"
        if profile is None:
            self.state["rows_unprofiled"][v] = self.state["rows_unprofiled"].get(v, 0) + window.rows
            events = [{"kind": "window_unprofiled", "version": window.version, "rows": window.rows,
                       "reason": f"version {window.version}: {window.rows} row(s) counted, not scored: {reason}"}]
        else:
            index = self.state["windows"].get(v, 0)
            scores = score_window(profile, self.features, window.x, prediction=window.prediction,
                                  alpha=self.drift.alpha, correction=self.drift.correction,
                                  min_shift=self.drift.min_shift,
                                  tolerances=self._tolerances(window.version, profile, window.rows),
                                  categories=window.categories, per_window=self.drift.tolerance_rate)
            state, event = decide(DriftState(**self.state["drift"].get(v, {})), scores, index, self.model,
                                  window.version, self.drift.persistence)
            self.state["drift"][v] = asdict(state)
            self.state["windows"][v] = index + 1
            self.state["tasks"][v] = profile.task
            self.state["rows_scored"][v] = self.state["rows_scored"].get(v, 0) + window.rows
            self.state["last_window"] = _window_record(window, index, scores)
            if window.proba is not None:  # what the labels, when they come, should show
                estimate = expected_accuracy(window.proba, profile.temperature)
                self.state["last_window"]["estimated_accuracy"] = estimate
                self.state["estimated"].setdefault(v, {})[str(index)] = estimate
                for old in [w for w in self.state["estimated"][v] if int(w) <= index - self._horizon()]:
                    del self.state["estimated"][v][old]
            if self.labels is not None:
                self.labels.window_rows.save(window.version, index, window.ids, window.prediction, window.proba,
                                             self.labels.horizon)
                answered = self.state["window_ts"].setdefault(v, {})
                answered[str(index)] = epoch_s(window.ts_min if window.ts_min is not None else window.ts_first)
                for old in [w for w in answered if int(w) <= index - self.labels.horizon]:
                    del answered[old]
                self._new_windows.append((window.version, index))
            events = [{"kind": "window_scored", **self.state["last_window"]}]
            if event is not None:  # what its report draws, taken while the window's rows are here
                columns = shown_features(self.state["last_window"]["scores"])
                reference = {c: profile.features[c].sorted_sample for c in columns if c in profile.features}
                values = {c: window.x[:, self.features.index(c)] for c in reference}
                if "prediction" in columns:  # a regression model's predicted values, drawn like a feature
                    reference["prediction"] = profile.probabilities["prediction"].sorted_sample
                    values["prediction"] = np.asarray(window.prediction, dtype=np.float64)
                drawn = histograms(reference, values, [c for c in columns if c in reference])
                shares = category_shares(profile.categories, window.categories, self.state["last_window"]["scores"])
                events.append({"kind": "drift_declared", **asdict(event), "alpha": self.drift.alpha,
                               "histograms": drawn, "category_shares": shares, "reason": drift_reason(event)})
        return events

    def _tolerances(self, version: int, profile: ReferenceProfile, rows: int) -> dict[str, float]:
        """Each feature's shift tolerance at this window size (calibrated once per version and size
        bucket; the bucket's smaller size, so the tolerance errs high)."""
        bucket = size_bucket(rows)
        key = (version, bucket)
        if key not in self._tolerance_cache:
            self._tolerance_cache[key] = {
                f: shift_tolerance(profile.features[f].sorted_sample, bucket, features=len(self.features),
                                   per_window=self.drift.tolerance_rate, floor=self.drift.min_shift,
                                   std=profile.features[f].std) for f in self.features}
        return self._tolerance_cache[key]

    def _horizon(self) -> int:
        return self.labels.horizon if self.labels is not None else 50

    def _join_labels(self) -> list[dict]:
        """Read new label files, then join labels to the windows they can change: every window in the
        horizon when labels arrived, else only the windows scored in this pass. An event per window
        whose label counts changed."""
        events, arrived = [], False
        self._labels_behind = False
        for key in list(self._labels_unread):  # counted before a restart, not read back then
            try:
                arrived = read_with_retries(lambda: self.labels.feedback.read(key)) > 0 or arrived
                self._labels_unread.remove(key)
            except TransientRead:
                break
        for key in self.labels.feedback.new_files(self.state["feedback_files"]):
            try:
                n = read_with_retries(lambda: self.labels.feedback.read(key))
            except TransientRead as exc:
                reason = after_failed_pass(self.state["read_retries"], key, exc)
                if reason is None:
                    self._labels_behind = True
                    break  # latest wins: later label files wait for this one
                n = -1
            else:
                self.state["read_retries"].pop(key, None)
                reason = f"{key}: not a readable label file (it does not parse)"
            self.state["feedback_files"].append(key)
            if key in self.labels.feedback.shapes:
                self.state["feedback_shapes"][key] = list(self.labels.feedback.shapes[key])
            if n < 0:
                events.append({"kind": "feedback_skipped", "file": key, "reason": reason})
            arrived = arrived or n > 0
        if arrived:
            due = [(int(v), w) for v, n in self.state["windows"].items()
                   for w in range(max(0, n - self.labels.horizon), n) if not self._past_label_floor(v, w)]
        else:
            due = self._new_windows
        self._new_windows = []
        if not self.labels.feedback.labels:
            return events
        for version, window in due:
            rows = self.labels.window_rows.load(version, window)
            if rows is None:
                continue
            ids, prediction, proba = rows
            profile = self._profile(version)
            regression = profile is not None and profile.regression
            stats = label_stats(prediction, proba, self.labels.feedback.lookup(ids, regression), regression)
            kept = self.state["labels"].setdefault(str(version), {})
            if kept.get(str(window)) != stats and stats["labelled"]:
                kept[str(window)] = stats
                events.append({"kind": "window_labels", "version": version, "window": window, **stats})
                events += self._concept_drift(version, window, stats)
            for old in [w for w in kept if int(w) < window - self.labels.horizon]:
                del kept[old]
        return events

    def _past_label_floor(self, version: str, window: int) -> bool:
        """A window answered before the label floor (`max_delay_s` held it back no longer): some of its
        labels are let go, so it is not joined again; its figures stay as last joined."""
        floor, answered = self.state["feedback_floor"], self.state["window_ts"].get(version, {}).get(str(window))
        return floor is not None and answered is not None and answered < floor + CLOCK_SKEW_S

    def label_floor_candidate(self) -> float | None:
        """Where the label floor may rise to now (epoch s), None when it must stay: the earliest answer
        a join still needs a label for (the oldest window in the horizon of a version still answering,
        the oldest row not yet scored), never within `LABEL_SETTLE_S` of now (a label file still being uploaded), never further
        back than `max_delay_s` (later labels are not joined), less `CLOCK_SKEW_S`. It must stay while
        live-log files listed are unread (their rows may be older than any buffered) or a label file waits."""
        if self._labels_behind or self._labels_unread:
            return None
        if self._read_upto < self.state["files_base"] + len(self.state["files"]) - 1:
            return None
        horizon = self.labels.horizon
        if any(str(w) not in self.state["window_ts"].get(v, {}) for v, n in self.state["windows"].items()
               if self._holding_floor(v) for w in range(max(0, n - horizon), n)):
            return None  # windows scored before their answer times were kept (an earlier version): wait them out
        now = self.clock()
        needed = [now - LABEL_SETTLE_S, *(min(w.values()) for v, w in self.state["window_ts"].items()
                                          if w and self._holding_floor(v))]
        buffered = self.windower.earliest_ts()
        if buffered is not None:
            needed.append(epoch_s(buffered))
        return max(min(needed), now - self.labels.max_delay_s) - CLOCK_SKEW_S

    def _raise_label_floor(self) -> None:
        """Raise the label floor (never lower it): the labels of files written before it leave memory
        and their files leave the state's lists (they stay on storage, for retraining). A label merge
        under way keeps its files listed."""
        floor = self.label_floor_candidate()
        if floor is None or (self.state["feedback_floor"] is not None and floor <= self.state["feedback_floor"]):
            return
        self.state["feedback_floor"] = floor
        self.labels.feedback.forget_before(floor)
        pending = self.state["label_compaction"]
        keep = set(pending["sources"]) | {pending["output"]} if pending else set()

        def needed(key: str) -> bool:
            stamp = stamp_of(key)
            return key in keep or stamp is None or stamp >= floor

        self.state["feedback_files"] = [k for k in self.state["feedback_files"] if needed(k)]
        self.state["feedback_shapes"] = {k: v for k, v in self.state["feedback_shapes"].items() if needed(k)}

    def _concept_drift(self, version: int, window: int, stats: dict) -> list[dict]:
        """An event when a window's realised accuracy parts from its estimate by more than `concept_gap`
        on at least `concept_min_labels` labelled rows (once per window): the estimate assumes P(y|x)
        unchanged, so a gap says the relation itself moved."""
        estimate = self.state["estimated"].get(str(version), {}).get(str(window))
        flagged = self.state.setdefault("concept_flagged", {}).setdefault(str(version), [])
        if estimate is None or stats["labelled"] < self.drift.concept_min_labels or window in flagged:
            return []
        realised = stats["correct"] / stats["labelled"]
        if abs(realised - estimate) <= self.drift.concept_gap:
            return []
        flagged.append(window)
        del flagged[:-self._horizon()]
        return [{"kind": "concept_drift_suspected", "version": version, "window": window, "estimated": estimate,
                 "realised": realised, "labelled": stats["labelled"],
                 "reason": f"v{version} window {window}: realised accuracy {realised:.1%} on {stats['labelled']} "
                           f"labelled rows, estimated {estimate:.1%} from its probabilities"}]

    def _note_positions(self) -> None:
        """Each version's first row not yet scored: where its buffered rows start, else after what was read."""
        buffered = self.windower.next_positions()
        seen = set(self.state["windows"]) | set(self.state["rows_unprofiled"]) | {str(k) for k in buffered}
        self.state["next"] = {k: (buffered[int(k)] if int(k) in buffered else self.read_head).to_json() for k in seen}

    def _record(self, events: list[dict]) -> list[dict]:
        """Stamp and append `events`, then save the state (after every window and every pass)."""
        stamped = [{"time": _now_iso(), "model": self.model, **e} for e in events]
        self._note_positions()
        self.store.commit(self.state, stamped)
        return stamped


def _window_record(window: Window, index: int, scores: WindowScores) -> dict:
    return {"version": window.version, "window": index, "rows": window.rows,
            "first": window.first.to_json(), "last": window.last.to_json(), "drifted": scores.drifted,
            "drifted_features": scores.drifted_features,
            "scores": {s.column: {"test": s.test, "statistic": s.statistic, "p_value": s.p_value,
                                  "adjusted_p": s.adjusted_p, "psi": s.psi, "wasserstein": s.wasserstein,
                                  "jensen_shannon": s.jensen_shannon, "drifted": s.drifted,
                                  "tolerance": s.tolerance,
                                  **({"effect": s.effect, "detail": s.detail, "share": s.share,
                                      "reference_share": s.reference_share} if s.effect is not None else
                                     {"detail": s.detail} if s.detail else {})}
                       for s in (*scores.features, *scores.prediction)}}
