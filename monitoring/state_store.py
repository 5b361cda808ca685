"""The monitor's state and event log on a local path or any pyarrow filesystem URI.

State is one JSON document per model, replaced whole after every window (written beside, then
moved over, so a crash leaves the old or the new one, never half of one). Events are JSON lines,
appended (local files) or rewritten whole (object stores, whose objects are replaced whole), oldest
first. `commit` appends a window's events, then saves the state with the number of events it
accounts for (`events_logged`).

Only the monitor writes. Readers (`read_state`, `events`: `handoff status`, `handoff events`, the
report) never write, and see the committed events only: those the saved state counts. The monitor,
starting, calls `recover`: events past the count (a crash between the two steps: the window is
scored again, its events must not be doubled) and a torn last line (a kill or a full disk mid-append)
are dropped, the log rewritten beside and moved over, and what was dropped is said by the
`event_log_repaired` event it returns for the monitor to record.
"""

from __future__ import annotations

import json
import uuid

import pyarrow.fs as pafs

from cluster.storage import filesystem, join


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


class StateStore:
    def __init__(self, root: str, model: str):
        self.fs, base = filesystem(root)
        self.dir = join(base, f"model={model}")
        self.state_path = join(self.dir, "state.json")
        self.events_path = join(self.dir, "events.jsonl")

    # --- readers: never write ---------------------------------------------------------------------
    def read_state(self) -> dict | None:
        """The saved state, None before the first commit. Reads only."""
        try:
            with self.fs.open_input_stream(self.state_path) as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def events(self) -> list[dict]:
        """The committed events, oldest first (those the saved state counts; a torn line never). Reads only."""
        state = self.read_state()  # first: events appended after it are not committed in it
        entries, _ = parse_entries(self._raw_events())
        committed = entries[:state.get("events_logged", 0)] if state is not None else []
        return [e for e in committed if e is not None]  # a bad line inside still counts as one committed

    def _raw_events(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.events_path) as f:
                return f.read()
        except FileNotFoundError:
            return b""

    # --- the monitor: the one writer ----------------------------------------------------------------
    def recover(self) -> tuple[dict | None, list[dict]]:
        """(saved state, the `event_log_repaired` event to record, if any) after making the log hold
        exactly the committed events: uncommitted ones and a torn line dropped (the log rewritten
        beside and moved over); fewer lines than counted (a log cut short) sets the count to what is there."""
        state = self.read_state()
        raw = self._raw_events()
        entries, torn = parse_entries(raw)
        logged = (state or {}).get("events_logged", 0)
        uncommitted = max(len(entries) - logged, 0)
        missing = max(logged - len(entries), 0)
        bad = sum(e is None for e in entries[:logged])
        if not (torn or bad or uncommitted or missing):
            return state, []
        kept = [e for e in entries[:logged] if e is not None]
        self._replace_events(kept)
        if state is not None:
            state["events_logged"] = len(kept)
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
        """`data` at `path`, written beside and moved over: the old or the new bytes, never half."""
        self.fs.create_dir(self.dir, recursive=True)
        tmp = join(self.dir, f".{path.rsplit('/', 1)[-1]}-{uuid.uuid4().hex[:8]}.tmp")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def _replace_events(self, events: list[dict]) -> None:
        self._write_beside(self.events_path, _json_lines(events))

    def save(self, state: dict) -> None:
        self._write_beside(self.state_path, json.dumps(state, sort_keys=True).encode())

    def append_events(self, events: list[dict]) -> None:
        if not events:
            return
        self.fs.create_dir(self.dir, recursive=True)
        lines = _json_lines(events)
        if isinstance(self.fs, pafs.LocalFileSystem):
            with open(self.events_path, "ab") as f:
                f.write(lines)
            return
        self._write_beside(self.events_path, self._raw_events() + lines)
