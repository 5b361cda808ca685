"""A corpus of hostile inputs over every POST route of the gateway's HTTP app, in-process through
both fronts (no Ray): non-UTF-8 bytes, huge and deeply nested JSON, integers no parser converts, odd
unicode in every string field, duplicate keys, control characters in ids and headers. None gets a
5xx (the one model whose version fails aside) and every answer is readable: a JSON `{"error": ...}`
body and headers any HTTP client parses (ASCII, no line breaks, bounded)."""

import json

import pytest

from serving.feedback import parse_feedback
from serving.http_app import build_asgi
from serving.protocol import BadRequest
from tests.unit.test_http_app import OIP, SIG, OneModelBackend, call


class Backend(OneModelBackend):
    """`m` takes feedback as the gateway does; `broken`'s label store fails (a full disk)."""

    async def feedback(self, model, payload) -> dict:
        labels = parse_feedback(payload, SIG.classes)
        if model == "broken":
            raise OSError("[Errno 28] No space left on device: '/srv/secret/path/feedback.parquet'")
        return {"accepted": len(labels.request_ids)}


FRONT = build_asgi(Backend(), max_body_bytes=1 << 20)
APPS = {"direct front": FRONT, "FastAPI routes": FRONT.fastapi}
INFER = ["/v2/models/m/infer", "/v2/models/m/versions/1/infer"]
ODD = ["\u202e", "\x00", "\ud800", "\U0001f600" * 50, "\u0301", "€", "a\nb", "\ufeff", " ", "", "x" * 5000,
       "\U000e0001", "%00", "../../etc/passwd"]


def oip(**tensor) -> bytes:
    body = {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0], **tensor}]}
    return json.dumps(body).encode()


def corpus() -> list[tuple[str, bytes, dict]]:
    """(path, body, headers) of every hostile case."""
    cases = []
    raw = [b"\xff\xfe\x00{", b'{"inputs": "\x80\x81"}', b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
           b"1" * 5000, b'{"inputs": [], "inputs": [{"name": "features"}]}', b'{"id": 1e999, "inputs": []}',
           b'{"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 1e999]}]}',
           b'{"inputs": [{"name": "features", "shape": [' + b"9" * 400 + b', 3], "datatype": "FP32", "data": []}]}',
           b"\x00" * 1000, b'"just a string"', b"null", b"[]", b"{}", json.dumps({"x": "y" * 900_000}).encode()]
    for path in [*INFER, "/v2/models/m/invocations", "/v2/models/m/feedback"]:
        cases += [(path, body, {}) for body in raw]
    for odd in ODD:
        for path in INFER:
            cases += [(path, oip(name=odd), {}), (path, oip(datatype=odd), {}), (path, oip(data=[odd, 2, 3]), {}),
                      (path, oip(parameters={odd: odd}), {}),
                      (path, json.dumps({"id": odd, **json.loads(OIP)}).encode(), {}),
                      (path, json.dumps({**json.loads(OIP), "outputs": [{"name": odd}]}).encode(), {})]
        cases += [("/v2/models/m/invocations", json.dumps({"dataframe_split": {"columns": [odd, "f1", "f2"],
                                                                              "data": [[odd, 1, 2]]}}).encode(), {}),
                  ("/v2/models/m/invocations", json.dumps({"dataframe_records": [{odd: 1.0}]}).encode(), {}),
                  ("/v2/models/m/invocations", json.dumps({"instances": [[odd]]}).encode(), {}),
                  ("/v2/models/m/feedback", json.dumps({"labels": [{"request_id": odd, "label": "cat"}]}).encode(), {}),
                  ("/v2/models/m/feedback", json.dumps({"labels": [{"request_id": "r1", "label": odd}]}).encode(), {}),
                  ("/v2/models/m/feedback", json.dumps({"labels": [{odd: "r1", "label": "cat"}]}).encode(), {})]
    for header in ("x-request-id", "x-routing-key"):
        for value in ("€uro", "a\tb", "x" * 10_000, "\u202e"):
            cases.append((INFER[0], OIP, {header: value}))
    cases += [("/v2/models/m/infer", OIP, {"inference-header-content-length": v}) for v in ("-1", "1e9", "99999", "")]
    cases += [(f"/v2/models/{odd}/infer", OIP, {}) for odd in ("%E2%82%AC", "%FF", "a%00b", "x" * 3000)]
    cases.append(("/v2/models/m/feedback", json.dumps({"labels": [{"request_id": "r1", "label": 10 ** 400}]}).encode(),
                  {}))
    return cases


def readable(headers: dict) -> bool:
    return all(k.isascii() and v.isascii() and "\n" not in v and "\r" not in v and len(v) <= 1024
               for k, v in headers.items())


@pytest.mark.parametrize("front", list(APPS))
def test_no_hostile_input_gets_a_5xx_or_an_unreadable_answer(front):
    app = APPS[front]
    seen = 0
    for path, body, headers in corpus():
        status, answered, payload = call(app, "POST", path, body, headers)
        assert status < 500, (path, body[:80], headers, status, payload)
        assert readable(answered), (path, body[:80], headers, answered)
        if status >= 400:
            assert isinstance(payload, dict) and isinstance(payload.get("error"), str), (path, body[:80], payload)
            json.dumps(payload, ensure_ascii=False).encode("utf-8")  # the body is valid UTF-8 JSON
        seen += 1
    assert seen > 250


