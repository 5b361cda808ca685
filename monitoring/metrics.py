"""The monitor's Prometheus metrics (Ray metrics, exported by every node's metrics agent).

`gauge_values` (pure) turns a scored window into the values to set; `MonitorMetrics` holds the
Ray gauges and sets them. Gauges: `handoff_drift_score` (model, version, feature, statistic:
p_value, adjusted_p, psi, wasserstein, jensen_shannon, tolerance; for a categorical column `COL`, its
unseen values `COL.unseen` and any column's gaps `COL.missing` also effect, share and reference_share:
the share of rows with a value training never held, or left empty), `handoff_drift_detected` (model, version:
1 while an episode is declared), `handoff_monitor_windows` and `handoff_monitor_rows_scored`,
`handoff_live_accuracy` and `handoff_live_log_loss` (model, version: over the labelled rows of the
recent windows; a regression model's `handoff_live_rmse` and `handoff_live_mae`), `handoff_estimated_accuracy` (model, version: the last window's, before labels), `handoff_monitor_rows_behind` (model: read from the live log, not yet in a window).
"""

from __future__ import annotations

from monitoring.labels import summary

STATISTICS = ("statistic", "p_value", "adjusted_p", "psi", "wasserstein", "jensen_shannon", "tolerance", "effect",
              "share", "reference_share")


def gauge_values(model: str, window: dict | None, drift: dict, windows: dict, rows_scored: dict,
                 labels: dict | None = None, rows_behind: int | None = None,
                 estimated: dict | None = None) -> list[tuple]:
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
    for version, per_window in sorted((labels or {}).items()):
        live = summary(per_window)
        for gauge in ("accuracy", "log_loss", "rmse", "mae"):
            if live.get(gauge) is not None:
                out.append((gauge, float(live[gauge]), {"model": model, "version": version}))
    for version, per_window in sorted((estimated or {}).items()):
        if per_window:
            last = max(per_window, key=int)
            out.append(("estimated", float(per_window[last]), {"model": model, "version": version}))
    if rows_behind is not None:
        out.append(("behind", float(rows_behind), {"model": model}))
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
            "accuracy": metrics.Gauge("handoff_live_accuracy", "accuracy on the labelled rows of recent windows",
                                      tag_keys=("model", "version")),
            "log_loss": metrics.Gauge("handoff_live_log_loss", "mean log loss on the labelled rows of recent windows",
                                      tag_keys=("model", "version")),
            "rmse": metrics.Gauge("handoff_live_rmse", "regression: RMSE on the labelled rows of recent windows "
                                  "(the target's units)", tag_keys=("model", "version")),
            "mae": metrics.Gauge("handoff_live_mae", "regression: mean absolute error on the labelled rows of "
                                 "recent windows (the target's units)", tag_keys=("model", "version")),
            "estimated": metrics.Gauge("handoff_estimated_accuracy", "accuracy the last window's calibrated "
                                       "probabilities expect (before labels)", tag_keys=("model", "version")),
            "behind": metrics.Gauge("handoff_monitor_rows_behind", "live-log rows read but not yet in a window",
                                    tag_keys=("model",)),
        }

    def set_from(self, model: str, state: dict, rows_behind: int) -> None:
        for gauge, value, tags in gauge_values(model, state.get("last_window"), state.get("drift", {}),
                                               state.get("windows", {}), state.get("rows_scored", {}),
                                               state.get("labels", {}), rows_behind, state.get("estimated", {})):
            self.gauges[gauge].set(value, tags=tags)
