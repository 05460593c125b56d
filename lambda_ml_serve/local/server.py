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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn

from lambda_ml_serve.local.events import MAX_BODY_BYTES, TOO_LARGE_BODY, HttpResponse, from_result, to_event

Invoke = Callable[[dict], Any]
#: Connections the kernel queues before uvicorn accepts them.
BACKLOG = 2048
_JSON = [("content-type", "application/json")]


class _ClientGone(Exception):
    """The client hung up before its body was complete."""


class FunctionUrlApp:
    """The ASGI app: read the whole body (at most 6 MB), build the event, run it on a free environment."""

    def __init__(self, environments: Sequence[Invoke]) -> None:
        if not environments:
            raise ValueError("at least one environment is needed")
        self.environments = list(environments)
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
            response = await self._invoke(event)
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


class FunctionUrlServer:
    """Serve environments on ``host:port`` (loopback by default); port 0 picks a free port.

    ``serve_forever()`` runs in the calling thread until SIGINT/SIGTERM; ``start()`` serves from a
    background thread (tests, embedding) until ``close()``.
    """

    def __init__(self, environments: Invoke | Sequence[Invoke], host: str = "127.0.0.1", port: int = 8080) -> None:
        self.app = FunctionUrlApp([environments] if callable(environments) else environments)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.socket.listen(BACKLOG)
        self.server_address = self.socket.getsockname()
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
