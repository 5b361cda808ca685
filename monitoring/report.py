"""Drift reports: for a drift event, which features moved and by how much, as one PNG and one HTML page.

What a report shows is decided here from data alone: `histograms` (pure, taken by the core when
it declares drift, while it still has the window's rows) gives, per shown feature, the reference
and the window as shares over the same bins; the monitor's own window records give each feature's
score over recent windows. `render` draws the picture with matplotlib (Agg, no display) and
`write_report` writes `report.png` and a self-contained `report.html` (the picture inlined, a table
of every feature's scores), so a report can be drawn again anywhere from the event log.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np

SHOWN = 8          # features drawn: the drifted ones first, then the largest effects
HISTORY = 20       # recent windows on the score plot
BINS = 30


def histograms(reference: dict, window: dict, columns: list[str], bins: int = BINS) -> dict:
    """Per column, the reference's sorted sample and the window's values as shares over common bins
    (from the 0.5% to the 99.5% quantile of both; values outside are counted in the end bins)."""
    out = {}
    for column in columns:
        ref, win = np.asarray(reference[column], dtype=float), np.asarray(window[column], dtype=float)
        lo = float(min(np.quantile(ref, 0.005), np.quantile(win, 0.005)))
        hi = float(max(np.quantile(ref, 0.995), np.quantile(win, 0.995)))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        shares = [np.histogram(np.clip(v, lo, hi), edges)[0] / len(v) for v in (ref, win)]
        out[column] = {"edges": edges.round(6).tolist(), "reference": shares[0].round(6).tolist(),
                       "window": shares[1].round(6).tolist()}
    return out


def category_shares(references: dict, window: dict, scores: dict[str, dict], limit: int = SHOWN) -> dict:
    """Per categorical column worth drawing (one of its figures drifted, else the largest effects),
    the reference's and the window's shares over its buckets (tracked values, `<other>`, `<unseen>`)
    and of gaps: what the report draws side by side."""
    def moved(c):
        own = [scores.get(k, {}) for k in (c, f"{c}.unseen", f"{c}.missing")]
        return (not any(s.get("drifted") for s in own), -max((s.get("effect") or 0) for s in own))

    out = {}
    for column in sorted((c for c in references if c in window), key=moved)[:limit]:
        ref = references[column]
        counts, gaps, _ = ref.window_counts(window[column])
        rows = max(len(window[column]), 1)
        reference = np.append(ref.reference_counts, ref.missing) / max(ref.rows, 1)
        out[column] = {"buckets": [*ref.buckets, "<missing>"],
                       "reference": reference.round(6).tolist(),
                       "window": (np.append(counts, gaps) / rows).round(6).tolist()}
    return out


def drift_reason(event) -> str:
    """What moved, in words, column by column: a categorical figure's own words ("payment_method.unseen:
    'crypto' 14% of rows, never seen in training"), a numeric column's shift in σ."""
    parts = []
    for column, s in event.features.items():
        if s.get("detail"):
            parts.append(f"{column}: {s['detail']}")
        elif s.get("wasserstein") is not None:
            parts.append(f"{column}: shifted {s['wasserstein']:.2f}σ")
        else:
            parts.append(column)
    return f"drift in v{event.version}, windows {event.first_window}–{event.last_window}: " + "; ".join(parts)


def shown_features(scores: dict[str, dict], limit: int = SHOWN) -> list[str]:
    """The features to draw: drifted first (largest Wasserstein first), then the largest others."""
    features = [c for c in scores if scores[c].get("test") != "chi2" and not c.startswith("probability_")]
    return sorted(features, key=lambda c: (not scores[c]["drifted"], -(scores[c].get("wasserstein") or 0)))[:limit]


def _minus_log10(p: float) -> float:
    return min(-math.log10(max(p, 1e-300)), 300.0)


