"""Latency quantiles from cumulative Prometheus histogram buckets, pure: over all time, or over a
period (the difference of two readings), so that two versions are compared over the same period."""

from __future__ import annotations

import math

Buckets = list[tuple[float, float]]  # cumulative (upper bound `le`, count) pairs


def quantile_upper_bound(buckets: Buckets, q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q`; None with no observation."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for le, count in buckets:
        if count >= q * total:
            return le
    return math.inf


def count_above(buckets: Buckets, threshold: float) -> int:
    """Observations surely above `threshold`: those in buckets whose lower edge is at or above it (a
    bucket that straddles it is not counted)."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    at_most = min((count for le, count in buckets if le >= threshold), default=total)  # through the straddling bucket
    return int(total - at_most)


def since(current: Buckets, baseline: Buckets | None) -> Buckets:
    """The observations between two readings of one cumulative histogram. A reading lower than the
    baseline in any bucket means the counters restarted (a gateway replica restarted): then all of the
    current reading is newer than the baseline, and it is the period's."""
    if not baseline:
        return sorted(current)
    before = dict(baseline)
    if any(count < before.get(le, 0) for le, count in current):
        return sorted(current)
    return sorted((le, count - before.get(le, 0)) for le, count in current)
