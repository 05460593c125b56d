"""``serve`` as an HTTP/1.1 server: HEAD, CORS (with a browser), and requests at the edges of the grammar.

A Function URL answers some requests at its front door without invoking the function: CORS
preflights when CORS is configured, unknown HTTP versions and methods. ``serve`` does the same, on uvicorn.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

import pytest
from served import free_port, serving

pytest_plugins = ["browser_fixtures"]

ORIGIN_PAGE = """<!doctype html><html><body><pre id="out">waiting</pre><script>
fetch("{url}/invocations", {{method: "POST", headers: {{"content-type": "application/json"}},
  body: JSON.stringify({{dataframe_records: {rows}}})}})
  .then(r => r.json()).then(j => {{ document.getElementById("out").textContent = JSON.stringify(j); }})
  .catch(e => {{ document.getElementById("out").textContent = "failed: " + e; }});
</script></body></html>"""


@pytest.fixture(scope="module")
def served() -> str:
    with serving("wine_quality", "--cors", "http://127.0.0.1:1234", "--cors", "http://localhost:5678") as url:
        yield url


@pytest.fixture(scope="module")
def expected(samples) -> list[float]:
    import io

    from lambda_ml_serve.runtime.app import App

    return App.load("wine_quality", log_stream=io.StringIO())(samples)["predictions"]


@pytest.fixture(scope="module")
def plain() -> str:
    with serving() as url:
        yield url


def raw(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are; the status, headers and body of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.lower().split(": ", 1) for line in lines[1:])
                if len(body) >= int(headers.get("content-length", "0")):
                    return int(lines[0].split()[1]), headers, body
    raise AssertionError(f"incomplete answer: {data!r}")


def request(url: str, method: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.mark.parametrize(
    "path", ["/", "/ping", "/health", "/openapi.json", "/v2", "/v2/health/ready", "/v2/models/wine_quality", "/docs"]
)
def test_head_wherever_get_works(plain: str, path: str) -> None:
    get_status, get_headers, get_body = request(plain + path, "GET")
    status, headers, body = request(plain + path, "HEAD")
    assert status == get_status == 200 and body == b"" and get_body
    assert headers["content-type"] == get_headers["content-type"]
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))


def test_head_states_the_length_of_the_compressed_answer_get_would_send(plain: str) -> None:
    gzip = {"accept-encoding": "gzip"}
    _, get_headers, get_body = request(plain + "/openapi.json", "GET", gzip)
    status, headers, body = request(plain + "/openapi.json", "HEAD", gzip)
    assert get_headers["content-encoding"] == headers["content-encoding"] == "gzip"
    assert status == 200 and body == b""
    assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))
    # On the wire: the connection closes right after the headers, the stated length not followed by bytes.
    parts = urlsplit(plain)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"HEAD /openapi.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    top, _, after = data.partition(b"\r\n\r\n")
    stated = [line.split(b":")[1].strip() for line in top.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    assert top.startswith(b"HTTP/1.1 200") and int(stated[0]) > 0 and after == b""


def test_head_on_a_post_only_route_is_a_405_naming_the_methods(plain: str) -> None:
    status, headers, _ = request(plain + "/invocations", "HEAD")
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _ = request(plain + "/", "PUT", body=b"{}")
    assert status == 405 and headers["allow"] == "GET, HEAD, POST"


def test_cors_preflight_and_answers(served: str, samples) -> None:
    preflight = {
        "origin": "http://127.0.0.1:1234",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    status, headers, body = request(served + "/invocations", "OPTIONS", preflight)
    assert status == 200 and body == b""
    assert headers["access-control-allow-origin"] == "http://127.0.0.1:1234"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "content-type"
    assert int(headers["access-control-max-age"]) > 0
    status, headers, _ = request(
        served + "/",
        "POST",
        {"origin": "http://localhost:5678", "content-type": "application/json"},
        json.dumps(samples).encode(),
    )
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:5678"
    assert "x-request-id" in headers["access-control-expose-headers"]
    # Another origin gets no access-control-* headers, so its browser refuses the answer.
    status, headers, _ = request(served + "/", "OPTIONS", {**preflight, "origin": "http://evil.example"})
    assert status == 200 and not any(k.startswith("access-control-") for k in headers)
    status, headers, _ = request(served + "/", "GET", {"origin": "http://evil.example"})
    assert status == 200 and not any(k.startswith("access-control-") for k in headers)


def test_without_cors_a_preflight_reaches_the_function_and_is_refused(plain: str) -> None:
    headers = {"origin": "http://127.0.0.1:1234", "access-control-request-method": "POST"}
    status, answer, _ = request(plain + "/invocations", "OPTIONS", headers)
    assert status == 405 and "access-control-allow-origin" not in answer


def page_server(html: str, port: int) -> http.server.ThreadingHTTPServer:
    """A one-page site on its own loopback origin."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("cors", [True, False], ids=["with-cors", "without-cors"])
def test_a_page_on_another_origin_calls_serve_from_chromium(browser, samples, expected, cors: bool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page_port, serve_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{page_port}"
    site = page_server(ORIGIN_PAGE.format(url=f"http://127.0.0.1:{serve_port}", rows=json.dumps(samples)), page_port)
    try:
        with serving("wine_quality", *(("--cors", origin) if cors else ()), port=serve_port):
            browser.get(origin + "/")
            out = WebDriverWait(browser, 30).until(
                lambda driver: (text := driver.find_element(By.ID, "out").text) != "waiting" and text
            )
    finally:
        site.shutdown()
        site.server_close()
    if cors:
        assert json.loads(out) == {"predictions": expected}
    else:
        assert out.startswith("failed: TypeError")  # the browser withholds the answer from the page


def test_unknown_http_versions_are_a_505(plain: str) -> None:
    status, _, body = raw(plain, b"GET / HTTP/9.9\r\nhost: x\r\n\r\n")
    assert status == 505
    assert json.loads(body)["error"]["type"] == "http_version_not_supported"


@pytest.mark.parametrize("method", [b"post", b"Get", b"BREW"])
def test_lowercase_and_unknown_methods_are_a_501(plain: str, method: bytes) -> None:
    status, _, body = raw(plain, method + b" / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n[]")
    assert status == 501
    assert json.loads(body)["error"]["type"] == "not_implemented"


def test_absolute_form_targets_are_routed_by_their_path(plain: str) -> None:
    host = urlsplit(plain).netloc.encode()
    for target in (b"http://" + host + b"/ping", b"http://" + host + b"/v2/health/live?x=1"):
        status, _, _ = raw(plain, b"GET " + target + b" HTTP/1.1\r\nhost: " + host + b"\r\n\r\n")
        assert status == 200
    status, _, body = raw(plain, b"GET http://" + host + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["model"] == "wine_quality"


def test_a_non_ascii_byte_in_the_path_is_a_400_in_the_error_shape(plain: str) -> None:
    status, headers, body = raw(plain, "GET /prédire HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    assert status == 400 and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "bad_request" and "percent-encoded" in error["message"]
    assert set(json.loads(body)["error"]) == {"type", "message", "details"}
