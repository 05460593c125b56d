"""A local Function URL: uvicorn (h11) in front of a small ASGI app that turns requests into events.

Each *environment* is a callable that takes a payload-2.0 event and returns what the function
returned: the handler loaded in-process, or a container behind the Runtime Interface Emulator. As on
Lambda, an environment serves one request at a time and ``N`` environments serve ``N`` side by side;
requests beyond that wait for a free one instead of failing.

uvicorn does the HTTP: keep-alive, chunked bodies, ``Expect: 100-continue``, a 400 for a malformed
request or ``Content-Length`` (in the project's error shape), and an accept backlog that absorbs bursts
of connections. What a Function URL's front door answers without invoking the function is answered
here too: CORS preflights (with ``cors``), 505 for an HTTP version other than 1.0 and 1.1, 501 for a
method that is not an uppercase token, and an absolute-form target (``GET http://host/path``) is routed
by its path.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.local.events import MAX_BODY_BYTES, TOO_LARGE_BODY, HttpResponse, from_result, to_event

Invoke = Callable[[dict], Any]
#: Connections the kernel queues before uvicorn accepts them.
BACKLOG = 2048
_JSON = [("content-type", "application/json")]
#: The methods a Function URL knows; any other (``post`` included: methods are case-sensitive) is a 501.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_VERSIONS = frozenset({"1.0", "1.1"})
BAD_REQUEST_MESSAGE = (
    "the request is not valid HTTP/1.1 (a malformed request line or header); a byte outside ASCII in the "
    "path must be percent-encoded"
)


def error_response(status: int, kind: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> HttpResponse:
    """An answer of the server itself, in the function's error shape."""
    body = json.dumps({"error": {"type": kind, "message": message, "details": []}}).encode()
    return HttpResponse(status, [*_JSON, *headers], body)


@dataclass(frozen=True)
class Cors:
    """A Function URL's CORS configuration: preflights are answered and answers get ``access-control-*``.

    ``"*"`` in ``allow_origins`` allows every origin; ``"*"`` in methods or headers allows what the
    preflight asks for.
    """

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ("*",)
    allow_headers: tuple[str, ...] = ("*",)
    expose_headers: tuple[str, ...] = ("x-request-id", "x-model-sha256", "inference-header-content-length")
    max_age: int = 300

    def allowed_origin(self, origin: str | None) -> str | None:
        """What ``access-control-allow-origin`` says to ``origin``, or None when it is not allowed."""
        if not origin:
            return None
        if "*" in self.allow_origins:
            return "*"
        return origin if origin in self.allow_origins else None

    def preflight(self, origin: str | None, headers: dict[str, str]) -> HttpResponse:
        """The answer to ``OPTIONS`` with ``Access-Control-Request-Method``: the function is not invoked."""
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return HttpResponse(200, [], b"")  # no access-control-* headers: the browser refuses the call
        method = headers.get("access-control-request-method", "")
        requested = headers.get("access-control-request-headers", "")
        methods = method if "*" in self.allow_methods else ", ".join(self.allow_methods)
        allow_headers = requested if "*" in self.allow_headers else ", ".join(self.allow_headers)
        answer = [
            ("access-control-allow-origin", allowed),
            ("access-control-allow-methods", methods),
            ("access-control-max-age", str(self.max_age)),
            ("vary", "origin"),
        ]
        if allow_headers:
            answer.append(("access-control-allow-headers", allow_headers))
        return HttpResponse(200, answer, b"")

    def headers_for(self, origin: str | None) -> list[tuple[str, str]]:
        """The headers added to an answer to a request from ``origin``."""
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return []
        return [
            ("access-control-allow-origin", allowed),
            ("access-control-expose-headers", ", ".join(self.expose_headers)),
            ("vary", "origin"),
        ]


class FunctionUrlProtocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request h11 cannot parse in the project's error shape."""

    def send_400_response(self, msg: str) -> None:
        body = error_response(400, "bad_request", BAD_REQUEST_MESSAGE).body
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


