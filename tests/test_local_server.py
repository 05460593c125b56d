"""The local Function URL: real HTTP in (uvicorn on 127.0.0.1), payload-2.0 events to the handler, responses back.

Malformed requests are sent on raw sockets, exactly as a broken or hostile client would.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_ml_serve.local.events import MAX_BODY_BYTES, TOO_LARGE_BODY, from_result, to_event
from lambda_ml_serve.local.server import FunctionUrlServer


def request(url: str, body: bytes | None = None, method: str = "POST", headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def exchange(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send raw bytes, then read until the server closes the connection (or stays silent for ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """Split a byte stream of HTTP/1.1 responses (each with a content-length) into (status, body)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(fields.get(b"content-length", len(rest)))
        found.append((int(lines[0].split()[1]), rest[:length]))
        raw = rest[length:]
    return found


@pytest.fixture(scope="module")
def server(wine_app):
    srv = FunctionUrlServer(wine_app, port=0).start()
    yield srv
    srv.close()


@pytest.fixture
def echo_server():
    """A server whose function answers with the event it received."""
    srv = FunctionUrlServer(lambda event: {"statusCode": 200, "body": json.dumps(event)}, port=0).start()
    yield srv
    srv.close()


def port_of(srv: FunctionUrlServer) -> int:
    return srv.server_address[1]


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
    status, _, body = request(
        server.url + "predict", samples_body, headers={"content-type": "application/octet-stream"}
    )
    assert status == 200 and len(json.loads(body)["predictions"]) == 2


def test_errors_keep_their_status(server):
    assert request(server.url, b"{", headers={"content-type": "application/json"})[0] == 400
    assert request(server.url, b"[]", headers={"content-type": "application/json"})[0] == 422
    assert request(server.url + "nope", method="GET")[0] == 404
    status, headers, _ = request(server.url, b"{}", method="DELETE")
    assert status == 405 and headers["allow"] == "GET, HEAD, POST"
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


# -- finding 1: chunked bodies, 100-continue, a Content-Length shorter than the body -----------------


