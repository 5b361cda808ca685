"""Drift of a categorical column, and of any column's gaps, pure (NumPy and SciPy).

The reference holds, per categorical column, the training split's count of each of its most frequent
values (at most `TRACKED`), of every other value it held (`other`), and which values it held at all
(at most `KNOWN`, so "never seen in training" can be told), plus how many rows were missing; per
numeric column, how many were missing. A window of live rows is scored on three figures per column:

- `COLUMN` (categorical): the shares of its values over the reference's buckets (its tracked values,
  and `other` for every value past them, held in training or new: a column whose training kept
  meeting new values meets them live too, and how many are new is the next figure's question):
  chi-squared on the counts (the test), Jensen–Shannon on the shares (the effect);
- `COLUMN.unseen` (categorical): the share of rows with a value training never held (not told where
  training held more than `KNOWN` distinct values: a value past those remembered counts as `other`);
- `COLUMN.missing` (any column with gaps in either): the share of rows left empty.

Each effect must exceed its tolerance at the window's size, calibrated from the reference like the
numeric ones: the Jensen–Shannon distance that windows drawn from the reference's own shares exceed
only rarely; a share that chance alone moves only so far (binomial quantile); for unseen values the
rate at which training itself kept meeting new values (Good–Turing: the share of values seen once).
A floor keeps large windows from alarming on trifles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from monitoring.drift_stats import chi2_counts, jensen_shannon
from monitoring.tolerance import rare_tail

TRACKED = 50         # values with a bucket of their own in the reference (the rest share `other`)
KNOWN = 10_000       # distinct training values remembered, to tell "never seen" from "seen, rare"
OTHER, UNSEEN = "<other>", "<unseen>"
SHARE_FLOOR = 0.01   # a share that moved less than a point is nobody's business
JS_FLOOR = 0.05      # the same for the Jensen–Shannon distance of the shares


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@dataclass(frozen=True)
class CategoricalReference:
    """One categorical column of the training split: counts of its tracked values, of the rest, of gaps."""

    values: tuple            # the tracked values, most frequent first
    counts: np.ndarray       # per tracked value, then every other value training held
    missing: int
    rows: int
    known: frozenset         # every distinct value training held (at most KNOWN)
    singletons: int          # values training held once (Good–Turing: how often new ones turn up)

    @classmethod
    def of(cls, values) -> CategoricalReference:
        present = [v for v in values if not _missing(v)]
        distinct: dict = {}
        for v in present:
            distinct[v] = distinct.get(v, 0) + 1
        ranked = sorted(distinct.items(), key=lambda kv: (-kv[1], str(type(kv[0])), kv[0]))
        tracked = ranked[:TRACKED]
        counts = np.array([k for _, k in tracked] + [sum(k for _, k in ranked[TRACKED:])], dtype=np.int64)
        return cls(tuple(v for v, _ in tracked), counts, len(values) - len(present), len(values),
                   frozenset(v for v, _ in ranked[:KNOWN]), sum(1 for _, k in ranked if k == 1))

    @property
    def complete(self) -> bool:
        """Whether `known` holds every value training held (fewer than `KNOWN`: at `KNOWN` some may have
        been left out), so that a value outside it was never seen rather than seen, rarely, past them."""
        return len(self.known) < KNOWN

    @property
    def buckets(self) -> list[str]:
        return [*map(str, self.values), OTHER, UNSEEN]

    def window_counts(self, values) -> tuple[np.ndarray, int, dict]:
        """A window's counts over `buckets`, its gaps, and its values training never held (value → count;
        none where `known` is not `complete`: a value outside it counts as `other`). Values are counted
        by hashing (pandas) and only the distinct ones are looked up, so a window costs one pass in C
        however many rows it has."""
        import pandas as pd

        values = np.asarray(values, dtype=object)
        tally = pd.Series(values, dtype=object).value_counts(dropna=True)
        index = {v: i for i, v in enumerate(self.values)}
        counts = np.zeros(len(self.values) + 2, dtype=np.int64)
        unseen = {}
        for v, k in zip(tally.index.tolist(), tally.to_numpy().tolist()):
            if _missing(v):
                continue
            if v in index:
                counts[index[v]] += k
            elif v in self.known or not self.complete:
                counts[-2] += k
            else:
                counts[-1] += k
                unseen[v] = unseen.get(v, 0) + k
        return counts, int(len(values) - counts.sum()), unseen

    @property
    def reference_counts(self) -> np.ndarray:
        return np.append(self.counts, 0)

    def to_json(self) -> dict:
        return {"values": list(self.values), "counts": self.counts.tolist(), "missing": self.missing,
                "rows": self.rows, "known": sorted(self.known, key=lambda v: (str(type(v)), v)),
                "singletons": self.singletons}

    @classmethod
    def from_json(cls, d: dict) -> CategoricalReference:
        return cls(tuple(d["values"]), np.asarray(d["counts"], dtype=np.int64), int(d["missing"]), int(d["rows"]),
                   frozenset(d["known"]), int(d["singletons"]))


@dataclass(frozen=True)
class CategoryFigure:
    """One scored figure of one window (see the module's three)."""

    column: str
    statistic: float
    p_value: float
    effect: float            # Jensen–Shannon distance, or the share's move (absolute)
    tolerance: float
    share: float | None = None            # the window's share (unseen, missing)
    reference_share: float | None = None
    detail: str = ""                      # what moved, in words


def js_tolerance(reference_counts: np.ndarray, n: int, *, features: int = 20, per_window: float = 0.001,
                 floor: float = JS_FLOOR, chunks: int = 200, seed: int = 0) -> float:
    """The Jensen–Shannon distance a window of `n` values drawn from the reference's own shares
    exceeds only `per_window / features` of the time (log-normal fit of the draws' tail; a draw in
    exactly the reference's shares is a point mass at 0, `rare_tail`), at least `floor`."""
    shares = reference_counts / max(reference_counts.sum(), 1)
    draws = np.random.default_rng(seed).multinomial(max(n, 1), shares, size=chunks) / max(n, 1)
    distances = np.array([jensen_shannon(shares, d) for d in draws])
    return max(floor, rare_tail(distances, per_window / features))


def size_bucket(n: int) -> int:
    """The window size a tolerance is calibrated at: `n` rounded down to a quarter power of two (the
    smaller size, so the tolerance errs high), as the numeric columns' are."""
    return int(2 ** (np.floor(np.log2(max(n, 1)) * 4) / 4))


@functools.lru_cache(maxsize=1024)
def _js_tolerance_cached(counts: tuple, n: int, features: int, per_window: float) -> float:
    return js_tolerance(np.asarray(counts), n, features=features, per_window=per_window)


def sized_js_tolerance(counts: np.ndarray, n: int, features: int, per_window: float) -> float:
    """`js_tolerance` at `n`'s size bucket, calibrated once per reference column and bucket (windows
    of a version have the same size, so a monitor draws the chunks once, not every window)."""
    return _js_tolerance_cached(tuple(int(c) for c in counts), size_bucket(n), features, per_window)


def share_tolerance(reference_share: float, n: int, *, features: int = 20, per_window: float = 0.001,
                    floor: float = SHARE_FLOOR) -> float:
    """How far a share of `n` rows moves from `reference_share` by chance only `per_window / features`
    of the time (binomial quantile), at least `floor`."""
    q = 1 - per_window / features / 2
    p = min(max(reference_share, 1e-9), 1 - 1e-9)
    spread = abs(stats.binom.ppf(q, n, p) / n - p) if n else 1.0
    return max(floor, float(spread))


def share_test(window_hits: int, n: int, reference_hits: int, reference_rows: int) -> tuple[float, float]:
    """Chi-squared on a 2 × 2 table (window vs reference, hit vs not): (statistic, p-value)."""
    if n <= 0 or reference_rows <= 0:
        return 0.0, 1.0
    return chi2_counts(np.array([reference_hits, reference_rows - reference_hits]),
                       np.array([window_hits, n - window_hits]))


def score_categorical(name: str, ref: CategoricalReference, values, *, features: int = 20,
                      per_window: float = 0.001, tolerances: dict | None = None) -> list[CategoryFigure]:
    """The window's figures for one categorical column: its shares, its unseen values, its gaps. A
    column training held no value of has no shares to compare: its gaps' figure alone (100% in training)."""
    values = np.asarray(values, dtype=object)
    counts, missing, unseen = ref.window_counts(values)
    n, present = len(values), int(counts.sum())
    out: list[CategoryFigure] = []
    if present and ref.counts.sum():
        held = np.append(counts[:-2], counts[-2] + counts[-1])  # over ref.counts' buckets: new values are `other`
        stat, p = chi2_counts(ref.counts, held)
        effect = jensen_shannon(ref.counts / ref.counts.sum(), held / present)
        tolerance = (tolerances or {}).get(name) or sized_js_tolerance(ref.counts, present, features, per_window)
        moved = _largest_move(ref, ref.counts, held)
        out.append(CategoryFigure(name, stat, p, effect, tolerance, detail=moved))
        share = counts[-1] / present
        base = good_turing(ref)
        stat, p = share_test(int(counts[-1]), present, 0, max(ref.rows - ref.missing, 1))
        top = max(unseen, key=unseen.get) if unseen else None
        detail = (f"{top!r} {unseen[top] / present:.0%} of rows, never seen in training" +
                  (f" (and {len(unseen) - 1} other new value(s))" if len(unseen) > 1 else "")) if top is not None else \
            "" if ref.complete else (f"not told: training held more than the {KNOWN:,} distinct values remembered; "
                                     f"a value past them counts as {OTHER}")
        out.append(CategoryFigure(f"{name}.unseen", stat, p, share, max(SHARE_FLOOR, 3 * base), share, 0.0, detail))
    out.extend(missing_figure(name, missing, n, ref.missing, ref.rows, features=features, per_window=per_window))
    return out


def missing_figure(name: str, missing: int, n: int, reference_missing: int, reference_rows: int, *,
                   features: int = 20, per_window: float = 0.001) -> list[CategoryFigure]:
    """`COLUMN.missing`, where the column had gaps in the reference or has them in the window."""
    if not (missing or reference_missing) or not n:
        return []
    share, base = missing / n, reference_missing / max(reference_rows, 1)
    stat, p = share_test(missing, n, reference_missing, reference_rows)
    tolerance = share_tolerance(base, n, features=features, per_window=per_window)
    detail = f"{share:.0%} of rows empty, {base:.0%} in training"
    return [CategoryFigure(f"{name}.missing", stat, p, abs(share - base), tolerance, share, base, detail)]


def good_turing(ref: CategoricalReference) -> float:
    """The chance that a value of the column was never seen before, as training itself met new values."""
    present = ref.rows - ref.missing
    return ref.singletons / present if present else 0.0


def _largest_move(ref: CategoricalReference, reference: np.ndarray, counts: np.ndarray) -> str:
    """The bucket whose share moved most, in words: "'month' 12% of rows, 55% in training"."""
    window, base = counts / max(counts.sum(), 1), reference / max(reference.sum(), 1)
    i = int(np.argmax(np.abs(window - base)))
    label = ref.buckets[i]
    shown = repr(ref.values[i]) if i < len(ref.values) else label
    return f"{shown} {window[i]:.0%} of rows, {base[i]:.0%} in training"
