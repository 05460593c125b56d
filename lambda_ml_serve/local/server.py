"""A local Function URL: uvicorn (h11) in front of a small ASGI app that turns requests into events.

Each *environment* is a callable that takes a payload-2.0 event and returns what the function
returned: the handler loaded in-process, or a container behind the Runtime Interface Emulator. As on
Lambda, an environment serves one request at a time and ``N`` environments serve ``N`` side by side;
requests beyond that wait for a free one instead of failing.

uvicorn does the HTTP: keep-alive, chunked bodies, ``Expect: 100-continue``, a 400 for a malformed
request or ``Content-Length``, and an accept backlog that absorbs bursts of connections.
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
from typing import Any, TextIO

import uvicorn

from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.local.events import MAX_BODY_BYTES, TOO_LARGE_BODY, HttpResponse, from_result, to_event

Invoke = Callable[[dict], Any]
#: Connections the kernel queues before uvicorn accepts them.
BACKLOG = 2048
_JSON = [("content-type", "application/json")]


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

    def __init__(self, environments: Sequence[Invoke], access_log: AccessLog | None = None) -> None:
        if not environments:
            raise ValueError("at least one environment is needed")
        self.environments = list(environments)
        self.access_log = access_log
        self._executor = ThreadPoolExecutor(len(self.environments), thread_name_prefix="environment")
        self._idle: asyncio.Queue[Invoke] | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        try:
            body = await self._read_body(receive, headers)
        except _ClientGone:
            return  # nothing to invoke: the request never arrived whole
        if body is None:
            response = HttpResponse(413, [*_JSON, ("connection", "close")], TOO_LARGE_BODY)
        else:
            target = scope["raw_path"].decode("latin-1")
            if scope["query_string"]:
                target += "?" + scope["query_string"].decode("latin-1")
            client = scope.get("client") or ("127.0.0.1", 0)
            event = to_event(scope["method"], target, headers, body, source_ip=client[0])
            started = time.perf_counter()
            response = await self._invoke(event)
            if self.access_log is not None:
                latency_ms = (time.perf_counter() - started) * 1000
                request_id = event["requestContext"]["requestId"]
                self.access_log.request(scope["method"], scope["path"], response.status, request_id, latency_ms)
        await send({"type": "http.response.start", "status": response.status, "headers": _encode(response)})
        await send({"type": "http.response.body", "body": response.body})

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


def _encode(response: HttpResponse) -> list[tuple[bytes, bytes]]:
    headers = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in response.headers]
    return [*headers, (b"content-length", str(len(response.body)).encode())]


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
        access_log: AccessLog | None = None,
    ) -> None:
        """Bind ``host:port`` at once; raises ListenError (one line) when that is impossible."""
        self.socket = listen(host, port)
        self.server_address = self.socket.getsockname()
        self.app = FunctionUrlApp([environments] if callable(environments) else environments, access_log)
        config = uvicorn.Config(
            self.app, http="h11", lifespan="off", log_level="warning", backlog=BACKLOG, server_header=False
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
