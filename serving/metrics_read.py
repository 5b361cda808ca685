"""Read the gateway's Ray metrics back from the nodes' Prometheus endpoints (for `handoff status`).

`summarize` is pure (Prometheus text in, per-version figures out); `scrape` fetches the text from
every alive node's metrics agent.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from cluster.histograms import quantile_upper_bound

_COUNTERS = {
    "handoff_requests_total": "requests", "handoff_request_errors_total": "errors",
    "handoff_shadow_requests_total": "shadow", "handoff_shadow_agreements_total": "shadow_agreements",
    "handoff_shadow_errors_total": "shadow_errors",
    "handoff_shadow_absolute_difference_total": "shadow_absolute_difference",
}
_SUMS = {"shadow_absolute_difference"}  # counters of amounts, not of events: kept as floats
_HISTOGRAM = "handoff_request_latency_ms"


def _base(name: str) -> str:
    """Ray may prefix exported names with `ray_`; Prometheus counters may carry `_total` twice."""
    return name[4:] if name.startswith("ray_") else name


def summarize(texts: list[str]) -> dict[tuple[str, int], dict]:
    """Per (model, version): counters summed over nodes and replicas, latency p50/p99 bounds."""
    out: dict[tuple[str, int], dict] = {}
    buckets: dict[tuple[str, int], dict[float, float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, labels = _base(sample.name), sample.labels
                if "model" not in labels or "version" not in labels or not labels["version"].isdigit():
                    continue
                key = (labels["model"], int(labels["version"]))
                row = out.setdefault(key, {})
                for prefix, field in _COUNTERS.items():
                    if name in (prefix, f"{prefix}_total"):
                        row[field] = row.get(field, 0) + (sample.value if field in _SUMS else int(sample.value))
                if name == f"{_HISTOGRAM}_bucket":
                    le = float(labels["le"])
                    buckets.setdefault(key, {})
                    buckets[key][le] = buckets[key].get(le, 0) + sample.value
                elif name == f"{_HISTOGRAM}_sum":
                    row["latency_sum_ms"] = row.get("latency_sum_ms", 0) + sample.value
                elif name == f"{_HISTOGRAM}_count":
                    row["latency_count"] = row.get("latency_count", 0) + int(sample.value)
    for key, row in out.items():
        pairs = list(buckets.get(key, {}).items())
        row["p50_ms_at_most"] = quantile_upper_bound(pairs, 0.5)
        row["p99_ms_at_most"] = quantile_upper_bound(pairs, 0.99)
        row["latency_buckets"] = sorted(pairs)  # cumulative: a period's quantile is the difference of two
        if row.get("shadow"):
            if "shadow_absolute_difference" in row:  # regression: how far the shadow's answers are from the live ones
                row["shadow_mean_absolute_difference"] = row["shadow_absolute_difference"] / row["shadow"]
            else:
                row["shadow_agreement"] = row.get("shadow_agreements", 0) / row["shadow"]
    return out


def scrape(timeout_s: float = 5) -> list[str]:
    """The Prometheus text of every alive node's Ray metrics agent (needs `ray.init` first)."""
    import ray

    texts = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not node.get("Alive") or not port:
            continue
        try:
            with urllib.request.urlopen(f"http://{node['NodeManagerAddress']}:{port}/metrics",
                                        timeout=timeout_s) as response:
                texts.append(response.read().decode())
        except OSError:
            continue  # a node whose agent does not answer contributes nothing; status says so
    return texts
