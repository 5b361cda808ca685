"""The gateway's Ray metrics (exported to Prometheus by every node's metrics agent).

Requests only add to counters in memory; `record` turns them into Ray metric records once a second
(a Ray metric record on the request path was ~10% of the gateway's CPU and contended with Serve's
router thread). `totals` keeps what this replica counted, for `handoff status` and the tests.
"""

from __future__ import annotations

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class GatewayMetrics:
    """Counters and a latency histogram per (model, version)."""

    def __init__(self):
        from ray.util import metrics

        keys = ("model", "version")
        self.counters = {
            "requests": metrics.Counter("handoff_requests_total", "answered requests", tag_keys=keys),
            "errors": metrics.Counter("handoff_request_errors_total", "requests a version failed", tag_keys=keys),
            "shed": metrics.Counter("handoff_requests_shed_total", "requests refused with 503 because the "
                                    "version's queue was full (gateway.max_queued_per_version)", tag_keys=keys),
            "timeouts": metrics.Counter("handoff_request_timeouts_total", "requests answered 504: no answer "
                                        "within gateway.request_timeout_s", tag_keys=keys),
            "shadow": metrics.Counter("handoff_shadow_requests_total", "mirrored rows answered", tag_keys=keys),
            "shadow_agreements": metrics.Counter("handoff_shadow_agreements_total",
                                                 "mirrored rows whose prediction matched the live answer",
                                                 tag_keys=keys),
            "shadow_errors": metrics.Counter("handoff_shadow_errors_total", "mirrored requests that failed",
                                             tag_keys=keys),
            "shadow_absolute_difference": metrics.Counter(
                "handoff_shadow_absolute_difference_total", "regression: the sum over mirrored rows of |shadow's "
                "prediction - live prediction| (divided by the mirrored rows: the mean absolute difference)",
                tag_keys=keys),
        }
        column_keys = ("model", "version", "column")
        self.column_counters = {
            "unseen": metrics.Counter("handoff_unseen_values_total", "categorical values outside the version's "
                                      "vocabulary, answered from its 'other' bucket", tag_keys=column_keys),
            "imputed": metrics.Counter("handoff_imputed_values_total", "missing values the version filled in",
                                       tag_keys=column_keys),
        }
        self._unrecorded_columns: dict[tuple[str, int, str, str], int] = {}
        self.latency = metrics.Histogram("handoff_request_latency_ms", "gateway latency of answered requests",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=keys)
        self.live_log_dropped = metrics.Counter("handoff_live_log_rows_dropped_total", "live-log rows given up "
                                                "while storage failed and the buffer was at live_log.max_buffered_rows")
        self._dropped_recorded = 0
        self.totals: dict[tuple[str, int, str], int] = {}
        self._unrecorded: dict[tuple[str, int, str], int] = {}
        self._latencies: list[tuple[str, int, float]] = []

    def count(self, model: str, version: int, what: str, n: float = 1) -> None:
        key = (model, version, what)
        self.totals[key] = self.totals.get(key, 0) + n
        self._unrecorded[key] = self._unrecorded.get(key, 0) + n

    def count_column(self, model: str, version: int, column: str, what: str, n: int) -> None:
        """Values of one column the version's preparation answered for: `unseen` or `imputed`."""
        self.count(model, version, what, n)
        key = (model, version, column, what)
        self._unrecorded_columns[key] = self._unrecorded_columns.get(key, 0) + n

    def observe_latency(self, model: str, version: int, ms: float) -> None:
        self._latencies.append((model, version, ms))

    def record_live_log_dropped(self, total: int) -> None:
        """The live log's count of dropped rows so far, handed to Ray's metrics as its increase."""
        if total > self._dropped_recorded:
            self.live_log_dropped.inc(total - self._dropped_recorded)
            self._dropped_recorded = total

    def record(self) -> None:
        """Hand what was counted since the last call to Ray's metrics."""
        latencies, self._latencies = self._latencies, []
        for model, version, ms in latencies:
            self.latency.observe(ms, tags={"model": model, "version": str(version)})
        pending, self._unrecorded = self._unrecorded, {}
        for (model, version, what), n in pending.items():
            if n and what in self.counters:
                self.counters[what].inc(n, tags={"model": model, "version": str(version)})
        columns, self._unrecorded_columns = self._unrecorded_columns, {}
        for (model, version, column, what), n in columns.items():
            self.column_counters[what].inc(n, tags={"model": model, "version": str(version), "column": column})

    def counts(self) -> list[dict]:
        """Everything counted so far, one record per (model, version, what)."""
        return [{"model": m, "version": v, "what": w, "n": n} for (m, v, w), n in dict(self.totals).items()]
