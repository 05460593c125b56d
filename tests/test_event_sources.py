"""Every event source that puts HTTP in front of the function, each answered in its own response format.

The events in tests/events/ follow AWS's documented and captured examples; the tests put the body in.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import pandas
import pytest
from tests_support import LEGACY_MODEL

from lambda_ml_serve.runtime.app import App

EVENTS = Path(__file__).parent / "events"
#: What the original service answered for samples.json with the 1.6.2 model.
ORIGINAL_PREDICTIONS = [6.573914051055908, 4.869720935821533]


def event(name: str, body: str | None = None, **changes) -> dict:
    loaded = json.loads((EVENTS / f"{name}.json").read_text())
    loaded["body"] = body
    loaded.update(changes)
    return loaded


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


@pytest.fixture(scope="module")
def original_app() -> App:
    """The original project's model behind the bare-array answer its clients expect."""
    from conftest import shared_file

    return App.load(
        "wine_quality", artifact=shared_file(LEGACY_MODEL), response="predictions", log_stream=io.StringIO()
    )


@pytest.fixture(scope="module")
def expected(app, samples) -> list[float]:
    return app(samples)["predictions"]


@pytest.mark.parametrize("name", ["function-url", "apigw-http-v2", "apigw-rest-v1", "alb"])
def test_each_source_predicts_and_answers_statuscode_headers_body(app, name, samples_body, expected):
    source = event(name, samples_body.decode())
    response = app(source)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert response["isBase64Encoded"] is False
    assert json.loads(response["body"])["predictions"] == expected
    if "requestId" in source["requestContext"]:
        assert response["headers"]["x-request-id"] == source["requestContext"]["requestId"]


def test_alb_answers_with_a_status_description(app, samples_body):
    assert app(event("alb", samples_body.decode()))["statusDescription"] == "200 OK"
    missing = app(event("alb", path="/nope", httpMethod="GET"))
    assert missing["statusCode"] == 404
    assert missing["statusDescription"] == "404 Not Found"
    invalid = app(event("alb", json.dumps({"pH": 3.2})))
    assert invalid["statusCode"] == 422
    assert invalid["statusDescription"].startswith("422 Unprocessable")


def test_alb_with_multi_value_headers_gets_them_back(app, samples_body, expected):
    response = app(event("alb-multivalue", samples_body.decode()))
    assert "headers" not in response
    assert response["multiValueHeaders"]["content-type"] == ["application/json"]
    assert len(response["multiValueHeaders"]["x-request-id"]) == 1
    assert response["statusDescription"] == "200 OK"
    assert json.loads(response["body"])["predictions"] == expected
    not_allowed = app(event("alb-multivalue", path="/predict", httpMethod="GET"))
    assert not_allowed["statusCode"] == 405
    assert not_allowed["multiValueHeaders"]["allow"] == ["POST"]


def test_rest_api_base64_body_and_get_metadata(app, samples_body, expected):
    encoded = event("apigw-rest-v1", base64.b64encode(samples_body).decode(), isBase64Encoded=True)
    assert json.loads(app(encoded)["body"])["predictions"] == expected
    meta = app(event("apigw-rest-v1", path="/", httpMethod="GET"))
    assert json.loads(meta["body"])["model"] == "wine_quality"
    bad = app(event("apigw-rest-v1", "not base64!", isBase64Encoded=True))
    assert bad["statusCode"] == 400
    assert bad["headers"]["x-request-id"] == "deef4878-7910-11e6-8f14-25afc3e9ae33"


def test_http_api_named_stage_prefix_is_not_part_of_the_route(app, samples_body, expected):
    staged = event("apigw-http-v2", samples_body.decode(), rawPath="/prod/predict")
    staged["requestContext"] = copy.deepcopy(staged["requestContext"]) | {"stage": "prod"}
    assert json.loads(app(staged)["body"])["predictions"] == expected


def test_console_test_event_is_a_post_to_root(app, samples_body, expected):
    response = app({"body": samples_body.decode(), "isBase64Encoded": False})
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["predictions"] == expected
    encoded = app({"body": base64.b64encode(samples_body).decode(), "isBase64Encoded": True})
    assert json.loads(encoded["body"])["predictions"] == expected
    assert app({"body": "{"})["statusCode"] == 400


def test_original_test_event_gets_the_original_predictions(original_app, samples_body):
    # The original project's test event, as pasted into the Lambda console.
    response = original_app({"body": samples_body.decode(), "isBase64Encoded": False})
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == pytest.approx(ORIGINAL_PREDICTIONS, abs=1e-6)


def test_pandas_default_json_gets_the_original_predictions(original_app, samples):
    body = pandas.DataFrame(samples).to_json()  # column orient: {"col": {"0": v, "1": v}}
    assert json.loads(body)["pH"] == {"0": 3.34, "1": 3.0}
    response = original_app({"body": body, "isBase64Encoded": False})
    assert json.loads(response["body"]) == pytest.approx(ORIGINAL_PREDICTIONS, abs=1e-6)
    as_lists = pandas.DataFrame(samples).to_dict(orient="list")
    assert original_app(as_lists) == pytest.approx(ORIGINAL_PREDICTIONS, abs=1e-6)


def test_direct_invocation_still_answers_the_plain_payload(app, samples, expected):
    assert app({"instances": samples})["predictions"] == expected
    # A row whose feature happens to be called "body" would not be a test event: other keys are present.
    answer = app({"body": "x", **samples[0]})
    assert answer["error"]["type"] == "validation_error"
