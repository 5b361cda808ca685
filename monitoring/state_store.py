"""The monitor's state and event log on a local path or any pyarrow filesystem URI.

State is one JSON document per model, replaced whole after every window (written beside, then
moved over, so a crash leaves the old or the new one, never half of one; on an object store put
whole, which replaces the object in one step). Events are JSON lines, oldest
first, in segments (`events/seg-N.jsonl`, N the number of the segment's first line in the whole
log) closed past `segment_bytes`: appended to on a local disk; on an object store, which cannot
append, the last segment is put whole again (an object is replaced in one step), so a commit's
work is bounded by a segment, not by the log. `commit` appends a window's events, then saves the state
with the number of lines it accounts for (`events_logged`).

Only the monitor writes. Readers (`read_state`, `events`: `handoff status`, `handoff events`, the
report) never write, and see the committed events only: those the saved state counts. The monitor,
starting, calls `recover`: events past the count (a crash between the two steps: the window is
scored again, its events must not be doubled) and a torn last line (a kill or a full disk mid-append)
are dropped, the log rewritten beside and moved over, and what was dropped is said by the
`event_log_repaired` event it returns for the monitor to record.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pyarrow.fs as pafs

from cluster.storage import filesystem, join, publish, staging_path


SEGMENT_BYTES = 1 << 20  # an event-log segment is closed past this size (what a commit rewrites on an object store)
_SEGMENT = re.compile(r"seg-(\d{12})\.jsonl")


def _segment_name(first: int) -> str:
    return f"seg-{first:012d}.jsonl"


def _json_lines(events: list[dict]) -> bytes:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in events).encode()


def parse_entries(raw: bytes) -> tuple[list[dict | None], int]:
    """(one entry per line, None for a line that is not a JSON object; bytes of a torn last line) of
    an event log's bytes: a last line without its newline, or one that is not JSON, is torn. Lines,
    not events, are what the state's `events_logged` counts."""
    lines = raw.split(b"\n")
    tail = lines.pop()  # what follows the last newline: b"" for a whole log
    torn = len(tail)
    entries: list[dict | None] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and not tail:  # a last line cut inside and then a newline: torn too
                torn += len(line) + 1
                continue
            event = None
        entries.append(event if isinstance(event, dict) else None)
    return entries, torn


def parse_lines(raw: bytes) -> tuple[list[dict], int, int]:
    """(events, bytes of a torn last line, lines that are not JSON) of an event log's bytes."""
    entries, torn = parse_entries(raw)
    return [e for e in entries if e is not None], torn, sum(e is None for e in entries)


class StateCorrupt(ValueError):
    """A saved monitor state that is not a JSON object; the message names the file."""


