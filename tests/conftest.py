from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: ``lambda-ml-serve`` run by this interpreter: a subprocess sees the code under test (PYTHONPATH is inherited).
CLI = [sys.executable, "-m", "lambda_ml_serve.cli"]
SHARED = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
LEGACY_MODELS = {
    "1.5.2": DATA / "xgboost_wine_quality__ML-Algorithms.json",
    "1.6.2": DATA / "xgboost_wine_quality__lambda-with-ML-container.json",
}


def cli(words: str, *args: str | Path) -> list[str]:
    """The command line ``lambda-ml-serve WORDS ARGS...``: ``words`` split at spaces, each of ``args`` kept whole."""
    return [*CLI, *words.split(), *map(str, args)]


def run_python(*args: str | Path, stdin: Any, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``python ARGS...`` (a snippet and its arguments) with ``stdin`` sent as JSON; it must succeed."""
    result = subprocess.run(
        [sys.executable, *map(str, args)], input=json.dumps(stdin), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def shared_file(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is not there (set LAMBDA_ML_SERVE_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def samples_body() -> bytes:
    """The request body existing clients send, byte for byte."""
    return shared_file(DATA / "samples.json").read_bytes()


@pytest.fixture(scope="session")
def samples(samples_body: bytes) -> list[dict]:
    return json.loads(samples_body)


@pytest.fixture(scope="session")
def wine_app():
    from lambda_ml_serve.runtime.app import App

    return App.load("wine_quality", log_stream=io.StringIO())


@pytest.fixture(scope="session")
def wine_rows(wine_app, samples: list[dict]) -> list[dict]:
    """The samples and the spec's examples: red and white wines, as the clients' tests send them."""
    return samples + list(wine_app.spec.example)


@pytest.fixture(scope="session")
def wine_expected(wine_app, wine_rows: list[dict]) -> list[float]:
    """The in-process handler's predictions for ``wine_rows``: what every client must get."""
    return wine_app(wine_rows)["predictions"]


def url_event(body: str | bytes | None = None, *, method: str = "POST", path: str = "/", **extra) -> dict:
    """A Function URL (payload 2.0) event as AWS sends it."""
    from lambda_ml_serve.local.events import to_event

    if isinstance(body, str):
        body = body.encode()
    event = to_event(method, path, [("content-type", "application/json")], body or b"")
    event.update(extra)
    return event


def post_when_up(proc: subprocess.Popen, port: int, body: bytes, timeout: float = 90) -> tuple[dict, bytes]:
    """POST ``body`` to a server ``proc`` is starting on ``port``, as soon as it listens.

    Fails with the server's stderr if it exits first; returns the 200 answer's headers and body.
    """
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=body, headers={"content-type": "application/json"}
    )
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
                return dict(response.headers), response.read()
        except urllib.error.HTTPError:
            raise
        except (ConnectionError, urllib.error.URLError):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
