"""Hostile request bodies get a bounded 4xx answer that repeats nothing the client sent.

One test (or group) per way a real client or attacker broke the handler: deep nesting, echoed values,
oversized error answers, unbounded validation cost, and bodies in UTF-16/UTF-32.
"""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from conftest import url_event
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from lambda_ml_serve.runtime import validation
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.errors import MAX_ERROR_BYTES, MAX_FIELD_CHARS, ApiError, detail

MARKER = "SECRET-MARKER-7f3a"


def raw_event(body: str, *, is_base64: bool) -> dict:
    """A Function URL event whose body field is exactly ``body``."""
    event = url_event()
    event.update(body=body, isBase64Encoded=is_base64)
    return event


def answer(app: App, body: str | bytes, **extra) -> tuple[int, dict, str]:
    response = app(url_event(body, **extra))
    assert len(response["body"].encode()) <= MAX_ERROR_BYTES or response["statusCode"] == 200
    return response["statusCode"], json.loads(response["body"]), response["body"]


# ---------------------------------------------------------------------------------------------
# Deep nesting is the client's fault (400), whatever the depth and wherever it sits


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '[{"pH": ' + "[" * 100_000 + "]" * 100_000 + "}]",
        '{"instances": [{"pH": ' + '{"x":' * 5_000 + "1" + "}" * 5_000 + "}]}",
    ],
    ids=["arrays", "objects", "in-a-field-value", "objects-in-instances"],
)
def test_deep_nesting_is_400_not_500(wine_app, body):
    status, payload, _ = answer(wine_app, body)
    assert status == 400, payload
    assert payload["error"]["type"] == "bad_request"
    assert "nested more than 64 levels" in payload["error"]["message"]


def test_nesting_limit_is_exact(wine_app, samples):
    def with_ph_nested(levels: int) -> str:
        # list of rows (1) > row (2) > `levels` more levels in the pH value
        return json.dumps([dict(samples[0], pH=json.loads("[" * levels + "]" * levels))])

    assert answer(wine_app, with_ph_nested(62))[0] == 422
    assert answer(wine_app, with_ph_nested(63))[0] == 400
    assert wine_app([{"pH": json.loads("[" * 70 + "]" * 70)}])["error"]["type"] == "bad_request"


# ---------------------------------------------------------------------------------------------
# Submitted values never come back, whoever wrote the message


def test_wine_colour_conflict_does_not_echo(wine_app, samples):
    row = {k: v for k, v in samples[0].items() if not k.startswith("color")}
    status, payload, text = answer(wine_app, json.dumps([dict(row, color="red", color_red=MARKER)]))
    assert status == 422 and MARKER not in text
    assert payload["error"]["details"] == [
        {"row": 0, "field": None, "message": "color contradicts color_red; send one or the other"}
    ]


def test_top_level_keys_are_not_echoed_in_full(wine_app):
    key = MARKER + "x" * 10_000
    status, payload, text = answer(wine_app, json.dumps({"instances": [], key: 1, "b\n\x1b[31m": 2}))
    assert status == 422
    error = payload["error"]
    assert MARKER not in error["message"] and "x" * 100 not in text
    assert error["message"].startswith("2 unexpected top-level key(s) beside 'instances'")
    fields = [d["field"] for d in error["details"]]
    assert all(len(f) <= MAX_FIELD_CHARS for f in fields)
    assert fields[1] == "b\\u000a\\u001b[31m"  # control characters escaped, not passed to terminals


class EchoingRow(BaseModel):
    """A careless plugin: every validator repeats what it was given."""

    model_config = ConfigDict(extra="forbid")
    size: float
    label: str = "a"

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if value.startswith("S"):
            raise ValueError(f"label {value!r} is not allowed")
        if value.startswith("P"):
            raise ValueError(f"label {value} is not allowed, nor {value[2:14]}")
        return value

    @model_validator(mode="after")
    def _size(self) -> EchoingRow:
        if self.size > 100:
            raise ValueError(f"size must be at most 100, not {self.size}")
        if self.size < 0:
            raise ValueError("size must not be negative")
        return self


@pytest.fixture
def echoing_app(wine_app) -> App:
    spec = dataclasses.replace(wine_app.spec, schema=EchoingRow, example=())
    return App(spec, wine_app.predictor)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"size": 1, "label": MARKER}, "label … is not allowed"),
        ({"size": 1, "label": "P" + MARKER}, "invalid value (the validator's message is withheld"),
        ({"size": 123.5}, "invalid value (the validator's message is withheld"),
        ({"size": -4}, "size must not be negative"),
    ],
)
def test_plugin_messages_cannot_echo(echoing_app, row, expected):
    status, payload, text = answer(echoing_app, json.dumps([row]))
    assert status == 422
    assert MARKER not in text and "123.5" not in text
    assert payload["error"]["details"][0]["message"].startswith(expected)


