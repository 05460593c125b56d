"""A local Function URL: a real HTTP server that turns each request into a payload-2.0 event.

``invoke`` runs the function: the handler in-process, or a container through the Runtime
Interface Emulator. Requests are served one at a time, as one Lambda execution environment does.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lambda_ml_serve.local.events import MAX_BODY_BYTES, HttpResponse, from_result, to_event

Invoke = Callable[[dict], Any]


def _error(status: int, message: str) -> HttpResponse:
    body = json.dumps({"message": message}).encode()
    return HttpResponse(status, [("content-type", "application/json")], body)


class FunctionUrlServer(ThreadingHTTPServer):
    """Serve ``invoke`` on ``host:port`` (loopback by default); port 0 picks a free port."""

    daemon_threads = True

    def __init__(self, invoke: Invoke, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.invoke = invoke
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def answer(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> HttpResponse:
        event = to_event(method, target, headers, body, source_ip=self.server_address[0])
        with self._lock:
            try:
                result = self.invoke(event)
            except Exception as exc:  # what Function URLs answer when the function itself fails
                print(f"function error: {type(exc).__name__}: {exc}", file=sys.stderr)
                return _error(502, "Internal Server Error")
        return from_result(result)

    def start(self) -> FunctionUrlServer:
        """Serve in a background thread (for tests and embedding); ``close()`` stops it."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FunctionUrlServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            response = _error(413, "Request must be smaller than 6291456 bytes for the InvokeFunction operation")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            response = self.server.answer(self.command, self.path, list(self.headers.items()), body)
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")
