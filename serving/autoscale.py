"""The autoscaling rule for version deployments: Serve's queue-length rule over all their load.

Requests on the direct path (serving/replica_server.py) never pass a Serve handle, so Serve's own
count of ongoing requests misses them; each replica reports what its clients have in flight
(`ModelVersion.record_autoscaling_stats`) and this rule adds it to what Serve counted. Serve wraps
the rule with the deployment's min/max replicas, scaling factors and delays.

Pure and self-contained: Serve pickles this module by value into its controller.
"""

from __future__ import annotations

DIRECT_LOAD_METRIC = "handoff_direct_ongoing"
POLICY_PATH = "serving.autoscale:ongoing_requests_policy"


def ongoing_requests_policy(ctx) -> tuple[float, dict]:
    """Replicas wanted: (requests Serve saw + requests in flight on the direct path) / target per replica."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    direct = sum(((ctx.aggregated_metrics or {}).get(DIRECT_LOAD_METRIC) or {}).values())
    return (ctx.total_num_requests + direct) / ctx.config.get_target_ongoing_requests(), {}
