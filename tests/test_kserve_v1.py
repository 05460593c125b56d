"""KServe's own protocol ("v1", its clients' default): GET /v1/models/NAME, POST :predict and :explain.

KServe's ``InferenceRESTClient`` with its defaults is run against ``serve`` in tests/test_kserve_client.py;
here the routes are checked in-process through every HTTP event source, with their errors.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest

from lambda_ml_serve.runtime.app import App

EVENTS = Path(__file__).parent / "events"
SOURCES = ["function-url", "apigw-http-v2", "apigw-rest-v1", "alb", "alb-multivalue"]
MARKER = "SECRET-VALUE-42"


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


def on(app: App, source: str, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    event = copy.deepcopy(json.loads((EVENTS / f"{source}.json").read_text()))
    event["body"] = body
    if "http" in event.get("requestContext", {}):
        event["rawPath"] = path
        event["requestContext"]["http"].update(method=method, path=path)
    else:
        event.update(path=path, httpMethod=method)
    if isinstance(event.get("multiValueHeaders"), dict):
        event["multiValueHeaders"]["content-type"] = ["application/json"]
    else:
        event.setdefault("headers", {})["content-type"] = "application/json"
    response = app(event)
    return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize("source", SOURCES)
def test_v1_routes_on_every_event_source(app, source, samples) -> None:
    expected = app(samples)["predictions"]
    assert on(app, source, "GET", "/v1/models/wine_quality") == (200, {"name": "wine_quality", "ready": True})
    status, answer = on(app, source, "POST", "/v1/models/wine_quality:predict", json.dumps({"instances": samples}))
    assert (status, answer) == (200, {"predictions": expected})
    # Rows as lists in the schema's order are instances too, as KServe's sklearn and xgboost servers take them.
    as_lists = [list(row.values()) for row in samples]
    assert on(app, source, "POST", "/v1/models/wine_quality:predict", json.dumps({"instances": as_lists})) == (
        200,
        {"predictions": expected},
    )
    status, explained = on(app, source, "POST", "/v1/models/wine_quality:explain", json.dumps({"instances": samples}))
    assert status == 200 and explained["predictions"] == expected
    for row in explained["explanations"]:
        assert sum(row["contributions"].values()) + row["expected_value"] == pytest.approx(row["margin"], abs=1e-4)


def test_v1_errors_name_the_problem_without_echoing_values(app, samples) -> None:
    status, answer = on(app, "function-url", "GET", "/v1/models/other")
    assert status == 404 and "wine_quality" in answer["error"]["message"]
    status, answer = on(app, "function-url", "POST", "/v1/models/other:predict", json.dumps({"instances": samples}))
    assert status == 404
    status, answer = on(app, "function-url", "GET", "/v1/models/wine_quality:predict")
    assert status == 405
    bad = [dict(samples[0], pH=MARKER)]
    status, answer = on(app, "function-url", "POST", "/v1/models/wine_quality:predict", json.dumps({"instances": bad}))
    assert status == 422 and answer["error"]["details"][0]["field"] == "pH"
    assert MARKER not in json.dumps(answer)
    status, answer = on(app, "function-url", "POST", "/v1/models/wine_quality:predict", "{not json")
    assert status == 400


def test_v1_routes_are_in_the_openapi_document(app) -> None:
    paths = app.openapi["paths"]
    assert set(paths["/v1/models/{name}"]) == {"get"}
    assert set(paths["/v1/models/{name}:predict"]) == {"post"}
    assert set(paths["/v1/models/{name}:explain"]) == {"post"}
