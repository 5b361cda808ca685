"""A `text/csv` body at `/invocations`, as MLflow's scoring server takes it (pure).

MLflow's server reads such a body with `pandas.read_csv`, which guesses each column's type from its
cells (`007` becomes 7, `True` a boolean). Here the model's signature says what each column holds,
so a cell is read as that and nothing else: a numeric column's cell is a number as written in
decimal or scientific notation, an integer-valued categorical column's an integer (or a whole number
written as a float, as pandas writes an integer column with a gap), a boolean one's `true`/`false`
in any case, a text one's the text as written. An empty cell is a missing value (as pandas reads it); a cell that is not what its column holds is
left as text, so the one parser behind every format refuses it naming the column and value. The
first line names the columns; the rows then take the `dataframe_split` path, with its checks.
"""

from __future__ import annotations

import csv
import io
import re

from serving.protocol import BadRequest, ModelSignature, parse_invocations

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _cell(text: str, values: str | None):
    """One cell as its column holds it (see the module's docstring); None for an empty cell."""
    if text == "":
        return None
    if values is None:  # numeric
        return float(text) if _NUMBER.fullmatch(text.strip()) else text
    if values == "integer":  # `3`, or `3.0` as pandas writes an integer column with a gap (2.5: refused)
        try:
            return int(text) if _INTEGER.fullmatch(text.strip()) else (
                float(text) if _NUMBER.fullmatch(text.strip()) else text)
        except ValueError:  # past Python's 4,300 digits: text, refused by name as any other
            return text
    if values == "bool":
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    return text


def parse_csv(body: bytes, sig: ModelSignature):
    """A CSV body's rows as `parse_invocations` gives them (a matrix, or each column's values); its
    refusals name `text/csv`, the format the client sent, not the payload it became here."""
    payload = csv_split(body, sig)
    try:
        return parse_invocations(payload, sig)
    except BadRequest as exc:
        message = str(exc)
        if message.startswith("dataframe_split"):
            message = "text/csv" + message[len("dataframe_split"):]
        raise BadRequest(message, exc.status, exc.headers) from None


def csv_split(body: bytes, sig: ModelSignature) -> dict:
    """The body as a `dataframe_split` payload for `sig`'s model, or a 400 naming what is wrong with
    it as CSV (not UTF-8, unbalanced quotes, no header, no rows)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"text/csv: the body is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(reader.line_num, row) for row in reader if row]  # blank lines skipped, as pandas does
    except csv.Error as exc:
        raise BadRequest(f"text/csv: not readable as CSV at line {reader.line_num} ({exc})") from None
    if not rows:
        raise BadRequest("text/csv: the body is empty; send a header line naming the columns, then rows")
    (_, header), data = rows[0], rows[1:]
    if not set(header) & set(sig.features):
        raise BadRequest(f"text/csv: the first line must name the columns ({', '.join(sig.features)}); it holds "
                         f"{', '.join(map(repr, header[:8]))}{' …' if len(header) > 8 else ''}", status=422)
    ragged = next(((line, len(row)) for line, row in data if len(row) != len(header)), None)
    if ragged:
        raise BadRequest(f"text/csv: line {ragged[0]} has {ragged[1]} cell(s); the header names {len(header)}")
    kinds = dict(zip(sig.features, sig.value_types or (None,) * len(sig.features)))
    types = [kinds.get(name) for name in header]
    return {"dataframe_split": {"columns": header,
                                "data": [[_cell(t, v) for t, v in zip(row, types)] for _, row in data]}}