def path_of_target(raw_target: str) -> str:
    """The path of a request target; an absolute-form target (``http://host/path``) is routed by its path."""
    scheme, sep, rest = raw_target.partition("://")
    if sep and scheme.lower() in ("http", "https") and "/" not in scheme:
        path = rest[rest.find("/") :] if "/" in rest else "/"
        return path
    return raw_target


#: Characters of a function's error trace shown under an access line.
MAX_ERROR_CHARS = 300


class ListenError(LambdaMLServeError):
    """The server cannot listen on the address it was given."""


class _ClientGone(Exception):
    """The client hung up before its body was complete."""


class AccessLog:
    """One readable line per request for a person at a terminal: method, path, status, rows, latency.

    It is also the log stream of the functions that run in this process: it keeps the ``rows`` (and
    the error) of each request's JSON record, by request id, for the request's access line, instead
    of printing the record. Lines that are not such a record (a library's warning) pass through.
    Functions in a container write their records elsewhere: their access lines show ``-`` rows.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            try:
                record = json.loads(line)
                request_id = record["request_id"]
            except (ValueError, TypeError, KeyError):
                if line.strip():
                    self._print(line)
                continue
            with self._lock:
                self._records[request_id] = record
        return len(text)

    def flush(self) -> None:
        (self.stream or sys.stderr).flush()

    def request(self, method: str, path: str, status: int, request_id: str, latency_ms: float) -> None:
        """Print the access line of one answered request."""
        with self._lock:
            record = self._records.pop(request_id, {})
        rows = record.get("rows", "-")
        self._print(f"{method} {path} {status} {rows} row{'' if rows == 1 else 's'} {latency_ms:.1f} ms")
        if record.get("error"):
            error = " ".join(str(record["error"]).split())
            if len(error) > MAX_ERROR_CHARS:
                error = error[: MAX_ERROR_CHARS - 3] + "..."
            self._print(f"  {error}")

    def _print(self, line: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


class FunctionUrlApp:
    """The ASGI app: read the whole body (at most 6 MB), build the event, run it on a free environment."""

    def __init__(
        self, environments: Sequence[Invoke], cors: Cors | None = None, access_log: AccessLog | None = None
    ) -> None:
        if not environments:
            raise ValueError("at least one environment is needed")
        self.environments = list(environments)
        self.cors = cors
        self.access_log = access_log
        self._executor = ThreadPoolExecutor(len(self.environments), thread_name_prefix="environment")
        self._idle: asyncio.Queue[Invoke] | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        method = scope["method"]
        lookup = dict(headers)
        origin = lookup.get("origin")
        response = self._front_door(scope, method, lookup)
        if response is None:
            try:
                body = await self._read_body(receive, headers)
            except _ClientGone:
                return  # nothing to invoke: the request never arrived whole
            if body is None:
                response = HttpResponse(413, [*_JSON, ("connection", "close")], TOO_LARGE_BODY)
            else:
                target = path_of_target(scope["raw_path"].decode("latin-1"))
                if scope["query_string"]:
                    target += "?" + scope["query_string"].decode("latin-1")
                client = scope.get("client") or ("127.0.0.1", 0)
                event = to_event(method, target, headers, body, source_ip=client[0])
                started = time.perf_counter()
                response = await self._invoke(event)
                if self.access_log is not None:
                    latency_ms = (time.perf_counter() - started) * 1000
                    request_id = event["requestContext"]["requestId"]
                    self.access_log.request(method, scope["path"], response.status, request_id, latency_ms)
        if self.cors is not None and not (method == "OPTIONS" and "access-control-request-method" in lookup):
            # As a Function URL with CORS does: its own headers replace any the function sent.
            added = self.cors.headers_for(origin)
            names = {name for name, _ in added}
            kept = [(k, v) for k, v in response.headers if k.lower() not in names]
            response = HttpResponse(response.status, [*kept, *added], response.body)
        await send({"type": "http.response.start", "status": response.status, "headers": _encode(response, method)})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})

    def _front_door(self, scope: dict, method: str, headers: dict[str, str]) -> HttpResponse | None:
        """What is answered before the function is invoked: bad versions and methods, CORS preflights."""
        if scope.get("http_version") not in HTTP_VERSIONS:
            message = "the HTTP version is not supported; send HTTP/1.1"
            return error_response(505, "http_version_not_supported", message, [("connection", "close")])
        if method not in KNOWN_METHODS:
            message = "unknown method (methods are case-sensitive: GET, HEAD, POST, OPTIONS...)"
            return error_response(501, "not_implemented", message)
        if self.cors is not None and method == "OPTIONS" and "access-control-request-method" in headers:
            return self.cors.preflight(headers.get("origin"), headers)
        return None

    @staticmethod
    async def _read_body(receive: Callable, headers: list[tuple[str, str]]) -> bytes | None:
        """The request body, or None when it exceeds the limit (checked before reading when declared)."""
        declared = next((value for name, value in headers if name == "content-length"), None)
        if declared is not None and int(declared) > MAX_BODY_BYTES:  # h11 has already checked it is digits
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _invoke(self, event: dict) -> HttpResponse:
        if len(json.dumps(event)) > MAX_BODY_BYTES:  # the limit is on the invoke payload: base64 counts
            return HttpResponse(413, _JSON, TOO_LARGE_BODY)
        if self._idle is None:
            self._idle = asyncio.Queue()
            for environment in self.environments:
                self._idle.put_nowait(environment)
        environment = await self._idle.get()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, environment, event)
        except Exception as exc:  # what a Function URL answers when the function itself fails
            print(f"function error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return HttpResponse(502, _JSON, b'{"message": "Internal Server Error"}')
        finally:
            self._idle.put_nowait(environment)
        return from_result(result)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


def _encode(response: HttpResponse, method: str) -> list[tuple[bytes, bytes]]:
    headers = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in response.headers]
    given = [value for name, value in headers if name == b"content-length"]
    headers = [(name, value) for name, value in headers if name != b"content-length"]
    # The length of a HEAD answer is the GET body's, which the function states; every other answer's is its body's.
    length = given[0] if method == "HEAD" and given and given[0].isdigit() else str(len(response.body)).encode()
    return [*headers, (b"content-length", length)]


def access_log_for(log_format: str, stream: TextIO) -> AccessLog | None:
    """The access log for ``--log-format``: ``text``, ``json`` (the functions' raw JSON lines), or
    ``auto``: text on a terminal, JSON otherwise (what a log collector or a pipe expects)."""
    if log_format == "json" or (log_format == "auto" and not stream.isatty()):
        return None
    return AccessLog(stream)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or ListenError saying why not (busy port, unknown host)."""
    if not 0 <= port <= 65535:
        raise ListenError(f"cannot listen on port {port}: a port is 0 to 65535 (0 picks a free one)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ListenError(f"cannot listen on {host}:{port}: {reason}; choose another --host or --port") from None
    sock.listen(BACKLOG)
    return sock


class FunctionUrlServer:
    """Serve environments on ``host:port`` (loopback by default); port 0 picks a free port.

    ``serve_forever()`` runs in the calling thread until SIGINT/SIGTERM; ``start()`` serves from a
    background thread (tests, embedding) until ``close()``.
    """

    def __init__(
        self,
        environments: Invoke | Sequence[Invoke],
        host: str = "127.0.0.1",
        port: int = 8080,
        cors: Cors | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        """Bind ``host:port`` at once; raises ListenError (one line) when that is impossible."""
        self.socket = listen(host, port)
        self.server_address = self.socket.getsockname()
        self.app = FunctionUrlApp([environments] if callable(environments) else environments, cors, access_log)
        config = uvicorn.Config(
            self.app,
            http=FunctionUrlProtocol,
            lifespan="off",
            log_level="warning",
            backlog=BACKLOG,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self) -> None:
        self._server.run(sockets=[self.socket])

    def start(self) -> FunctionUrlServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        return self

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.socket.close()
        self.app.close()
