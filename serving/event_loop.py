"""The event loop the gateway's servers and the replicas' direct endpoints run on."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (it comes with `ray[serve]`), else asyncio's.
    Measured in the serving bench: asyncio's pure-Python selector loop and transports were about a
    fifth of the gateway's CPU per request (the loop, `transport.write` to the client and to the
    replica); grpc.aio runs on uvloop as well."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of ray[serve] on Linux and macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
