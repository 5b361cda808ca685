"""`handoff feedback NAME FILE`: send a table of true labels to the served model's gateway.

The file (Parquet, or CSV with a header) has a row id column and a label column; the labels go to
`POST /v2/models/NAME/feedback` in batches, so the gateway checks them exactly as it checks any
client's (ids, the model's classes) and the monitor joins them to the live log's rows. A CSV's cells
are read as written (an id `00123` stays `00123`), never as the types a reader would guess.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer

from handoff.common import err, fail, out, print_result
from handoff.options import JsonOpt

BATCH = 5_000  # labels a request at most
BATCH_BYTES = 500_000  # and this much JSON at most: half the gateway's default 1 MB body (ids run to 256 chars)
SHOWN = 5  # ids named in one error message
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def read_labels(path: Path, id_column: str, label_column: str) -> tuple[list[str], list]:
    """(ids, labels) from a Parquet or CSV file, or a clear error naming what is wrong. A CSV's cells
    are text as written (a label written as a JSON number is sent as that number: a regression model's
    true value); a Parquet file's ids are text or whole numbers, its labels numbers, booleans or text.
    A row without an id, a column of any other type or a column named twice is refused, never guessed at."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.is_file():
        fail(f"{path}: no such file")
    if path.suffix.lower() in {".json", ".jsonl", ".ndjson"}:
        fail(f"{path}: JSON is not read here; give a Parquet or CSV file (or POST the labels as JSON to the "
             "gateway's /v2/models/NAME/feedback)")
    parquet = path.suffix.lower() in {".parquet", ".pq"}
    try:
        table = pq.read_table(path) if parquet else pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            strings_can_be_null=False, column_types={id_column: pa.string(), label_column: pa.string()}))
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        fail(f"{path}: not a readable Parquet or CSV file ({type(exc).__name__}: {exc})")
    missing = [c for c in (id_column, label_column) if c not in table.column_names]
    if missing:
        fail(f"{path}: no column(s) {missing} (columns: {table.column_names}); name them with "
             "--id-column/--label-column")
    twice = sorted({c for c in (id_column, label_column) if table.column_names.count(c) > 1})
    if twice:
        fail(f"{path}: column(s) {twice} appear more than once (columns: {table.column_names}); which one is "
             "meant is not clear")
    if table.num_rows == 0:
        fail(f"{path}: no rows")
    ids, labels = table.column(id_column), table.column(label_column)
    return _row_ids(path, id_column, ids), (_label_values(path, label_column, labels) if parquet
                                            else [_number_or_text(v) for v in labels.to_pylist()])


def _value_type(column):
    """The type of a column's values (a dictionary-encoded column's: its dictionary's)."""
    import pyarrow.types as pt

    return column.type.value_type if pt.is_dictionary(column.type) else column.type


def _row_ids(path: Path, name: str, column) -> list[str]:
    """The column's ids as text: a column of text or whole numbers (floats would be sent as `12.0`, bytes
    as `b'..'`); a row without an id is refused, naming it."""
    import pyarrow.types as pt

    kind = _value_type(column)
    if not (pt.is_string(kind) or pt.is_large_string(kind) or pt.is_integer(kind)):
        fail(f"{path}: column {name!r} holds {column.type}; row ids are text (or whole numbers)"
             + (" — whole numbers with a gap are read as floats" if pt.is_floating(kind) else ""))
    ids = column.to_pylist()
    gaps = [row for row, i in enumerate(ids, 1) if i is None or i == ""]
    if gaps:
        fail(f"{path}: column {name!r} has no id in {len(gaps)} row(s) (the first: data row {gaps[0]})")
    return [str(i) for i in ids]


def _label_values(path: Path, name: str, column) -> list:
    """A Parquet column's labels as sent: numbers, booleans or text (what JSON can carry)."""
    import pyarrow.types as pt

    kind = _value_type(column)
    if not (pt.is_integer(kind) or pt.is_floating(kind) or pt.is_boolean(kind) or pt.is_string(kind)
            or pt.is_large_string(kind)):
        fail(f"{path}: column {name!r} holds {column.type}; labels are numbers, booleans or text")
    return column.to_pylist()


def _number_or_text(text: str):
    """A CSV cell as sent: the number it is when written as a JSON number (`7`, `-2.5`, `1e3`), else the
    text as written (`007`, `yes`, `2024-01-01`): the gateway matches text to the model's classes."""
    if _JSON_NUMBER.fullmatch(text):
        try:
            return json.loads(text)
        except ValueError:  # an integer past Python's 4,300 digits: sent as text, refused by the gateway
            pass
    return text


def one_label_per_id(ids: list[str], labels: list) -> tuple[list[str], list]:
    """Each id once, with its label (a repeat with the same label is dropped), or a clear error naming the
    ids the file labels differently: which of the labels is true is not for the CLI to guess, and batches
    sent apart would keep whichever came last."""
    first: dict[str, object] = {}
    conflicts: dict[str, None] = {}
    for i, label in zip(ids, labels):
        if i not in first:
            first[i] = label
        elif first[i] != label and not (first[i] != first[i] and label != label):  # NaN twice is the same
            conflicts[i] = None
    if conflicts:
        shown = ", ".join(repr(i) for i in list(conflicts)[:SHOWN])
        more = f" and {len(conflicts) - SHOWN} more" if len(conflicts) > SHOWN else ""
        fail(f"{len(conflicts)} id(s) are labelled differently in the file: {shown}{more}; keep one label per id")
    return list(first), list(first.values())


def _batches(ids: list[str], labels: list):
    """The labels as request bodies of at most `BATCH` entries and about `BATCH_BYTES` of JSON."""
    batch, size = [], 0
    for i, label in zip(ids, labels):
        entry = {"request_id": i, "label": label}
        n = len(json.dumps(entry)) + 2
        if batch and (len(batch) == BATCH or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += n
    if batch:
        yield batch


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
    rows = len(ids)
    ids, labels = one_label_per_id(ids, labels)
    endpoint = f"{url.rstrip('/')}/v2/models/{quote(name, safe='')}/feedback"
    sent = done = 0
    with err.status(f"sending {len(ids)} label(s) to {endpoint} …") as status:
        for batch in _batches(ids, labels):
            sent += post(endpoint, {"labels": batch}, api_key or os.environ.get("HANDOFF_API_KEY"))["accepted"]
            done += len(batch)
            status.update(f"sent {done}/{len(ids)} label(s) …")
    if as_json:
        print_result({"model": name, "labels": rows, "accepted": sent})
    else:
        out.print(f"{name}: {sent} label(s) accepted ({rows - sent} repeated in the file)")