# ---------------------------------------------------------------------------------------------
# Error answers stay small whatever the request (a Function URL answer is 6 MB at most)


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([{"é" * 2_800_000: 1}], ensure_ascii=False),
        json.dumps([{"é" * 1_000 + str(i): "é" * 1_000 for i in range(2_800)}], ensure_ascii=False),
        json.dumps([{"pH": "é" * 1_000, "k" * 100_000 + str(i): 1} for i in range(50)], ensure_ascii=False),
        json.dumps({"instances": [{}], **{"é" * 5_000 + str(i): 1 for i in range(1_100)}}, ensure_ascii=False),
    ],
    ids=["one-long-key", "many-long-keys", "long-keys-many-rows", "long-top-level-keys"],
)
def test_error_answers_are_bounded(wine_app, body):
    assert len(body.encode()) > 5_000_000
    response = wine_app(url_event(body))
    assert response["statusCode"] == 422
    assert len(response["body"].encode()) <= MAX_ERROR_BYTES
    assert "é" * 100 not in json.loads(response["body"])["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Validation cost is bounded: pydantic never builds more than a chunk's worth of errors


class Counting:
    """Wraps a pydantic validator; records how many errors each failing call built."""

    def __init__(self, inner, method: str, built: list[int]) -> None:
        self._inner, self._method, self.built = inner, method, built

    def __getattr__(self, name):
        call = getattr(self._inner, name)
        if name != self._method:
            return call

        def counted(*args, **kwargs):
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                self.built.append(exc.error_count())
                raise

        return counted


def test_many_unknown_keys_stop_after_the_first_errors(wine_app, samples, monkeypatch):
    validator = validation.RowValidator(wine_app.spec, 10_000)
    built: list[int] = []
    monkeypatch.setattr(validator, "_adapter", Counting(validator._adapter, "validate_python", built))
    monkeypatch.setattr(validator, "_schema", Counting(validator._schema, "model_validate", built))
    app = App(wine_app.spec, wine_app.predictor)
    app.validator = validator
    rows = [dict(samples[i % 2], **{f"unknown_{j:02d}": 1 for j in range(60)}) for i in range(10_000)]

    status, payload, _ = answer(app, json.dumps(rows))
    assert status == 422
    # Before: one call built all 600,000 errors of the request.
    assert sum(built) <= validation.CHUNK_KEYS + validation.MAX_ROW_KEYS
    error = payload["error"]
    assert len(error["details"]) == 50
    assert error["message"].startswith("at least 60 invalid value(s) in 1 row(s); validation stops after 50")


def test_rows_with_too_many_keys_are_refused_whole(wine_app):
    row = {f"k{i}": 0 for i in range(200_000)}
    status, payload, _ = answer(wine_app, json.dumps([row, row]))
    assert status == 422
    assert payload["error"]["details"] == [
        {"row": r, "field": None, "message": "a row may have at most 1024 keys; this one has 200000"} for r in (0, 1)
    ]
    assert payload["error"]["message"] == "2 invalid value(s) in 2 row(s)"


def test_the_error_count_is_exact_when_every_row_was_checked(wine_app):
    status, payload, _ = answer(wine_app, json.dumps([{"pH": 99}] * 4))
    assert status == 422
    # 12 missing fields + pH out of range, in each of 4 rows
    assert payload["error"]["message"] == "52 invalid value(s) in 4 row(s); showing the first 50"


# ---------------------------------------------------------------------------------------------
# A body that is not UTF-8 is 400, whatever encoding json.loads could have guessed


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("as_base64", [True, False], ids=["base64", "text"])
def test_utf16_and_utf32_bodies_are_400(wine_app, samples_body, encoding, as_base64):
    raw = samples_body.decode("utf-8").encode(encoding)
    if as_base64:
        event = raw_event(base64.b64encode(raw).decode(), is_base64=True)
    else:  # what a text event holds when the bytes happen to decode (no BOM: ASCII and NULs)
        event = raw_event(raw.decode("utf-8", "surrogateescape"), is_base64=False)
    response = wine_app(event)
    assert response["statusCode"] == 400, response["body"]
    assert json.loads(response["body"])["error"]["message"].startswith("the body is not UTF-8 encoded JSON")


@pytest.mark.parametrize("raw", [b"[\xff]", b'[{"pH": "\xed\xa0\x80"}]', b"\xef\xbb\xbf[]"])
def test_invalid_utf8_and_bom_are_400(wine_app, raw):
    event = raw_event(base64.b64encode(raw).decode(), is_base64=True)
    assert wine_app(event)["statusCode"] == 400


def test_any_error_answer_is_bounded_by_the_framework():
    # Whatever a caller puts into an ApiError, its body fits: details are cut, then dropped and counted.
    details = [detail(i, "\u202e" + "é" * 10_000, "\x00" * 10_000) for i in range(5_000)]
    body = ApiError("validation_error", "x" * 100_000, details, total=5_000).to_dict()
    assert len(json.dumps(body)) <= MAX_ERROR_BYTES
    error = body["error"]
    assert error["message"].endswith(f"…; showing the first {len(error['details'])}")
    assert 0 < len(error["details"]) < 50
    assert error["details"][0]["field"].startswith("\\u202e") and len(error["details"][0]["field"]) == MAX_FIELD_CHARS
