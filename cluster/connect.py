"""Connect this process to Ray: a given address, the head `handoff up` started, or a local one."""

from __future__ import annotations

import ipaddress
import os
import socket

from cluster.services import ServicesState
from cluster.settings import Settings, inside_ray_job

__all__ = ["ClusterUnavailable", "connect_ray", "inside_ray_job", "ray_address"]


class ClusterUnavailable(ConnectionError):
    """No Ray cluster answers at the address; the message says how to start one."""


def ray_address(settings: Settings, services: ServicesState | None) -> str | None:
    """`--address`/HANDOFF_ADDRESS, else the head from `handoff up`, else None (start one in-process).
    Inside a Ray job always None: the job joins the cluster that runs it, with its runtime environment."""
    if settings.job_working_dir is not None:
        return None
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
    if loopback_only(address):
        join_over_loopback()
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    except ConnectionError as exc:
        raise ClusterUnavailable(
            f"no Ray cluster answers at {address}: {exc}\n"
            "Start the local services with `handoff up`, or pass the address of a running cluster."
        ) from exc


#: Ray's switch for its single-machine mode (the default on macOS and Windows): node address 127.0.0.1
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only(address: str) -> bool:
    """True for a head that listens on loopback alone (`handoff up`'s): the address names a loopback
    host, and the same port on this machine's own address does not answer."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        if not ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host).is_loopback:
            return False
        port_number = int(port)
    except ValueError:
        return False
    from ray._raylet import node_ip_address_from_perspective

    machine = node_ip_address_from_perspective(None)
    if ipaddress.ip_address(machine).is_loopback:
        return True
    with socket.socket(socket.AF_INET6 if ":" in machine else socket.AF_INET) as sock:
        sock.settimeout(1)
        return sock.connect_ex((machine, port_number)) != 0


def join_over_loopback() -> None:
    """Keep 127.0.0.1 as this driver's address. Ray turns a loopback address into the machine's
    address before connecting (it assumes other nodes), unless it runs in its single-machine mode;
    that mode is read from the environment when Ray is imported, so it is set for this process on
    Ray's constant as well (Ray 2.60 reads it from there at each connection)."""
    import ray._private.ray_constants as ray_constants

    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
