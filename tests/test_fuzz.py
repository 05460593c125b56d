"""Fuzzing the handler: 10,000 hostile events per run, each answered well and safely.

Events come in three families: Function URL events with malformed parts (every field of the
envelope with wrong types or missing, bad base64, odd ``isBase64Encoded``), bodies mutated from the
existing clients' ``samples.json`` (truncations, byte flips, insertions), and hostile payloads (marker
strings planted in keys and values, deep nesting, huge keys, bytes that are not UTF-8, UTF-16/32,
10,001 rows, many unknown keys), sent as Function URL events and as direct invocations.

Every answer must be a valid Function URL response (or, for a direct invocation, a JSON object), never
a 5xx, never larger than the error bound, and never carry a planted value, a traceback or a file path.
A key the client sent may come back only as a detail's ``field``, cut to 64 characters. Rows that are
valid get one wine quality prediction each, within 0-10.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from conftest import url_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lambda_ml_serve_wine_quality.plugin import EXAMPLE

from lambda_ml_serve.runtime.errors import MAX_ERROR_BYTES, MAX_FIELD_CHARS

#: Planted in values (and in every part of the envelope): must never come back.
VALUE_MARKER = "VALMARK-93C1"
#: Planted in keys: may come back only as (part of) a detail's field name.
KEY_MARKER = "KEYMARK-5D2E"
CLIENT_STATUSES = {200, 400, 404, 405, 413, 415, 422}
LEAKS = re.compile(r"Traceback|File \"|\.py\b|site-packages|/work/|/usr/|/tmp/|/var/task|/opt/")
FEATURES = list(EXAMPLE[0])
EVENTS = 10_000

# ---------------------------------------------------------------------------------------------
# Values and rows

# Fixed pools drawn with one choice each keep generation cheap enough for 10,000 events a run;
# hypothesis still combines, nests and mutates them.
TEXTS = [
    "",
    " ",
    "red",
    "white",
    "RED",
    "rose",
    "nan",
    "1e309",
    "-0",
    "0x10",
    "é",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\ud800",
    "\U0001f377",
    "'",
    '"',
    "\\",
    "a" * 300,
    "\n\r\t",
    "None",
    "true",
    "[]",
    "{}",
]
NUMBERS = [0, 1, -1, 0.5, 3.2, -0.0, 14.0001, 1.1, 0.9, 1e308, -1e308, 5e-324, 2**63, -(2**64), 10**30, 255]
marked_text = st.sampled_from(TEXTS).map(lambda t: f"{t}{VALUE_MARKER}{t}")
marked_key = st.sampled_from([*TEXTS, *FEATURES]).map(lambda t: f"{t}{KEY_MARKER}")
scalars = st.sampled_from([None, True, False, *NUMBERS, *TEXTS]) | marked_text | st.floats() | st.integers()
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(TEXTS) | marked_key, children, max_size=3)
    ),
    max_leaves=6,
)
keys = st.sampled_from([*FEATURES, "color", "fixed_acidity", "pH ", "Ph", "instances", *TEXTS]) | marked_key
near_valid_rows = st.builds(
    lambda base, changes: {**base, **changes}, st.sampled_from(EXAMPLE), st.dictionaries(keys, json_values, max_size=3)
)


def nested(depth: int, kind: str) -> Any:
    """``depth`` levels of lists or objects (built iteratively: json.dumps would recurse too)."""
    value: Any = VALUE_MARKER
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def nested_text(depth: int, kind: str) -> str:
    open_, close = ("[", "]") if kind == "list" else ('{"k":', "}")
    return open_ * depth + json.dumps(VALUE_MARKER) + close * depth


def as_bytes(text: str) -> bytes:
    """UTF-8, except that lone surrogates (from unescaped JSON) become the bytes no decoder accepts."""
    return text.encode("utf-8", "surrogatepass")


@functools.cache
def many_rows(example: int, n_rows: int) -> bytes:
    return json.dumps({"instances": [EXAMPLE[example]] * n_rows}).encode()


@st.composite
def hostile_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["deep", "deep-field", "huge-key", "huge-value", "many-keys", "many-rows", "marked"]))
    if kind == "deep":
        return nested_text(draw(st.integers(50, 20_000)), draw(st.sampled_from(["list", "dict"]))).encode()
    row = dict(draw(st.sampled_from(EXAMPLE)))
    if kind == "deep-field":
        inner = nested_text(draw(st.integers(50, 3_000)), draw(st.sampled_from(["list", "dict"])))
        return json.dumps([row])[:-2].encode() + b', "pH": ' + inner.encode() + b"}]"
    if kind == "huge-key":
        key = draw(st.sampled_from(["k", "é", "\x1b", "\u202e"])) * draw(st.integers(65, 300_000))
        return as_bytes(json.dumps([{**row, key + KEY_MARKER: 1}], ensure_ascii=draw(st.booleans())))
    if kind == "huge-value":
        value = draw(st.sampled_from(["9", "é", "'", '"'])) * draw(st.integers(100, 300_000)) + VALUE_MARKER
        return as_bytes(json.dumps([{**row, draw(keys): value}], ensure_ascii=draw(st.booleans())))
    if kind == "many-keys":
        n_rows, n_keys = draw(st.integers(1, 300)), draw(st.integers(1, 1_500))
        extra = {f"{KEY_MARKER}{i}": VALUE_MARKER for i in range(n_keys)}
        return json.dumps([{**row, **extra}] * n_rows).encode()
    if kind == "many-rows":
        return many_rows(EXAMPLE.index(draw(st.sampled_from(EXAMPLE))), draw(st.sampled_from([10_000, 10_001])))
    return json.dumps(draw(st.lists(near_valid_rows, min_size=1, max_size=6))).encode()


@st.composite
def mutated_samples(draw, samples_body: bytes) -> bytes:
    body = bytearray(samples_body)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if op == "truncate":
            del body[at:]
        elif op == "flip" and body:
            body[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            # Insertions may land in a key as well as in a value: only the key marker may come back.
            body[at:at] = draw(st.binary(min_size=1, max_size=4) | st.just(KEY_MARKER.encode()))
        elif body:
            del body[at : at + draw(st.integers(1, 8))]
    return bytes(body)


def encoded(samples_body: bytes) -> st.SearchStrategy[bytes]:
    """samples.json in another encoding, or with bytes that are not UTF-8."""
    text = samples_body.decode()
    other = st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-8-sig"])
    broken = st.builds(
        lambda at, junk: samples_body[:at] + junk + samples_body[at:],
        st.integers(0, len(samples_body)),
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc0\xaf"]),
    )
    return other.map(text.encode) | broken


# ---------------------------------------------------------------------------------------------
# Events


#: How a Function URL event carries the body bytes; each drawn request is sent in every one of them.
TRANSPORTS = ["text", "base64", "no-flag", "bad-base64", "odd-flag"]
#: The transports AWS itself uses, for which valid rows must be predicted.
AWS_TRANSPORTS = {"text", "base64", "no-flag"}


def body_field(raw: bytes, transport: str) -> tuple[str, Any]:
    """The event's (body, isBase64Encoded) for the bytes ``raw``; None means the flag is absent."""
    if transport == "base64":
        return base64.b64encode(raw).decode(), True
    if transport == "bad-base64":
        return base64.b64encode(raw).decode().rstrip("=") + "*%", True
    if transport == "odd-flag":
        return base64.b64encode(raw).decode(), "true"
    return raw.decode("utf-8", "surrogateescape"), False if transport == "text" else None


