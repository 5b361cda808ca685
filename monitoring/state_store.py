"""The monitor's state and event log on a local path or any pyarrow filesystem URI.

State is one JSON document per model, replaced whole after every window (written beside, then
moved over, so a crash leaves the old or the new one, never half of one). Events are JSON lines,
appended (local files) or rewritten (object stores), oldest first. `commit` appends a window's
events, then saves the state with the number of events it accounts for; `load` drops events past
that number (a crash between the two: the window is scored again, its events are not doubled).
"""

from __future__ import annotations

import json
import uuid

import pyarrow.fs as pafs

from cluster.storage import filesystem, join


def _json_lines(events: list[dict]) -> bytes:
    return "".join(json.dumps(e, sort_keys=True) + "\n" for e in events).encode()


class StateStore:
    def __init__(self, root: str, model: str):
        self.fs, base = filesystem(root)
        self.dir = join(base, f"model={model}")
        self.state_path = join(self.dir, "state.json")
        self.events_path = join(self.dir, "events.jsonl")

    def load(self) -> dict | None:
        """The saved state (None before the first commit), after dropping events it does not account for."""
        try:
            with self.fs.open_input_stream(self.state_path) as f:
                state = json.loads(f.read())
        except FileNotFoundError:
            state = None
        logged = (state or {}).get("events_logged", 0)
        events = self.events()
        if len(events) > logged:
            self._write_events(events[:logged])
        return state

    def commit(self, state: dict, events: list[dict]) -> None:
        """Append `events`, then save `state` counting them (`events_logged`)."""
        self.append_events(events)
        state["events_logged"] = state.get("events_logged", 0) + len(events)
        self.save(state)

    def _write_events(self, events: list[dict]) -> None:
        self.fs.create_dir(self.dir, recursive=True)
        with self.fs.open_output_stream(self.events_path) as f:
            f.write(_json_lines(events))

    def save(self, state: dict) -> None:
        self.fs.create_dir(self.dir, recursive=True)
        tmp = join(self.dir, f".state-{uuid.uuid4().hex[:8]}.json")
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(state, sort_keys=True).encode())
        self.fs.move(tmp, self.state_path)

    def append_events(self, events: list[dict]) -> None:
        if not events:
            return
        self.fs.create_dir(self.dir, recursive=True)
        lines = _json_lines(events)
        if isinstance(self.fs, pafs.LocalFileSystem):
            with open(self.events_path, "ab") as f:
                f.write(lines)
            return
        previous = b""
        try:
            with self.fs.open_input_stream(self.events_path) as f:
                previous = f.read()
        except FileNotFoundError:
            pass
        with self.fs.open_output_stream(self.events_path) as f:
            f.write(previous + lines)

    def events(self) -> list[dict]:
        try:
            with self.fs.open_input_stream(self.events_path) as f:
                return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
        except FileNotFoundError:
            return []
