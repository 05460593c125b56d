"""``lambda-ml-serve serve`` started as a user starts it, on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    model: str = "wine_quality", *options: str | Path, timeout: float = 90, port: int | None = None
) -> Iterator[str]:
    """Run ``serve MODEL OPTIONS...`` until the block ends; yields its base URL once it answers GET /."""
    port = port or free_port()
    # A file, not a pipe: one log line per request would fill a pipe nobody reads and stall the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cli("serve", model, "--port", port, *options),
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            _wait_until_up(f"http://127.0.0.1:{port}/", proc, log, time.monotonic() + timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def post(url: str, body: bytes) -> tuple[dict[str, str], bytes]:
    """POST a JSON body; the answer's headers and body (an error status raises HTTPError)."""
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(response.headers), response.read()


def _wait_until_up(url: str, proc: subprocess.Popen, log, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10):
                return
        except (ConnectionError, urllib.error.URLError):
            pass
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"serve exited: {log.read().decode(errors='replace')}")
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.2)
