"""The `Gateway` Serve deployment: Handoff's HTTP and gRPC front for every served model (thin).

Each gateway replica runs its own HTTP server (serving/http_server.py: uvicorn on a thread, port
8000 shared by the node's replicas through `SO_REUSEPORT`; Serve's proxy is not used) and, on the
same event loop, the OIP v2 gRPC server (serving/oip_grpc.py, port 8001, also shared) in front of
the router (serving/router.py: version choice, direct path, shadows, live log) and records metrics
(serving/metrics.py). The serving benchmark measured why: Serve's proxy costs ~10 ms of CPU a
request on this machine, a Serve handle call ~40% of this front's CPU; the front with the direct
path answers ~2,000 requests/s on 2 cores.

The routing table arrives as `user_config` (`serving.config.RoutingTable`): a change reaches
`reconfigure` in the running replicas, which swap the table between two requests; nothing is
restarted. A replica listens only once its first table has arrived, so a restarted replica never
answers a served model with 404: until then the kernel gives its connections to the other replicas.
"""

from __future__ import annotations

import os

from ray import serve

from serving.config import GatewayConfig, LiveLogConfig, RoutingTable
from serving.http_app import build_asgi
from serving.http_server import HttpServer
from serving.metrics import GatewayMetrics
from serving.oip_grpc import start_grpc, stop_grpc
from serving.router import Router

GATEWAY_APP = "handoff-gateway"
GATEWAY_DEPLOYMENT = "Gateway"


@serve.deployment(name=GATEWAY_DEPLOYMENT, health_check_period_s=5, graceful_shutdown_timeout_s=30)
class Gateway:
    def __init__(self, gateway: GatewayConfig, live_log: LiveLogConfig | None):
        """`live_log` has its root resolved (None: no live log)."""
        self._cfg = gateway
        self._metrics = GatewayMetrics()
        self._router = Router(live_log, self._metrics, gateway.request_timeout_s, gateway.max_queued_per_version)
        self._app = build_asgi(self._router, gateway.max_body_bytes, frozenset(gateway.api_keys))
        self._http = HttpServer()
        self._grpc = None
        self._http.every(1.0, self._record)

    def _record(self) -> None:
        self._metrics.record()
        if self._router.live_log is not None:
            self._metrics.record_live_log_dropped(self._router.live_log.rows_dropped)

    def reconfigure(self, user_config: dict) -> None:
        """A new routing table (Serve calls this after `__init__` and on every change, no restart);
        the first one also opens the HTTP port."""
        self._http.run(self._router.apply(RoutingTable.model_validate(user_config)))
        if not self._http.listening:
            self._http.listen(self._app, self._cfg.host, self._cfg.port)
            if self._cfg.grpc_port is not None:
                self._grpc = self._http.run(start_grpc(self._router, self._cfg.host, self._cfg.grpc_port,
                                                       self._cfg.max_body_bytes, frozenset(self._cfg.api_keys)))

    # --- control plane calls (through the deployment handle) ----------------------------------
    def describe(self) -> dict:
        """This replica's routing table and counters (the CLI's `status` reads it)."""
        live_log = self._router.live_log
        return {"pid": os.getpid(), **self._router.describe(), "counts": self._metrics.counts(),
                "live_log_rows_written": live_log.rows_written if live_log else 0,
                "live_log_rows_dropped": live_log.rows_dropped if live_log else 0}

    def flush_live_log(self) -> int:
        live_log = self._router.live_log
        if live_log is not None:
            live_log.flush()
            return live_log.rows_written
        return 0

    def __del__(self):
        """Graceful shutdown: stop accepting, let in-flight requests finish, write the live log."""
        if getattr(self, "_grpc", None) is not None:
            try:
                self._http.run(stop_grpc(self._grpc, 20), timeout=25)
            except Exception:  # noqa: BLE001 - shutting down: nothing left to report to
                pass
        if getattr(self, "_http", None) is not None:
            self._http.stop()
        if getattr(self, "_metrics", None) is not None:
            self._metrics.record()
        router = getattr(self, "_router", None)
        if router is not None and router.live_log is not None:
            router.live_log.close()