def render(event: dict, history: list[dict]) -> bytes:
    """The report's picture as PNG bytes: effect sizes of every feature, then per shown feature its
    histograms against the reference and its corrected p-value over recent windows with the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = history[-1]["scores"]
    # drifted first, largest shift first (a stored event's keys come back sorted by name)
    features = [c for c in shown_features(last, limit=len(last)) if c in event["histograms"]]
    features += [c for c in event["histograms"] if c not in features]
    every = sorted((c for c in last if not c.startswith("probability_") and last[c].get("test") != "chi2"),
                   key=lambda c: -(last[c].get("wasserstein") or 0))
    categorical = list(event.get("category_shares", {}))
    rows = len(features) + len(categorical) + 1
    fig = plt.figure(figsize=(12, 2.4 * rows + 0.6), constrained_layout=True)
    grid = fig.add_gridspec(rows, 2, width_ratios=[3, 2])
    fig.suptitle(f"Drift in {event['model']} v{event['version']}: windows {event['first_window']}–"
                 f"{event['last_window']}, {len(event['features'])} feature{'s' if len(event['features']) != 1 else ''} moved "
                 f"({', '.join(list(event['features'])[:6])}{'…' if len(event['features']) > 6 else ''})",
                 fontsize=13, fontweight="bold")
    ax = fig.add_subplot(grid[0, :])
    values = [last[c].get("wasserstein") or 0 for c in every]
    ax.bar(range(len(every)), values, color=["#d62728" if last[c]["drifted"] else "#9e9e9e" for c in every])
    tolerances = [last[c].get("tolerance") for c in every]
    if any(t is not None for t in tolerances):
        ax.scatter(range(len(every)), [t if t is not None else np.nan for t in tolerances], marker="_", s=400,
                   color="black", label="tolerance (calibrated at this window size)", zorder=3)
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xticks(range(len(every)), every, rotation=45 if len(every) > 12 else 0, ha="right" if len(every) > 12 else "center",
                  fontsize=8)
    ax.set_ylabel("shift (Wasserstein, σ)")
    ax.set_title("How far each feature moved in the last window (red: drifted after correction)", fontsize=10)
    windows = [h["window"] for h in history]
    threshold = _minus_log10(event["alpha"])
    for i, column in enumerate(features, start=1):
        h = event["histograms"][column]
        edges = np.asarray(h["edges"])
        left = fig.add_subplot(grid[i, 0])
        left.stairs(h["reference"], edges, fill=True, color="#9e9e9e", alpha=0.6, label="reference (training)")
        left.stairs(h["window"], edges, color="#d62728", linewidth=2, label=f"window {event['last_window']}")
        s = last.get(column, {})
        tolerance = f" (tolerance {s['tolerance']:.2f}σ)" if s.get("tolerance") is not None else ""
        moved = (f"shift {s['wasserstein']:.2f}σ{tolerance} · PSI {s.get('psi') or 0:.3f}"
                 if s.get("wasserstein") is not None else "no value in the last window (all gaps)")
        left.set_title(f"{column}: {moved} · KS {s.get('statistic') or 0:.3f} (corrected p "
                       f"{s.get('adjusted_p', 1):.2g})"
                       + ("  DRIFTED" if s.get("drifted") else ""), fontsize=9,
                       color="#d62728" if s.get("drifted") else "black")
        left.set_ylabel("share of rows")
        left.legend(fontsize=7, loc="upper right")
        right = fig.add_subplot(grid[i, 1])
        scores = [_minus_log10(hh["scores"].get(column, {}).get("adjusted_p", 1.0)) for hh in history]
        right.plot(windows, scores, marker="o", color="#1f77b4")
        right.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label=f"threshold α={event['alpha']:g}")
        right.axvspan(event["first_window"] - 0.5, event["last_window"] + 0.5, color="#d62728", alpha=0.08)
        right.set_ylabel("−log10 corrected p")
        right.set_title(f"{column}: drift above the dashed line", fontsize=9)
        right.set_xlabel("window")
        right.legend(fontsize=7, loc="upper left")
    for i, column in enumerate(categorical, start=len(features) + 1):
        h = event["category_shares"][column]
        left = fig.add_subplot(grid[i, 0])
        at = np.arange(len(h["buckets"]))
        left.bar(at - 0.2, h["reference"], width=0.4, color="#9e9e9e", label="reference (training)")
        left.bar(at + 0.2, h["window"], width=0.4, color="#d62728", label=f"window {event['last_window']}")
        left.set_xticks(at, [b[:14] for b in h["buckets"]], rotation=45 if len(at) > 6 else 0,
                        ha="right" if len(at) > 6 else "center", fontsize=7)
        own = {k: last.get(k, {}) for k in (column, f"{column}.unseen", f"{column}.missing") if k in last}
        drifted = [k for k, sc in own.items() if sc.get("drifted")]
        words = "; ".join(sc.get("detail", "") for k, sc in own.items() if sc.get("drifted") and sc.get("detail"))
        left.set_title(f"{column}: shares of its values" + (f" · {words}" if words else "")
                       + ("  DRIFTED" if drifted else ""), fontsize=9, color="#d62728" if drifted else "black")
        left.set_ylabel("share of rows")
        left.legend(fontsize=7, loc="upper right")
        right = fig.add_subplot(grid[i, 1])
        for k in own:
            right.plot(windows, [_minus_log10(hh["scores"].get(k, {}).get("adjusted_p", 1.0)) for hh in history],
                       marker="o", label=k)
        right.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label=f"threshold α={event['alpha']:g}")
        right.axvspan(event["first_window"] - 0.5, event["last_window"] + 0.5, color="#d62728", alpha=0.08)
        right.set_ylabel("−log10 corrected p")
        right.set_xlabel("window")
        right.legend(fontsize=7, loc="upper left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def live_figures(event: dict, events: list[dict]) -> str:
    """What labels said of the event's version up to its last window, in words: live accuracy and log
    loss, or a regression model's live RMSE and MAE (the latest figures of each labelled window); ""
    when no label came."""
    from monitoring.labels import summary

    windows = {}
    for e in events:
        if e["kind"] == "window_labels" and e["version"] == event["version"] and e["window"] <= event["last_window"]:
            windows[str(e["window"])] = e
    live = summary(windows) if windows else {}
    if live.get("rmse") is not None:
        return (f"Live RMSE {live['rmse']:.5g}, MAE {live['mae']:.5g} on {live['labelled']} labelled rows of "
                f"{live['windows']} window(s) (the target's units).")
    if live.get("accuracy") is not None:
        loss = f", log loss {live['log_loss']:.4f}" if live.get("log_loss") is not None else ""
        return f"Live accuracy {live['accuracy']:.2%}{loss} on {live['labelled']} labelled rows of {live['windows']} window(s)."
    return ""


def page(event: dict, history: list[dict], png: bytes, live: str = "") -> str:
    """One self-contained HTML page: the picture inlined, then every feature's scores in the last window."""
    last = history[-1]["scores"]
    rows = "".join(
        f"<tr class='{'drifted' if s['drifted'] else ''}'><td>{html.escape(c)}</td><td>{s['test']}</td>"
        f"<td>{_fmt(s['statistic'], '.4f')}</td><td>{_fmt(s['adjusted_p'], '.3g')}</td>"
        f"<td>{_fmt(s.get('psi'), '.4f')}</td><td>{_fmt(s.get('wasserstein'), '.3f')}</td>"
        f"<td>{_fmt(s.get('tolerance'), '.3f')}</td><td>{_fmt(s.get('effect'), '.3f')}</td>"
        f"<td>{'yes' if s['drifted'] else ''}</td><td>{html.escape(s.get('detail', ''))}</td></tr>"
        for c, s in sorted(last.items(), key=lambda kv: (not kv[1]["drifted"], -(kv[1].get("wasserstein") or 0))))
    title = f"Drift in {event['model']} v{event['version']} ({event['event_id']})"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}
