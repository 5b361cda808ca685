"""Connect this process to Ray: a given address, the head `handoff up` started, or a local one."""

from __future__ import annotations

import os

from cluster.services import ServicesState
from cluster.settings import Settings


#: set by Ray's job supervisor in the environment of a submitted job's entry point
JOB_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def inside_ray_job(environ=None) -> bool:
    """True in the entry point of a Ray job: it must join the job's cluster, never start its own."""
    return JOB_DRIVER_ENV in (os.environ if environ is None else environ)


class ClusterUnavailable(ConnectionError):
    """No Ray cluster answers at the address; the message says how to start one."""


def ray_address(settings: Settings, services: ServicesState | None) -> str | None:
    """`--address`/HANDOFF_ADDRESS, else the head from `handoff up`, else None (start one in-process)."""
    return settings.address or (services.ray_address if services else None)


def connect_ray(address: str | None, *, num_cpus: int | None = None, include_dashboard: bool = False) -> None:
    """`ray.init` once per process. Remote clusters require token authentication."""
    import ray

    if ray.is_initialized():
        return
    if address is None and inside_ray_job():
        # the job's cluster (RAY_ADDRESS) and its runtime environment (working_dir) come from Ray
        ray.init(log_to_driver=True, logging_level="WARNING")
        return
    if address is None:
        # "local": always a fresh in-process cluster, never whatever /tmp/ray/ray_current_cluster names
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard, log_to_driver=False,
                 configure_logging=True, logging_level="WARNING")
        return
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # too late if Ray was imported before: see handoff.cli.main
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise ClusterUnavailable(
            f"no Ray cluster answers at {address}: {exc}\n"
            "Start the local services with `handoff up`, or pass the address of a running cluster."
        ) from exc
