"""Hypothesis over the new body decoders: binary v2 tensors and compressed bodies.

Valid bodies are built, then broken the ways clients and attackers break them: lying
``Inference-Header-Content-Length`` and ``binary_data_size``, truncation, bytes appended or flipped,
wrong datatypes and shapes, codings that are not what the header announces, compression nested
inside compression, bodies that inflate past the limit. The invariants are the fuzz test's: a status
from a known set (never a 5xx), an error body of bounded size in the route's error shape, no planted
value ever echoed, and valid requests answered with one prediction per row.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.errors import MAX_ERROR_BYTES
from lambda_ml_serve.runtime.v2 import DATATYPES

VALUE_MARKER = "VALMARK-93C1"
STATUSES = {200, 400, 413, 415, 422}
INFER = "/v2/models/wine_quality/infer"
SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", params=["xgboost", "sklearn"])
def app(request, tmp_path_factory) -> App:
    """The wine model (XGBoost, float32 batches), and a scikit-learn pipeline on its schema (float64
    batches: huge finite values reach the library, which refuses some of them past float32's range)."""
    if request.param == "xgboost":
        return App.load("wine_quality", log_stream=io.StringIO())
    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (200, 13))
    model = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0))
    path = tmp_path_factory.mktemp("sklearn") / "model.joblib"
    joblib.dump(model.fit(X, X[:, 0] * 10), path)
    app = App.load("wine_quality", artifact=path, backend="sklearn", log_stream=io.StringIO())
    assert app.typecode == "d"
    return app


def raw_body(response: dict) -> bytes:
    raw = base64.b64decode(response["body"]) if response["isBase64Encoded"] else response["body"].encode()
    return gzip.decompress(raw) if response["headers"].get("content-encoding") == "gzip" else raw


def check(response: Any, rows: int | None, v2: bool) -> None:
    """The fuzz test's invariants; ``rows`` is the row count when the request is valid."""
    assert isinstance(response, dict) and response["statusCode"] in STATUSES, response
    raw = raw_body(response)
    assert VALUE_MARKER.encode() not in raw
    if response["statusCode"] == 200:
        length = response["headers"].get("inference-header-content-length")
        answer = json.loads(raw[: int(length)] if length else raw)
        if v2:
            output = answer["outputs"][0]
            n = output["shape"][0]
        else:
            n = len(answer["predictions"])
        if rows is not None:
            assert n == rows
        return
    assert rows is None, f"a valid request was refused: {raw[:500]!r}"
    assert len(raw) <= MAX_ERROR_BYTES
    error = json.loads(raw)["error"]
    if v2:
        assert isinstance(error, str) and not error.startswith("internal_error")
    else:
        assert set(error) == {"type", "message", "details"} and error["type"] != "internal_error"


# -- binary v2 ------------------------------------------------------------------------------------

FORMATS = {"FP32": "f", "FP64": "d", "INT32": "i", "INT64": "q", "FP16": "e"}


