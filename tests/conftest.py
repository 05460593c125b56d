from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
LEGACY_MODELS = {
    "1.5.2": DATA / "xgboost_wine_quality__ML-Algorithms.json",
    "1.6.2": DATA / "xgboost_wine_quality__lambda-with-ML-container.json",
}


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

    return App.load("wine_quality")


def url_event(body: str | bytes | None = None, *, method: str = "POST", path: str = "/", **extra) -> dict:
    """A Function URL (payload 2.0) event as AWS sends it."""
    from lambda_ml_serve.local.events import to_event

    if isinstance(body, str):
        body = body.encode()
    event = to_event(method, path, [("content-type", "application/json")], body or b"")
    event.update(extra)
    return event