class StateStore:
    def __init__(self, root: str, model: str, segment_bytes: int = SEGMENT_BYTES):
        self.fs, base = filesystem(root)
        self.dir = join(base, f"model={model}")
        self.state_path = join(self.dir, "state.json")
        self.events_dir = join(self.dir, "events")
        self.legacy_events_path = join(self.dir, "events.jsonl")  # the one-file log of earlier Handoff versions
        self.segment_bytes = segment_bytes
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        self._tail: dict | None = None  # the writer's last segment: first line, path, lines, bytes (and its bytes)

    # --- readers: never write ---------------------------------------------------------------------
    def read_state(self, attempts: int = 6) -> dict | None:
        """The saved state, None before the first commit. Reads only. On an object store a read that
        overlaps the state's replacement can get bytes of both versions (an object is read in ranges):
        such a read does not parse and is read again (the writer's put replaces the object whole).
        What still does not parse is corrupt: `StateCorrupt`, naming the file (never repaired here)."""
        for attempt in range(attempts):
            try:
                with self.fs.open_input_stream(self.state_path) as f:
                    raw = f.read()
            except FileNotFoundError:
                return None
            try:
                state = json.loads(raw)
            except ValueError as exc:
                if attempt == attempts - 1:
                    raise StateCorrupt(f"the monitor state {self.state_path} is corrupt ({len(raw)} bytes, not "
                                       f"JSON: {exc}); move {self.dir} aside to start this model's monitor afresh") from None
                time.sleep(0.05 * 2 ** attempt)
                continue
            if not isinstance(state, dict):
                raise StateCorrupt(f"the monitor state {self.state_path} is corrupt (a JSON "
                                   f"{type(state).__name__}, not an object); move {self.dir} aside to start this "
                                   "model's monitor afresh")
            return state
        raise AssertionError("unreachable")

    def segments(self) -> list[tuple[int, str]]:
        """(number of its first line, path) of each segment of the event log, in order (an earlier
        version's one-file log as the only one, until the monitor's next start moves it). Reads only."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.events_dir, allow_not_found=True))
        found = sorted((int(m.group(1)), i.path) for i in infos
                       if i.type == pafs.FileType.File and (m := _SEGMENT.fullmatch(i.base_name)))
        if not found and self.fs.get_file_info(self.legacy_events_path).type == pafs.FileType.File:
            return [(0, self.legacy_events_path)]
        return found

    @property
    def events_path(self) -> str:
        """The event log's last segment: where the next events go."""
        found = self.segments()
        return found[-1][1] if found else join(self.events_dir, _segment_name(0))

    def events(self, start: int = 0) -> list[dict]:
        """The committed events from line `start` of the log on, oldest first (those the saved state
        counts; a torn line never); only the segments that hold them are read. Reads only. A corrupt
        state cannot count them: then every whole line of the log is shown, the log being intact."""
        try:
            state = self.read_state()  # first: events appended after it are not committed in it
        except StateCorrupt:
            state = {"events_logged": sys.maxsize}
        logged = state.get("events_logged", 0) if state is not None else 0
        found, out = self.segments(), []
        for k, (first, path) in enumerate(found):
            end = found[k + 1][0] if k + 1 < len(found) else None
            if first >= logged:
                break
            if end is not None and end <= start:
                continue
            entries, _ = parse_entries(self._read(path))
            out += [e for n, e in enumerate(entries, first) if start <= n < logged and e is not None]
        return out  # a bad line inside still counts as one committed

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def _raw_events(self) -> bytes:
        """The whole log's bytes, segment after segment."""
        return b"".join(self._read(path) for _, path in self.segments())

    # --- the monitor: the one writer ----------------------------------------------------------------
    def recover(self) -> tuple[dict | None, list[dict]]:
        """(saved state, the `event_log_repaired` event to record, if any) after making the log hold
        exactly the committed events: uncommitted ones and a torn line dropped (the last segment
        rewritten beside and moved over, a segment begun after the last commit deleted); fewer lines
        than counted (a log cut short) sets the count to what is there. An earlier version's one-file
        log becomes the first segment."""
        state = self.read_state()
        found = self.segments()
        if found and found[0][1] == self.legacy_events_path:
            self.fs.create_dir(self.events_dir, recursive=True)
            self.fs.move(self.legacy_events_path, join(self.events_dir, _segment_name(0)))
            found = self.segments()
        logged = (state or {}).get("events_logged", 0)
        late = [(f, p) for f, p in found if f > 0 and f >= logged]  # begun by a commit whose state was never saved
        found = [seg for seg in found if seg not in late]
        first, path = found[-1] if found else (0, join(self.events_dir, _segment_name(0)))
        raw = self._read(path)
        entries, torn = parse_entries(raw)
        counted = logged - first  # the last segment's committed lines
        uncommitted = max(len(entries) - counted, 0) + sum(len(parse_entries(self._read(p))[0]) for _, p in late)
        missing = max(counted - len(entries), 0)
        bad = sum(e is None for e in entries[:counted])
        if not (torn or bad or uncommitted or missing):
            self._tail = {"first": first, "path": path, "lines": len(entries), "bytes": len(raw),
                          "raw": b"" if self._local else raw}
            return state, []
        kept = [e for e in entries[:counted] if e is not None]
        data = _json_lines(kept)
        self._write_beside(path, data)
        for _, p in late:
            self.fs.delete_file(p)
        self._tail = {"first": first, "path": path, "lines": len(kept), "bytes": len(data), "raw": data}
        if state is not None:
            state["events_logged"] = first + len(kept)
            self.save(state)
        repaired = {"kind": "event_log_repaired", "torn_bytes": torn, "unparseable_lines": bad,
                    "uncommitted_events": uncommitted, "missing_events": missing,
                    "reason": "; ".join(part for part in (
                        f"a torn last line ({torn} bytes) dropped" if torn else "",
                        f"{bad} line(s) that are not JSON dropped" if bad else "",
                        f"{uncommitted} event(s) written after the last commit dropped (they are recorded again)"
                        if uncommitted else "",
                        f"{missing} committed event(s) missing from the log" if missing else "") if part)}
        return state, ([repaired] if torn or bad or missing else [])

    def commit(self, state: dict, events: list[dict]) -> None:
        """Append `events`, then save `state` counting them (`events_logged`)."""
        self.append_events(events)
        state["events_logged"] = state.get("events_logged", 0) + len(events)
        self.save(state)

    def _write_beside(self, path: str, data: bytes) -> None:
        """`data` at `path`, the old or the new bytes, never half: written beside and moved over (on an
        object store put whole, which replaces the object in one step)."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = staging_path(self.fs, path)
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        publish(self.fs, tmp, path)

    def save(self, state: dict) -> None:
        self._write_beside(self.state_path, json.dumps(state, sort_keys=True).encode())

    def _last_segment(self) -> dict:
        """The writer's last segment (read once, then kept), a new one begun once it is past `segment_bytes`."""
        if self._tail is None:
            found = self.segments()
            first, path = found[-1] if found else (0, join(self.events_dir, _segment_name(0)))
            raw = self._read(path)
            self._tail = {"first": first, "path": path, "lines": len(parse_entries(raw)[0]), "bytes": len(raw),
                          "raw": b"" if self._local else raw}
        tail = self._tail
        if tail["bytes"] >= self.segment_bytes:
            first = tail["first"] + tail["lines"]
            self._tail = {"first": first, "path": join(self.events_dir, _segment_name(first)), "lines": 0,
                          "bytes": 0, "raw": b""}
        return self._tail

    def append_events(self, events: list[dict]) -> None:
        if not events:
            return
        tail, lines = self._last_segment(), _json_lines(events)
        if self._local:
            self.fs.create_dir(self.events_dir, recursive=True)
            with open(tail["path"], "ab") as f:
                f.write(lines)
        else:  # no append: the segment written whole again, beside, and moved over
            self._write_beside(tail["path"], tail["raw"] + lines)
            tail["raw"] += lines
        tail["lines"] += len(events)
        tail["bytes"] += len(lines)