def test_a_key_repeated_in_one_object_is_refused_naming_it():
    for app in APPS.values():
        status, _, payload = call(app, "POST", INFER[0], b'{"inputs": [], "inputs": [{"name": "features"}]}')
        assert status == 400 and "'inputs' appears more than once" in payload["error"]


def test_a_request_id_is_at_most_256_visible_characters_with_no_line_break():
    for app in APPS.values():
        ok = call(app, "POST", INFER[0], json.dumps({"id": "r" * 256, **json.loads(OIP)}).encode())
        assert ok[0] == 200 and ok[1]["x-request-id"] == "r" * 256
        for bad in ("r" * 257, "abc\n", "a b"):
            status, _, payload = call(app, "POST", INFER[0], json.dumps({"id": bad, **json.loads(OIP)}).encode())
            assert status == 400 and "1 to 256 visible ASCII characters" in payload["error"], (bad, payload)


def test_a_failure_on_the_servers_side_is_a_503_that_carries_no_internal_text():
    for app in APPS.values():
        status, _, payload = call(app, "POST", "/v2/models/broken/infer", OIP)
        assert status == 503 and "could not answer" in payload["error"] and "weights are gone" not in payload["error"]
        assert "error id" in payload["error"]
        status, _, payload = call(app, "POST", "/v2/models/broken/feedback",
                                  json.dumps({"labels": [{"request_id": "r1", "label": "cat"}]}).encode())
        assert status == 503 and "nothing of this batch was kept" in payload["error"]
        assert "secret" not in payload["error"] and "Errno" not in payload["error"]


def test_api_keys_are_compared_whole_and_an_odd_key_is_a_401():
    front = build_asgi(Backend(), 4096, frozenset({"k1", "another-key"}))
    for app in (front, front.fastapi):
        assert call(app, "POST", INFER[0], OIP, {"x-api-key": "another-key"})[0] == 200
        for sent in ("k", "k1 ", "another-ke", "K1", "", "€"):
            assert call(app, "POST", INFER[0], OIP, {"x-api-key": sent})[0] == 401, sent
    with pytest.raises(BadRequest):
        parse_feedback({"labels": []}, SIG.classes)


def test_a_gzip_or_deflate_body_is_answered_as_the_same_body_sent_plain():
    """tritonclient's `request_compression_algorithm` ("gzip", "deflate") sends the body compressed."""
    import gzip
    import zlib

    body = json.dumps({"id": "z1", **json.loads(OIP)}).encode()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for app in APPS.values():
        plain = call(app, "POST", INFER[0], body)
        assert plain[0] == 200
        for coding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)),
                               ("deflate", raw_deflate.compress(body) + raw_deflate.flush()), ("GZip", gzip.compress(body)),
                               ("identity", body)):
            raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            status, _, payload = call(app, "POST", INFER[0], packed, {"content-encoding": coding})
            assert (status, payload) == (200, plain[2]), (coding, status, payload)
        labels = gzip.compress(json.dumps({"labels": [{"request_id": "z1", "label": "cat"}]}).encode())
        assert call(app, "POST", "/v2/models/m/feedback", labels, {"content-encoding": "gzip"})[2] == {"accepted": 1}


@pytest.mark.parametrize("coding, body, status, message", [
    ("br", OIP, 415, "Content-Encoding 'br' is not supported; send the body as is, gzip or deflate"),
    ("gzip, gzip", OIP, 415, "not supported"),
    ("gzip", OIP, 400, "the body is not gzip data as its Content-Encoding says"),
    ("deflate", b"\x00\x01garbage", 400, "the body is not deflate data"),
    ("gzip", __import__("gzip").compress(OIP)[:-12], 400, "not one complete gzip stream"),
    ("gzip", __import__("gzip").compress(OIP) + b"junk", 400, "data after its end"),
    # 2 MiB of zeros is a 2 kB gzip body: under the limit as sent, over it once inflated
    ("gzip", __import__("gzip").compress(b"0" * (2 << 20)), 413, "exceeds the limit of 1048576 bytes once decompressed"),
])
def test_a_body_not_of_its_content_encoding_is_a_4xx_naming_it(coding, body, status, message):
    for app in APPS.values():
        for path in (INFER[0], "/v2/models/m/invocations", "/v2/models/m/feedback"):
            got, _, payload = call(app, "POST", path, body, {"content-encoding": coding})
            assert got == status and message in payload["error"], (path, got, payload)


def test_half_a_surrogate_pair_is_a_400_not_text_the_live_log_cannot_store():
    for app in APPS.values():
        for escaped in ('"\\ud800"', '"a\\udfff"', '"\\uDBFFx"'):
            body = ('{"id": "r1", "inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], '
                    f'"parameters": {{"note": {escaped}}}}}]}}').encode()
            status, _, payload = call(app, "POST", INFER[0], body)
            assert status == 400 and "half of a UTF-16 surrogate pair" in payload["error"], (escaped, payload)
        pair = b'{"id": "r1", "inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3], ' \
               b'"parameters": {"note": "\\ud83d\\ude00"}}]}'
        assert call(app, "POST", INFER[0], pair)[0] == 200  # a whole pair is one character
