"""Compressed request bodies (gzip, deflate) and gzip answers, in the function and on ``serve``.

curl sends a gzip body and, with ``--compressed``, asks for a gzip answer and inflates it; the answer
is the in-process handler's. A body that inflates past the 6 MB request limit is a 413, cheaply (see
bench/hostile.py for the time and memory of a zip bomb).
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import zlib

import pytest
from served import serving

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.codings import COMPRESS_MIN_BYTES, MAX_DECODED_BYTES, accepts_gzip


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


@pytest.fixture(scope="module")
def many(samples: list[dict]) -> list[dict]:
    return samples * 5_000


@pytest.fixture(scope="module")
def expected(app: App, many: list[dict]) -> list[float]:
    return app(many)["predictions"]


def post(app: App, body: bytes, *headers: tuple[str, str], path: str = "/") -> dict:
    return app(to_event("POST", path, [("content-type", "application/json"), *headers], body))


def answer_of(response: dict) -> object:
    raw = base64.b64decode(response["body"]) if response["isBase64Encoded"] else response["body"].encode()
    if response["headers"].get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", deflate_raw),
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
        ("GZIP", lambda data: gzip.compress(data[:10]) + gzip.compress(data[10:])),  # two gzip members
        ("identity", lambda data: data),
    ],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "gzip-twice", "gzip-two-members", "identity"],
)
@pytest.mark.parametrize("path", ["/", "/invocations"])
def test_compressed_bodies_give_the_plain_answer(app, many, expected, coding, compress, path) -> None:
    body = json.dumps(many).encode()
    response = post(app, compress(body), ("content-encoding", coding), path=path)
    assert response["statusCode"] == 200, response["body"]
    assert answer_of(response)["predictions"] == expected


def test_v2_and_csv_bodies_may_be_compressed_too(app, samples) -> None:
    expected = app(samples)["predictions"]
    infer = {"inputs": [{"name": "input-0", "shape": [2, 13], "datatype": "FP64", "data": []}]}
    infer["inputs"][0]["data"] = [list(row.values()) for row in samples]
    response = post(
        app,
        gzip.compress(json.dumps(infer).encode()),
        ("content-encoding", "gzip"),
        path=("/v2/models/wine_quality/infer"),
    )
    assert answer_of(response)["outputs"][0]["data"] == expected
    csv = ("\n".join([",".join(samples[0]), *(",".join(map(str, row.values())) for row in samples)]) + "\n").encode()
    response = app(
        to_event(
            "POST", "/invocations", [("content-type", "text/csv"), ("content-encoding", "gzip")], gzip.compress(csv)
        )
    )
    assert answer_of(response) == {"predictions": expected}


@pytest.mark.parametrize(
    ("coding", "body", "status", "says"),
    [
        ("gzip", b"[" * 100, 400, "not valid gzip"),
        ("gzip", gzip.compress(b"[1, 2, 3]" * 100)[:-12], 400, "truncated"),
        ("gzip", gzip.compress(b"[]") + b"junk", 400, "not valid gzip"),
        ("deflate", zlib.compress(b"[]") + b"junk", 400, "after the end"),
        ("deflate", b"\xff\xff\xff", 400, "not valid deflate"),
        ("br", b"\x00", 415, "gzip, deflate"),
        ("gzip, gzip, gzip", b"\x00", 400, "more than 2 times"),
        ("gzip", b"", 400, "empty"),
        ("gzip", gzip.compress(b" " * (MAX_DECODED_BYTES + 1)), 413, "6291456 bytes"),
        ("gzip", gzip.compress(gzip.compress(b"[]")), 400, "looks compressed"),
    ],
    ids=[
        "not-gzip",
        "truncated",
        "junk-after",
        "deflate-junk",
        "not-deflate",
        "brotli",
        "thrice",
        "empty",
        "bomb",
        "nested-unannounced",
    ],
)
def test_bad_compressed_bodies(app, coding, body, status, says) -> None:
    response = post(app, body, ("content-encoding", coding))
    assert response["statusCode"] == status, response["body"]
    assert says in json.loads(response["body"])["error"]["message"]


def test_a_gzip_bomb_is_a_413_however_far_it_would_inflate(app) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(b"[" * (1 << 20)) for _ in range(256)) + compressor.flush()
    assert len(bomb) < 300_000
    response = post(app, bomb, ("content-encoding", "gzip"))
    assert response["statusCode"] == 413


def test_answers_are_gzip_compressed_when_accepted_and_large(app, samples, many, expected) -> None:
    big = post(app, json.dumps(many).encode(), ("accept-encoding", "br;q=1.0, gzip;q=0.8"))
    assert big["headers"]["content-encoding"] == "gzip" and big["isBase64Encoded"] is True
    assert big["headers"]["vary"] == "accept-encoding"
    assert answer_of(big)["predictions"] == expected
    assert len(big["body"]) < len(json.dumps(expected)) / 2
    small = post(app, json.dumps(samples).encode(), ("accept-encoding", "gzip"))
    assert "content-encoding" not in small["headers"] and len(small["body"]) < COMPRESS_MIN_BYTES
    refused = post(app, json.dumps(many).encode(), ("accept-encoding", "gzip;q=0"))
    assert "content-encoding" not in refused["headers"]
    assert "content-encoding" not in post(app, json.dumps(many).encode())["headers"]


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("*", True),
        ("gzip;q=0", False),
        ("GZIP;Q=0.5", True),
        ("br", False),
        ("*;q=0, gzip;q=0.1", True),
        ("gzip;q=zero", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding(header, accepted) -> None:
    assert accepts_gzip(header) is accepted


def curl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], input=data, capture_output=True, check=True)


@pytest.mark.skipif(subprocess.run(["which", "curl"], capture_output=True).returncode, reason="curl is not installed")
def test_curl_gzip_body_and_compressed_answer_on_serve(many, expected, tmp_path) -> None:
    body = tmp_path / "rows.json.gz"
    body.write_bytes(gzip.compress(json.dumps(many).encode()))
    headers = tmp_path / "headers.txt"
    with serving() as url:
        done = curl(
            "--compressed",
            "-D",
            str(headers),
            "-H",
            "content-type: application/json",
            "-H",
            "content-encoding: gzip",
            "--data-binary",
            f"@{body}",
            f"{url}/invocations",
        )
        assert json.loads(done.stdout) == {"predictions": expected}
        assert "content-encoding: gzip" in headers.read_text().lower()
        # Without --compressed curl asks for no coding, and gets none.
        plain = curl(
            "-D",
            "-",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
            url + "/",
            data=json.dumps(many).encode(),
        )
        assert b"content-encoding" not in plain.stdout.split(b"\r\n\r\n")[0].lower()
