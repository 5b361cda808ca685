"""The serving half of `make demo`: deploy the champion, send live HTTP requests, canary a second
version at 10%, and show the observed split and latencies. Runs on the demo's in-process Ray."""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from rich import box
from rich.console import Console
from rich.table import Table

ROW = [50.0, 0.0, 80.0, 0.0, 20.0, 0.0, 30.0, 60.0, 30.0]


def _send(url: str, routing_key: str | None) -> tuple[str, float, int]:
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP32", "data": ROW}]}).encode()
    headers = {"content-type": "application/json"}
    if routing_key:
        headers["x-routing-key"] = routing_key
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=30) as r:
            return r.headers["x-model-version"], (time.perf_counter() - start) * 1000, r.status
    except urllib.error.HTTPError as e:
        return "-", (time.perf_counter() - start) * 1000, e.code


def send_load(url: str, requests: int, concurrency: int = 8) -> list[tuple[str, float, int]]:
    """A bounded burst of live requests on 127.0.0.1 (each with its own routing key)."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda i: _send(url, f"user-{i}"), range(requests)))


def show(out: Console, title: str, results: list[tuple[str, float, int]]) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("version", "requests", "share", "p50 ms", "p99 ms", "errors"):
        table.add_column(col)
    versions = sorted({v for v, _, s in results if s == 200})
    for v in versions:
        lat = sorted(ms for ver, ms, s in results if ver == v and s == 200)
        table.add_row(f"v{v}", str(len(lat)), f"{len(lat) / len(results):.1%}", f"{statistics.median(lat):.1f}",
                      f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f}", "-")
    errors = sum(s != 200 for _, _, s in results)
    table.add_row("all", str(len(results)), "100%", "", "", str(errors))
    out.print(table)


def _show_devices(out: Console, control, name: str) -> None:
    """Where each served version's weights are (a replica asked): `cpu` or `cuda:0`."""
    policy = control.current_policy(name)
    devices = control.version_signatures(name, list(policy.versions))
    out.print("  " + ", ".join(f"v{v} on {info['device']}" for v, info in sorted(devices.items())))


def run_serving_demo(control, name: str, challenger: int, port: int, out: Console, requests: int = 300) -> None:
    url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
    out.print(f"\n[bold]Serving[/bold] {name}: the champion behind http://127.0.0.1:{port}")
    _show_devices(out, control, name)
    show(out, f"{requests} live requests, champion only", send_load(url, requests))
    out.print(f"canary: version {challenger} gets 10% of live traffic …")
    control.canary(name, challenger, 10)
    _show_devices(out, control, name)
    show(out, f"{requests * 2} live requests with a 10% canary of v{challenger}", send_load(url, requests * 2))
    out.print(f"try it:  curl -s -H 'content-type: application/json' -d "
              f"'{{\"inputs\":[{{\"name\":\"features\",\"shape\":[1,9],\"datatype\":\"FP32\",\"data\":{ROW}}}]}}' {url}")
