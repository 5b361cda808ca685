"""The gateway's own HTTP server: uvicorn on a thread of the replica, on a port several replicas share.

Each gateway replica serves HTTP itself (Serve's proxy costs ~10 ms of CPU a request here), on a
socket with `SO_REUSEPORT`, so the replicas on one node share port 8000 and the kernel spreads
connections over the replicas that listen. A replica starts listening only once it can answer
(see `Gateway.reconfigure`): until then the kernel sends every connection to the others.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable

from serving.event_loop import new_event_loop


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket several gateway replicas on one node can share (the kernel balances)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    """An event loop on its own thread; `listen` starts uvicorn on it, `stop` drains and ends it.
    Everything the app touches (the router, its connections and batchers) lives on this loop."""

    def __init__(self, name: str = "handoff-http"):
        self.loop = new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable, timeout: float = 60):
        """Run a coroutine on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def every(self, seconds: float, action: Callable[[], None]) -> None:
        """Call `action` on the loop every `seconds` (metrics recording)."""
        async def repeat():
            while True:
                await asyncio.sleep(seconds)
                action()
        asyncio.run_coroutine_threadsafe(repeat(), self.loop)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def listen(self, app, host: str, port: int, timeout: float = 30) -> None:
        """Bind `host:port` (shared with the node's other replicas) and serve `app` until `stop`."""
        import uvicorn

        sock = reuse_port_socket(host, port)
        # proxy_headers off: nothing reads the client's address (uvicorn's middleware for it ran on
        # every request); no `server` header: one less header to build per answer
        config = uvicorn.Config(app, loop="none", http="httptools", lifespan="off", access_log=False,
                                log_level="warning", timeout_graceful_shutdown=20, proxy_headers=False,
                                server_header=False)
        self._server = uvicorn.Server(config)
        self._serving = asyncio.run_coroutine_threadsafe(self._server.serve(sockets=[sock]), self.loop)
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._serving.done():  # serve() returned or raised before it started
                self._serving.result()
                raise RuntimeError(f"the HTTP server on {host}:{port} stopped before it started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {host}:{port} within {timeout:.0f}s")
            time.sleep(0.01)

    def stop(self, timeout: float = 25) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful shutdown), end the loop."""
        if self._server is not None:
            self._server.should_exit = True
            try:
                self._serving.result(timeout)
            except Exception:  # noqa: BLE001 - shutting down: nothing left to report to
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