td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}} td:first-child,th:first-child{{text-align:left}}
tr.drifted td{{color:#b71c1c;font-weight:600}} img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Declared at {html.escape(event.get('time', ''))} after windows {event['first_window']}–{event['last_window']} drifted
in a row; {len(event['features'])} feature{'s' if len(event['features']) != 1 else ''} moved: <b>{html.escape(', '.join(event['features']))}</b>.
Tests corrected across features; drift when a corrected p-value is below α = {event['alpha']:g}.</p>
<p>{html.escape(event.get('reason', ''))}</p>
<p>{html.escape(live)}</p>
<img alt="drift report" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Every column in window {event['last_window']}</h2>
<table><tr><th>column</th><th>test</th><th>statistic</th><th>corrected p</th><th>PSI</th><th>shift (σ)</th>
<th>tolerance (σ or effect)</th><th>effect (JS or share moved)</th><th>drifted</th><th>what moved</th></tr>{rows}</table>
</body></html>"""


def history_of(event: dict, events: list[dict], length: int = HISTORY) -> list[dict]:
    """The event's version's scored windows up to its last one, the most recent `length`."""
    scored = [e for e in events if e["kind"] == "window_scored" and e["version"] == event["version"]
              and e["window"] <= event["last_window"]]
    return scored[-length:]


def write_report(event: dict, events: list[dict], out_dir: Path) -> Path:
    """Write `report.png` and `report.html` for `event` into `out_dir`; the HTML page's path."""
    history = history_of(event, events)
    if not history or "histograms" not in event:
        raise ValueError(f"event {event.get('event_id')} has no window records or histograms to draw")
    png = render(event, history)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.png").write_bytes(png)
    target = out_dir / "report.html"
    target.write_text(page(event, history, png, live_figures(event, events)))
    return target
