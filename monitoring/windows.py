"""Windows of live rows per version, cut by row count or, for slow traffic, by age (pure).

Rows arrive in the live log's order; each version gets its own buffer. A window is the first
`rows` buffered rows of a version, or, when its oldest row is `seconds` old, everything buffered
(if at least `min_rows`). Each buffered chunk keeps its rows' positions, so the first unscored
row of every version is known: that is what the monitor persists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from monitoring.live_reader import Position, Rows


@dataclass(frozen=True)
class WindowSpec:
    rows: int = 5_000
    seconds: float = 300.0
    min_rows: int = 200

    def __post_init__(self):
        if self.rows < 1 or self.min_rows < 1 or self.seconds <= 0:
            raise ValueError("window rows and min_rows must be at least 1, seconds above 0")


@dataclass(frozen=True)
class Window:
    """Consecutive rows of one version: where they start and end in the log, and their values."""

    version: int
    first: Position
    last: Position
    ts_first: np.datetime64
    x: np.ndarray
    prediction: np.ndarray
    ids: np.ndarray
    proba: np.ndarray | None
    categories: dict = field(default_factory=dict)  # categorical column → values (object array, None: a gap)
    ts_min: np.datetime64 | None = None  # when its earliest row was answered (gateways' clocks differ: not always the first)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


@dataclass
class _Chunk:
    file: int
    index: np.ndarray
    ts: np.ndarray
    x: np.ndarray
    prediction: np.ndarray
    ids: np.ndarray
    proba: np.ndarray | None
    categories: dict = field(default_factory=dict)

    def part(self, rows) -> _Chunk:
        return _Chunk(self.file, self.index[rows], self.ts[rows], self.x[rows], self.prediction[rows], self.ids[rows],
                      None if self.proba is None else self.proba[rows],
                      {c: v[rows] for c, v in self.categories.items()})


@dataclass
class VersionBuffer:
    """The buffered, not yet scored rows of one version, oldest first."""

    chunks: list[_Chunk] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(c.index) for c in self.chunks)

    @property
    def first(self) -> Position | None:
        return Position(self.chunks[0].file, int(self.chunks[0].index[0])) if self.chunks else None

    def add(self, chunk: _Chunk) -> None:
        if len(chunk.index):
            self.chunks.append(chunk)

    def take(self, n: int, version: int) -> Window:
        """Remove and return the first `n` buffered rows as a window."""
        taken, need = [], n
        while need:
            c = self.chunks[0]
            k = min(need, len(c.index))
            taken.append(c.part(slice(None, k)))
            if k == len(c.index):
                self.chunks.pop(0)
            else:
                self.chunks[0] = c.part(slice(k, None))
            need -= k
        proba = None if any(c.proba is None for c in taken) else np.concatenate([c.proba for c in taken])
        return Window(version, Position(taken[0].file, int(taken[0].index[0])),
                      Position(taken[-1].file, int(taken[-1].index[-1])), taken[0].ts[0],
                      np.concatenate([c.x for c in taken]), np.concatenate([c.prediction for c in taken]),
                      np.concatenate([c.ids for c in taken]), proba,
                      {name: np.concatenate([c.categories[name] for c in taken]) for name in taken[0].categories},
                      min(c.ts.min() for c in taken))


class Windower:
    """Per-version buffers fed with the log's rows in order; `ready` cuts the windows due now."""

    def __init__(self, spec: WindowSpec, skip_before: dict[int, Position] | None = None):
        self.spec = spec
        self.buffers: dict[int, VersionBuffer] = {}
        self._skip_before = dict(skip_before or {})

    def add(self, rows: Rows) -> None:
        """Buffer a file's rows by version, dropping those of a version before its recorded position
        (already scored before a restart)."""
        for version in np.unique(rows.version):
            mask = rows.version == version
            index = rows.index[mask]
            floor = self._skip_before.get(int(version))
            if floor is not None and floor.file == rows.file:
                keep = index >= floor.row
                mask = np.nonzero(mask)[0][keep]
            elif floor is not None and floor.file > rows.file:
                continue
            else:
                mask = np.nonzero(mask)[0]
            self.buffers.setdefault(int(version), VersionBuffer()).add(
                _Chunk(rows.file, rows.index[mask], rows.ts[mask], rows.x[mask], rows.prediction[mask],
                       rows.ids[mask], None if rows.proba is None else rows.proba[mask],
                       {c: v[mask] for c, v in rows.categories.items()}))

    def ready(self, now: np.datetime64) -> Iterator[Window]:
        """Every window due, cut one at a time (a window's rows leave the buffer only when the caller
        asks for the next, so the buffered positions always include the windows not yet scored):
        full ones, then per version the rest if its oldest row is old enough (at least `min_rows`)."""
        for version, buffer in sorted(self.buffers.items()):
            while buffer.rows >= self.spec.rows:
                yield buffer.take(self.spec.rows, version)
            if buffer.rows >= self.spec.min_rows:
                age = (now - buffer.chunks[0].ts[0]) / np.timedelta64(1, "s")
                if age >= self.spec.seconds:
                    yield buffer.take(buffer.rows, version)

    def earliest_ts(self) -> np.datetime64 | None:
        """When the earliest buffered row of any version was answered; None with nothing buffered."""
        return min((c.ts.min() for b in self.buffers.values() for c in b.chunks if len(c.ts)), default=None)

    def next_positions(self) -> dict[int, Position]:
        """Per version with buffered rows, the first one not yet scored."""
        return {v: b.first for v, b in self.buffers.items() if b.chunks}
