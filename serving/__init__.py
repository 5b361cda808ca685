"""Serving: versioned Ray Serve deployments from the registry, behind one HTTP gateway.

The public API (what the CLI and the closed loop's port, handoff/loop_port.py, call: monitoring never
imports serving) is exported here, imported on first use so that importing the package starts
nothing and pulls in neither Ray Serve nor MLflow:

- `ServingControl`: serve, traffic, canary, shadow, promote, rollback, unserve, describe.
- `stop_serving`: stop every application gracefully (gateways write their live logs) before a cluster stops.
- `ServingConfig`, `load_serving_config`: the typed serving config (file, environment, flags);
  `ConfigSource`: which config a change uses (declared, or the one in force with overrides);
  `stored_config`: the serving config in force on the connected cluster.
- `serving_lock`, `LockTimeout`: the cluster's lock that every serving change holds.
- `TrafficPolicy`, `PolicyError`, `parse_weights`: the pure traffic policy.
- `GATEWAY_APP`, `app_name`: the Serve application names (the gateway, one per version).
- `scrape`, `summarize`: read the gateway's Prometheus metrics back.
- `live_log_dir`: where the live log of one model lies (Parquet, Hive partitions by date).
- `predict_table`, `BatchConfig`, `load_batch_config`, `BatchResult`, `BatchInputError`: batch
  inference of a Parquet table with a registered version on Ray Data (`handoff predict`; the
  `serving.batch` subpackage).
"""

from __future__ import annotations

from cluster.lazy import lazy_exports
from serving.batch import _EXPORTS as BATCH_EXPORTS

#: public name → the module that defines it
_EXPORTS = {
    "ServingControl": "serving.control",
    "stop_serving": "serving.control",
    "ServingConfig": "serving.config",
    "load_serving_config": "serving.config",
    "ConfigSource": "serving.config",
    "stored_config": "serving.config_store",
    "serving_lock": "serving.control_lock",
    "LockTimeout": "serving.control_lock",
    "TrafficPolicy": "serving.policy",
    "PolicyError": "serving.policy",
    "NotServed": "serving.policy",
    "parse_weights": "serving.policy",
    "GATEWAY_APP": "serving.gateway",
    "app_name": "serving.model_version",
    "scrape": "serving.metrics_read",
    "summarize": "serving.metrics_read",
    "live_log_dir": "serving.live_log",
    **BATCH_EXPORTS,  # batch inference's public names, listed once in its subpackage
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
