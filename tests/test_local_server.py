"""The local Function URL: real HTTP in, payload-2.0 events to the handler, responses back."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from lambda_ml_serve.local.events import from_result, to_event
from lambda_ml_serve.local.server import FunctionUrlServer


def request(url: str, body: bytes | None = None, method: str = "POST", headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture
def server(wine_app):
    srv = FunctionUrlServer(wine_app, port=0).start()
    yield srv
    srv.close()


def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_post_samples(server, wine_app, samples_body):
    status, headers, body = request(server.url, samples_body, headers={"content-type": "application/json"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"]
    expected = wine_app({"instances": json.loads(samples_body)})
    assert json.loads(body) == expected


def test_binary_content_type_goes_base64(server, samples_body):
    status, _, body = request(server.url + "predict", samples_body,
                              headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert status == 200 and len(json.loads(body)["predictions"]) == 2


def test_errors_keep_their_status(server):
    assert request(server.url, b"{", headers={"content-type": "application/json"})[0] == 400
    assert request(server.url, b"[]", headers={"content-type": "application/json"})[0] == 422
    assert request(server.url + "nope", method="GET")[0] == 404
    status, headers, _ = request(server.url, b"{}", method="DELETE")
    assert status == 405 and headers["allow"] == "GET, POST"
    status, _, body = request(server.url, method="GET")
    assert status == 200 and json.loads(body)["model"] == "wine_quality"


def test_function_failure_is_502():
    def broken(event):
        raise RuntimeError("crash")

    srv = FunctionUrlServer(broken, port=0).start()
    try:
        status, _, body = request(srv.url, b"{}")
    finally:
        srv.close()
    assert status == 502 and json.loads(body) == {"message": "Internal Server Error"}


def test_event_shape():
    event = to_event("post", "/predict?a=1&a=2&b=", [("Content-Type", "application/json"),
                     ("X-Thing", "1"), ("x-thing", "2"), ("Cookie", "c=1; d=2")], b'{"x": 1}')  # fmt: skip
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/predict" and event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["headers"]["x-thing"] == "1,2"
    assert event["cookies"] == ["c=1", "d=2"]
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["body"] == '{"x": 1}' and event["isBase64Encoded"] is False
    binary = to_event("POST", "/", [("content-type", "image/png")], b"\x89PNG")
    assert binary["isBase64Encoded"] and base64.b64decode(binary["body"]) == b"\x89PNG"


def test_response_inference():
    plain = from_result({"a": 1})
    assert (plain.status, json.loads(plain.body)) == (200, {"a": 1})
    full = from_result({"statusCode": 201, "headers": {"x": "y"}, "cookies": ["k=v"],
                        "body": base64.b64encode(b"hi").decode(), "isBase64Encoded": True})  # fmt: skip
    assert full.status == 201 and full.body == b"hi"
    assert ("x", "y") in full.headers and ("set-cookie", "k=v") in full.headers