ENVELOPE_FIELDS = [
    ("body",),
    ("isBase64Encoded",),
    ("rawPath",),
    ("rawQueryString",),
    ("headers",),
    ("cookies",),
    ("queryStringParameters",),
    ("requestContext",),
    ("requestContext", "http"),
    ("requestContext", "http", "method"),
    ("requestContext", "http", "path"),
    ("version",),
]


@dataclass(frozen=True)
class Request:
    """One drawn request: body bytes, method, path, a planted header, envelope changes."""

    raw: bytes
    method: str
    path: str
    header: str
    #: (field path, None to delete it, else the wrong-typed value put there)
    changes: tuple[tuple[tuple[str, ...], Any], ...]
    #: rows to be predicted when the request is valid as sent by AWS, else None
    valid_rows: int | None

    def events(self) -> Iterator[tuple[dict, int | None]]:
        """The request in every transport: (Function URL event, rows expected predicted or None)."""
        for transport in TRANSPORTS:
            event = url_event(method=self.method, path=self.path)
            event["headers"][self.header] = VALUE_MARKER
            event["body"], flag = body_field(self.raw, transport)
            if flag is None:
                del event["isBase64Encoded"]
            else:
                event["isBase64Encoded"] = flag
            for path, value in self.changes:
                parent = event
                for part in path[:-1]:
                    parent = parent.get(part) if isinstance(parent, dict) else None
                if isinstance(parent, dict):
                    if value is None:
                        parent.pop(path[-1], None)
                    else:
                        parent[path[-1]] = copy.deepcopy(value)
            routed = self.method.upper() == "POST" and self.path in ("/", "/predict") and not self.changes
            yield event, self.valid_rows if routed and transport in AWS_TRANSPORTS else None


