"""The monitor's Prometheus metrics (Ray metrics, exported by every node's metrics agent).

`gauge_values` (pure) turns a scored window into the values to set; `MonitorMetrics` holds the
Ray gauges and sets them. Gauges: `handoff_drift_score` (model, version, feature, statistic:
p_value, adjusted_p, psi, wasserstein, jensen_shannon), `handoff_drift_detected` (model, version:
1 while an episode is declared), `handoff_monitor_windows` and `handoff_monitor_rows_scored`.
"""

from __future__ import annotations

STATISTICS = ("statistic", "p_value", "adjusted_p", "psi", "wasserstein", "jensen_shannon")


def gauge_values(model: str, window: dict | None, drift: dict, windows: dict, rows_scored: dict) -> list[tuple]:
    """(gauge, value, tags) for the last scored window and the counters, in a stable order."""
    out: list[tuple] = []
    if window is not None:
        version = str(window["version"])
        for column, score in sorted(window["scores"].items()):
            for statistic in STATISTICS:
                if score.get(statistic) is not None:
                    out.append(("score", float(score[statistic]),
                                {"model": model, "version": version, "feature": column, "statistic": statistic}))
    for version, state in sorted(drift.items()):
        out.append(("detected", 1.0 if state.get("declared") else 0.0, {"model": model, "version": version}))
    for version, n in sorted(windows.items()):
        out.append(("windows", float(n), {"model": model, "version": version}))
    for version, n in sorted(rows_scored.items()):
        out.append(("rows", float(n), {"model": model, "version": version}))
    return out


class MonitorMetrics:
    def __init__(self):
        from ray.util import metrics

        self.gauges = {
            "score": metrics.Gauge("handoff_drift_score", "the last window's drift statistics per column",
                                   tag_keys=("model", "version", "feature", "statistic")),
            "detected": metrics.Gauge("handoff_drift_detected", "1 while drift is declared for the version",
                                      tag_keys=("model", "version")),
            "windows": metrics.Gauge("handoff_monitor_windows", "windows scored", tag_keys=("model", "version")),
            "rows": metrics.Gauge("handoff_monitor_rows_scored", "live rows scored", tag_keys=("model", "version")),
        }

    def set_from(self, model: str, state: dict) -> None:
        for gauge, value, tags in gauge_values(model, state.get("last_window"), state.get("drift", {}),
                                               state.get("windows", {}), state.get("rows_scored", {})):
            self.gauges[gauge].set(value, tags=tags)