@st.composite
def binary_requests(draw, samples: list[dict]) -> tuple[bytes, str | None, int | None]:
    """A valid binary request (per-feature or matrix tensors), then zero or more faults."""
    rows = draw(st.lists(st.sampled_from(samples), min_size=1, max_size=8))
    dtype = draw(st.sampled_from(["FP32", "FP64"]))
    code, n, names = FORMATS[dtype], len(rows), list(rows[0])
    if draw(st.booleans()):
        inputs = [{"name": c, "shape": [n], "datatype": dtype} for c in names]
        chunks = [struct.pack(f"<{n}{code}", *[row[c] for row in rows]) for c in names]
    else:
        inputs = [{"name": "input-0", "shape": [n, len(names)], "datatype": dtype}]
        chunks = [struct.pack(f"<{n * len(names)}{code}", *[row[c] for row in rows for c in names])]
    for tensor, chunk in zip(inputs, chunks, strict=True):
        tensor["parameters"] = {"binary_data_size": len(chunk)}
    header: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        header["parameters"] = {"binary_data_output": True}
    valid = True
    faults = draw(st.lists(st.integers(0, 9), max_size=3))
    for fault in faults:
        target = draw(st.integers(0, len(inputs) - 1))
        tensor = inputs[target]
        if not isinstance(tensor.get("parameters"), dict):
            tensor["parameters"] = {}  # an earlier fault replaced them
        if fault == 0:  # a lying binary_data_size
            tensor["parameters"]["binary_data_size"] = draw(
                st.one_of(st.integers(-10, 10**12), st.text(max_size=5), st.none(), st.floats())
            )
        elif fault == 1:  # another datatype, named or not
            tensor["datatype"] = draw(st.sampled_from([*sorted(DATATYPES), "FP8", VALUE_MARKER, ""]))
        elif fault == 2:  # another shape
            tensor["shape"] = draw(st.lists(st.integers(-2, 20), max_size=3))
        elif fault == 3:  # planted values: text where numbers go, as BYTES data
            planted = [VALUE_MARKER.encode()] * n
            chunks[target] = b"".join(struct.pack("<I", len(p)) + p for p in planted)
            tensor["datatype"] = "BYTES"
            tensor["parameters"]["binary_data_size"] = len(chunks[target])
        elif fault == 4:  # flipped bytes in the data
            data = bytearray(chunks[target])
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
            chunks[target] = bytes(data)
        elif fault == 5:  # data inline as well
            tensor["data"] = [VALUE_MARKER] * n
        elif fault == 6:  # parameters of the wrong type
            tensor["parameters"] = draw(st.sampled_from([None, [], VALUE_MARKER, {"binary_data_size": []}]))
        if fault not in (7, 8, 9):
            valid = False  # the answer may be a 200 or an error; only its shape is checked
    text = json.dumps(header).encode()
    body = text + b"".join(chunks)
    length: str | None = str(len(text))
    for fault in faults:
        if fault == 7:  # a lying or missing header length
            length = draw(st.one_of(st.none(), st.integers(-5, len(body) + 50).map(str), st.text(max_size=6)))
        elif fault == 8:  # truncated, or with bytes after
            cut = draw(st.integers(0, len(body)))
            body = body[:cut] + draw(st.binary(max_size=16))
        elif fault == 9:  # the header itself broken
            where = draw(st.integers(0, len(text) - 1))
            body = body[:where] + draw(st.binary(min_size=1, max_size=4)) + body[where + 1 :]
    if any(f in (7, 8, 9) for f in faults):
        valid = False
    return body, length, n if valid else None


@given(data=st.data())
@SETTINGS
def test_binary_v2_bodies(app, samples, data) -> None:
    body, length, rows = data.draw(binary_requests(samples))
    headers = [("content-type", "application/octet-stream")]
    if length is not None:
        headers.append(("inference-header-content-length", length))
    accept = data.draw(st.sampled_from([None, "gzip"]))
    if accept:
        headers.append(("accept-encoding", accept))
    check(app(to_event("POST", INFER, headers, body)), rows, v2=True)


# -- compressed bodies ---------------------------------------------------------------------------


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


CODERS = {"gzip": lambda d: gzip.compress(d, mtime=0), "deflate": zlib.compress, "raw": deflate_raw}


@st.composite
def compressed_requests(draw, samples: list[dict]) -> tuple[bytes, str | None, str, int | None]:
    rows = draw(st.lists(st.sampled_from(samples), min_size=1, max_size=20))
    path = draw(st.sampled_from(["/", "/invocations", "/predict"]))
    kind = draw(st.sampled_from(["valid", "planted", "bomb"]))
    if kind == "valid":
        body = json.dumps(rows).encode()
    elif kind == "planted":
        bad = [dict(row) for row in rows]
        bad[0][draw(st.sampled_from(list(bad[0])))] = VALUE_MARKER
        body = json.dumps(bad).encode()
    else:
        body = b"[" + b" " * draw(st.sampled_from([6 * 1024 * 1024, 7 * 1024 * 1024])) + b"]"
    applied = draw(st.lists(st.sampled_from(list(CODERS)), min_size=1, max_size=3))
    for coding in applied:
        body = CODERS[coding](body)
    announced = ", ".join("deflate" if c == "raw" else c for c in applied)
    honest = True
    if draw(st.booleans()):  # a header that lies, or none
        announced = draw(st.sampled_from([None, "gzip", "deflate", "gzip, gzip", "br", "identity", "GZIP, x-gzip"]))
        honest = False
    if draw(st.booleans()):  # truncated, or with junk after
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=8))
        honest = False
    valid = honest and kind == "valid" and len(applied) <= 2
    return body, announced, path, len(rows) if valid else None


@given(data=st.data())
@SETTINGS
def test_compressed_bodies(app, samples, data) -> None:
    body, announced, path, rows = data.draw(compressed_requests(samples))
    headers = [("content-type", "application/json")]
    if announced is not None:
        headers.append(("content-encoding", announced))
    response = app(to_event("POST", path, headers, body))
    check(response, rows, v2=False)
