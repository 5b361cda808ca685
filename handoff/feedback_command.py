"""`handoff feedback NAME FILE`: send a table of true labels to the served model's gateway.

The file (Parquet, or CSV with a header) has a row id column and a label column; the labels go to
`POST /v2/models/NAME/feedback` in batches, so the gateway checks them exactly as it checks any
client's (ids, the model's classes) and the monitor joins them to the live log's rows.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from handoff.common import err, fail, out, print_result
from handoff.options import JsonOpt

BATCH = 5_000  # labels a request: ~300 KB of JSON, under the gateway's default 1 MB body limit


def read_labels(path: Path, id_column: str, label_column: str) -> tuple[list, list]:
    """(ids, labels) from a Parquet or CSV file, or a clear error naming what is wrong."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        table = pq.read_table(path) if path.suffix.lower() in {".parquet", ".pq"} else pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        fail(f"{path}: not a readable Parquet or CSV file ({type(exc).__name__}: {exc})")
    missing = [c for c in (id_column, label_column) if c not in table.column_names]
    if missing:
        fail(f"{path}: no column(s) {missing} (columns: {table.column_names}); name them with "
             "--id-column/--label-column")
    if table.num_rows == 0:
        fail(f"{path}: no rows")
    return [str(i) for i in table.column(id_column).to_pylist()], table.column(label_column).to_pylist()


def _gateway_url(url: str) -> str:
    """`url` when it can be the gateway's address: http or https, a host, a numeric port if any, nothing
    after the path (the feedback route is appended to it); otherwise a clear error naming it (urllib
    would stop with a traceback, or build a route no gateway has)."""
    from urllib.parse import urlsplit

    example = "give the gateway's address, for example http://127.0.0.1:8000"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it: a port that is not a number in 0-65535 raises
    except ValueError as exc:
        fail(f"--url {url!r} is not a URL ({exc}); {example}")
    if re.search(r"[\x00-\x20\x7f]", url):
        fail(f"--url {url!r} holds a space or a control character; {example}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--url {url!r} is not an http:// or https:// URL with a host; {example}")
    if parts.query or parts.fragment:
        fail(f"--url {url!r} has a query or fragment; {example}")
    return url


def post(url: str, body: dict, api_key: str | None) -> dict:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        fail(f"the gateway refused a batch ({exc.code}): {message}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"no gateway answers at {url} ({getattr(exc, 'reason', exc)}); is the model served "
             "(`handoff serve`), and is --url right?")


def feedback(name: Annotated[str, typer.Argument(help="served model name")],
             file: Annotated[Path, typer.Argument(help="Parquet or CSV file of row ids and their true labels")],
             url: Annotated[str, typer.Option(help="the gateway")] = "http://127.0.0.1:8000",
             id_column: Annotated[str, typer.Option(help="column of row ids (the answer's id; ID#1, ID#2, … "
                                                         "for the further rows of a request)")] = "request_id",
             label_column: Annotated[str, typer.Option(help="column of true labels, as the model names its "
                                                            "classes")] = "label",
             api_key: Annotated[str | None, typer.Option(envvar="HANDOFF_API_KEY", help="the gateway's API key, "
                                                         "when it has some")] = None,
             as_json: JsonOpt = False) -> None:
    """Send true labels of answered rows to NAME's gateway; its monitor turns them into live accuracy.

    Sending a file again is harmless: one label per row id is kept (the latest). A batch with a bad
    id or label is refused whole, naming the entries; batches sent before it stay."""
    url = _gateway_url(url)
    ids, labels = read_labels(file, id_column, label_column)
    endpoint = f"{url.rstrip('/')}/v2/models/{name}/feedback"
    sent = 0
    with err.status(f"sending {len(ids)} label(s) to {endpoint} …") as status:
        for start in range(0, len(ids), BATCH):
            batch = [{"request_id": i, "label": lab} for i, lab in zip(ids[start:start + BATCH],
                                                                     labels[start:start + BATCH])]
            sent += post(endpoint, {"labels": batch}, api_key or os.environ.get("HANDOFF_API_KEY"))["accepted"]
            status.update(f"sent {start + len(batch)}/{len(ids)} label(s) …")
    if as_json:
        print_result({"model": name, "labels": len(ids), "accepted": sent})
    else:
        out.print(f"{name}: {sent} label(s) accepted ({len(ids) - sent} repeated in the file)")