def test_chunked_body_is_read_whole(server, wine_app, samples_body):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (samples_body[:100], samples_body[100:]))
    raw = exchange(
        port_of(server),
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    [(status, body)] = responses(raw)
    assert status == 200
    assert json.loads(body)["predictions"] == wine_app({"instances": json.loads(samples_body)})["predictions"]


def test_chunked_request_keeps_the_connection_in_step(server, samples_body):
    # Two chunked requests on one connection: the second is answered too, nothing is parsed as a request line.
    one = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    one += b"%x\r\n%s\r\n0\r\n\r\n" % (len(samples_body), samples_body)
    raw = exchange(port_of(server), one + one.replace(b"Host: h", b"Host: h\r\nConnection: close"))
    assert [status for status, _ in responses(raw)] == [200, 200]


def test_expect_100_continue(server, samples_body):
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(samples_body)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(samples_body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert responses(raw)[0][0] == 200


def test_content_length_shorter_than_the_body_does_not_desynchronise(echo_server):
    raw = exchange(
        port_of(echo_server), b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}GARBAGE / HTTP/1.1\r\n\r\n"
    )
    (status, body), (garbage_status, _) = responses(raw)
    assert status == 200 and base64.b64decode(json.loads(body)["body"]) == b"{}"
    assert garbage_status == 400  # the rest is a malformed request, answered and closed, never a hang


def test_a_client_hanging_up_mid_body_invokes_nothing():
    invoked = []
    srv = FunctionUrlServer(lambda event: invoked.append(event) or {"ok": True}, port=0).start()
    try:
        with socket.create_connection(("127.0.0.1", port_of(srv)), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n[{")
        assert request(srv.url, b"{}")[0] == 200  # served after the broken request was dropped
    finally:
        srv.close()
    assert len(invoked) == 1


# -- finding 3: bad Content-Length ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [b"abc", b"1e3", b"-1", b"+5", b"5, 6"])
def test_bad_content_length_is_400(echo_server, length):
    raw = exchange(port_of(echo_server), b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + length + b"\r\n\r\n{}")
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert b"Traceback" not in raw


def test_oversized_body_is_refused_as_aws_does(echo_server):
    # Declared too large: answered at once, before the body is sent.
    raw = exchange(
        port_of(echo_server), b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
    )
    assert responses(raw) == [(413, TOO_LARGE_BODY)]
    # Chunked past the limit: refused once the limit is crossed.
    chunk = b"a" * 65536
    connection = http.client.HTTPConnection("127.0.0.1", port_of(echo_server), timeout=30)
    connection.putrequest("POST", "/")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    try:
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close as soon as it answered
    answer = connection.getresponse()
    assert (answer.status, answer.read()) == (413, TOO_LARGE_BODY)


def test_body_at_the_limit_is_accepted(echo_server):
    status, _, body = request(echo_server.url, b"a" * (MAX_BODY_BYTES // 2), headers={"content-type": "text/plain"})
    assert status == 200 and len(json.loads(body)["body"]) == MAX_BODY_BYTES // 2


# -- findings 4 and 5: headers and body bytes as AWS passes them --------------------------------------


def test_cookie_header_is_kept_as_well_as_split(echo_server):
    _, _, body = request(echo_server.url, b"{}", headers={"Cookie": "a=1; b=2", "content-type": "application/json"})
    event = json.loads(body)
    assert event["headers"]["cookie"] == "a=1; b=2"
    assert event["cookies"] == ["a=1", "b=2"]


@pytest.mark.parametrize("payload", [b'[{"pH": "\xe9"}]', b'{"a": "\xc3"}', b"\x80"])
def test_text_body_that_is_not_utf8_goes_base64_with_its_exact_bytes(echo_server, server, payload):
    _, _, body = request(echo_server.url, payload, headers={"content-type": "application/json"})
    event = json.loads(body)
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == payload
    status, _, answer = request(server.url, payload, headers={"content-type": "application/json"})
    assert status == 400 and json.loads(answer)["error"]["type"] == "bad_request"


def test_events_are_valid_for_powertools(echo_server):
    parser = pytest.importorskip("aws_lambda_powertools.utilities.parser.models")
    for headers, payload in [
        ({"content-type": "application/json", "cookie": "k=v"}, b'{"a": 1}'),
        ({"content-type": "image/png"}, b"\x89PNG"),
        ({}, None),
    ]:
        _, _, body = request(
            echo_server.url + "p?x=1&x=2", payload, method="POST" if payload else "GET", headers=headers
        )
        model = parser.LambdaFunctionUrlModel.model_validate(json.loads(body))
        assert model.rawQueryString == "x=1&x=2" and model.queryStringParameters == {"x": "1,2"}


def test_event_shape():
    event = to_event(
        "post",
        "/predict?a=1&a=2&b=",
        [("Content-Type", "application/json"), ("X-Thing", "1"), ("x-thing", "2"), ("Cookie", "c=1; d=2")],
        b'{"x": 1}',
    )
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/predict" and event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["headers"]["x-thing"] == "1,2"
    assert event["headers"]["cookie"] == "c=1; d=2" and event["cookies"] == ["c=1", "d=2"]
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["body"] == '{"x": 1}' and event["isBase64Encoded"] is False
    binary = to_event("POST", "/", [("content-type", "image/png")], b"\x89PNG")
    assert binary["isBase64Encoded"] and base64.b64decode(binary["body"]) == b"\x89PNG"


def test_response_inference():
    plain = from_result({"a": 1})
    assert (plain.status, json.loads(plain.body)) == (200, {"a": 1})
    full = from_result(
        {
            "statusCode": 201,
            "headers": {"x": "y"},
            "cookies": ["k=v"],
            "body": base64.b64encode(b"hi").decode(),
            "isBase64Encoded": True,
        }
    )
    assert full.status == 201 and full.body == b"hi"
    assert ("x", "y") in full.headers and ("set-cookie", "k=v") in full.headers


# -- finding 2 and --concurrency: load, keep-alive, environments side by side --------------------------


def keep_alive_client(port: int, body: bytes, requests: int, go: threading.Barrier) -> list[int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    go.wait()  # all clients connect at once
    try:
        statuses = []
        for _ in range(requests):
            connection.request("POST", "/", body, {"content-type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            statuses.append(answer.status)
        return statuses
    finally:
        connection.close()


def test_fifty_keep_alive_clients_get_every_answer(server, samples_body):
    go = threading.Barrier(50)
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: keep_alive_client(port_of(server), samples_body, 20, go), range(50)))
    # Any reset or protocol error would have raised in a client thread and surfaced here.
    assert [status for statuses in results for status in statuses] == [200] * 1000


def test_one_request_at_a_time_per_environment():
    def run(environments: int) -> int:
        lock, busy, peak = threading.Lock(), [0], [0]
        release = threading.Event()

        def environment(event):
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
                if peak[0] == environments:
                    release.set()
            release.wait(2)  # hold the request until every environment is busy (or a request had to wait)
            with lock:
                busy[0] -= 1
            return {"ok": True}

        srv = FunctionUrlServer([environment] * environments, port=0).start()
        try:
            with ThreadPoolExecutor(6) as pool:
                statuses = list(pool.map(lambda _: request(srv.url, b"{}")[0], range(6)))
        finally:
            srv.close()
        assert statuses == [200] * 6
        return peak[0]

    assert run(1) == 1
    assert run(3) == 3


# -- hostile requests: whatever the bytes, one HTTP answer and a server that keeps serving ------------

header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    length=header_value | st.integers(-5, 10**20).map(str),
    chunked=st.booleans(),
    body=st.binary(max_size=64),
)
def test_malformed_framing_gets_one_answer_and_the_server_keeps_serving(echo_server, length, chunked, body):
    head = b"POST / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: " + length.encode()
    head += b"\r\nTransfer-Encoding: chunked" if chunked else b""
    raw = exchange(port_of(echo_server), head + b"\r\n\r\n" + body, timeout=0.5)
    if raw:
        status = int(raw.split(b" ", 2)[1])
        assert status in (200, 400, 413) and b"Traceback" not in raw
    else:  # silence only while the server still waits for the rest of a body it was promised
        assert chunked or (length.strip().isdigit() and int(length) > len(body))
    assert request(echo_server.url, b"{}")[0] == 200
