"""Answers and log lines keep their exact text while costing less to write."""

from __future__ import annotations

import enum
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_ml_serve.runtime import telemetry
from lambda_ml_serve.runtime.encoding import dumps
from lambda_ml_serve.runtime.telemetry import RequestLog, request_record

numbers = st.one_of(
    st.floats(),
    st.floats(-1e17, 1e17),
    st.floats(-1e-3, 1e-3),
    st.floats(width=32),
    st.integers(),
    st.integers(-(2**70), 2**70),
)


class Level(enum.Enum):
    LOW = 1


class Count(enum.IntEnum):
    ONE = 1


values = st.recursive(
    st.none()
    | st.booleans()
    | numbers
    | st.text(max_size=8)
    | st.sampled_from([Level.LOW, Count.ONE, (1, 2.5), frozenset({1})]),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)
payloads = st.one_of(
    values,
    st.dictionaries(st.text(max_size=12), values, max_size=4),
    st.fixed_dictionaries(
        {"model": st.text(max_size=8), "version": st.text(max_size=5), "predictions": st.lists(numbers)}
    ),
    st.fixed_dictionaries({"predictions": st.lists(st.lists(numbers | st.none(), max_size=3), max_size=5)}),
)


def reference(payload) -> str | type:
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError) as exc:
        return type(exc)


@settings(max_examples=600, deadline=None)
@given(payload=payloads)
def test_dumps_writes_exactly_what_json_dumps_writes(payload):
    try:
        got = dumps(payload)
    except (ValueError, TypeError) as exc:
        got = type(exc)
    assert got == reference(payload)


@settings(max_examples=300, deadline=None)
@given(
    request_id=st.text(max_size=40),
    status=st.sampled_from([200, 400, 404, 413, 422, 500]),
    rows=st.integers(0, 10_000),
    latency_ms=st.floats(0, 1e6) | st.floats(0, 1e-3),
    error=st.none() | st.text(max_size=40),
    function=st.none() | st.text(min_size=1, max_size=64),
)
def test_log_line_is_the_request_records_json(request_id, status, rows, latency_ms, error, function):
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(telemetry.time, "time", lambda: 1_796_000_000.123)
        patch.delenv(telemetry.FUNCTION_ENV, raising=False)
        RequestLog("wine_quality", "1.0.0", stream, "ab" * 32, function).write(
            request_id, status, rows, latency_ms, error
        )
        record = request_record(
            request_id=request_id,
            model="wine_quality",
            version="1.0.0",
            status=status,
            rows=rows,
            latency_ms=latency_ms,
            model_sha256="ab" * 32,
            error=error,
            function=function,
        )
    assert stream.getvalue() == json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
