"""``lambda-ml-serve serve`` started as a user starts it, on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(model: str = "wine_quality", timeout: float = 90, *options: str, port: int | None = None) -> Iterator[str]:
    """Run ``serve`` (with ``options``) until the block ends; yields its base URL once it answers GET /."""
    port = port or free_port()
    cli = Path(sys.executable).with_name("lambda-ml-serve")
    # A file, not a pipe: one log line per request would fill a pipe nobody reads and stall the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [str(cli), "serve", model, "--port", str(port), *options],
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
