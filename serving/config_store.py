"""The serving config in force: one record per cluster, in the cluster's own key-value store.

`handoff serve` declares the serving config (configs/serving.yaml, the environment, `--set`) and
stores it here with its first change; every later change reads it from here, whoever makes it: the
CLI's traffic, canary, shadow, promote, rollback and unserve, `handoff monitor start`, and the closed
loop in the monitor actor. So a canary the loop starts redeploys the gateway with the port, API keys
and batching it was served with, never with defaults or a copy taken when the monitor started.

Why the cluster's key-value store (Ray's GCS, the store Serve keeps its own checkpoints in): the
gateway is one per cluster and the record is its settings, so it belongs to the cluster, once;
every process that can change serving is connected to the cluster and reads the same record,
on any node, with no shared filesystem; and it lives exactly as long as what it describes (a new
cluster starts from the file again). Writes happen under the cluster's serving lock
(serving/control_lock.py); a put replaces the whole record at once.
"""

from __future__ import annotations

from serving.config import ServingConfig

KEY = b"serving-config"
NAMESPACE = b"handoff"


def stored_config() -> ServingConfig | None:
    """The serving config in force on the connected cluster; None when nothing was served on it."""
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(KEY, namespace=NAMESPACE)
    return ServingConfig.model_validate_json(raw) if raw else None


def store_config(cfg: ServingConfig) -> None:
    """Make `cfg` the serving config in force (call under the serving lock)."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(KEY, cfg.model_dump_json().encode(), overwrite=True, namespace=NAMESPACE)