@st.composite
def requests(draw, samples_body: bytes) -> Request:
    family = draw(st.sampled_from(["valid", "mutated", "encoded", "hostile", "hostile", "envelope"]))
    valid_rows = None
    if family == "valid":
        n_rows, first = draw(st.integers(1, 20)), draw(st.integers(0, 1))
        rows = [EXAMPLE[(first + i) % len(EXAMPLE)] for i in range(n_rows)]
        raw, valid_rows = json.dumps(draw(st.sampled_from([rows, {"instances": rows}]))).encode(), n_rows
        if n_rows == 1 and draw(st.booleans()):
            raw = json.dumps(rows[0]).encode()
    elif family == "mutated":
        raw = draw(mutated_samples(samples_body))
    elif family == "encoded":
        raw = draw(encoded(samples_body))
    else:
        raw = draw(hostile_bodies()) if family == "hostile" else samples_body
    changes: list[tuple[tuple[str, ...], Any]] = []
    if family == "envelope":
        for path in draw(st.lists(st.sampled_from(ENVELOPE_FIELDS), min_size=1, max_size=3, unique=True)):
            changes.append((path, draw(st.none() | json_values)))
    return Request(
        raw=raw,
        method=draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "post", VALUE_MARKER])),
        path=draw(st.sampled_from(["/", "/", "/predict", "/nope", f"/{VALUE_MARKER}", "//"])),
        header=draw(st.sampled_from(["x-custom", "cookie", "authorization"])),
        changes=tuple(changes),
        valid_rows=valid_rows,
    )


def direct_invocations() -> st.SearchStrategy[Any]:
    rows = st.lists(near_valid_rows, max_size=3)
    deep = st.builds(nested, st.integers(50, 5_000), st.sampled_from(["list", "dict"]))
    return json_values | rows.map(lambda r: {"instances": r}) | rows | deep


# ---------------------------------------------------------------------------------------------
# Invariants


def check_answer(payload: Any, expected_rows: int | None) -> None:
    assert isinstance(payload, dict)
    if "predictions" in payload:
        assert set(payload) == {"model", "version", "predictions"}
        predictions = payload["predictions"]
        assert all(isinstance(p, float) and 0 <= p <= 10 for p in predictions), predictions
        if expected_rows is not None:
            assert len(predictions) == expected_rows
        return
    if "error" not in payload:
        assert payload["model"] == "wine_quality" and "input_schema" in payload  # GET metadata
        return
    assert expected_rows is None, f"valid rows were refused: {payload}"
    error = payload["error"]
    assert set(error) == {"type", "message", "details"}
    assert error["type"] != "internal_error", error
    messages = [error["message"]]
    for item in error["details"]:
        assert set(item) == {"row", "field", "message"}
        assert item["field"] is None or len(item["field"]) <= MAX_FIELD_CHARS
        messages.append(item["message"])
    for text in messages:
        assert KEY_MARKER not in text and not LEAKS.search(text), text
    assert len(json.dumps(payload)) <= MAX_ERROR_BYTES


def check_response(response: Any, expected_rows: int | None) -> None:
    assert isinstance(response, dict)
    assert set(response) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert type(response["statusCode"]) is int and response["statusCode"] in CLIENT_STATUSES, response
    assert type(response["isBase64Encoded"]) is bool and type(response["body"]) is str
    headers = response["headers"]
    assert isinstance(headers, dict) and all(type(k) is str and type(v) is str for k, v in headers.items())
    assert all(v.isprintable() for v in headers.values())
    assert VALUE_MARKER not in response["body"] and VALUE_MARKER not in json.dumps(headers)
    payload = json.loads(response["body"])
    check_answer(payload, expected_rows if response["statusCode"] == 200 else None)
    if expected_rows is not None:
        assert response["statusCode"] == 200, response["body"]
    if response["statusCode"] != 200:
        assert len(response["body"].encode()) <= MAX_ERROR_BYTES


def is_function_url_event(event: dict) -> bool:
    """Lambda tells the two apart only by ``requestContext.http``; without it an event is a direct call."""
    context = event.get("requestContext")
    return isinstance(context, dict) and isinstance(context.get("http"), dict)


#: Each request is sent in every transport: 2,000 requests are 10,000 Function URL events.
REQUESTS = 2_000
DIRECT_INVOCATIONS = 500


def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def test_fuzz_events(wine_app, samples_body):
    events = 0

    # Two loops rather than one_of: hypothesis would favour the direct invocations' simpler space.
    @fuzz(REQUESTS)
    @given(request=requests(samples_body))
    def function_url_events(request):
        nonlocal events
        for event, valid_rows in request.events():
            response = wine_app(event)
            if is_function_url_event(event):
                check_response(response, valid_rows)
            else:  # an envelope change removed requestContext.http: Lambda calls that a direct invocation
                check_answer(response, None)
            events += 1

    @fuzz(DIRECT_INVOCATIONS)
    @given(payload=direct_invocations())
    def direct(payload):
        nonlocal events
        response = wine_app(payload)
        check_answer(response, None)
        assert VALUE_MARKER not in json.dumps(response)
        events += 1

    function_url_events()
    direct()
    print(f"fuzz: {events} events, 0 violations")
    assert events >= EVENTS
