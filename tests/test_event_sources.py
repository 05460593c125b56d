"""Every event source that puts HTTP in front of the function, each answered in its own response format.

The events in tests/events/ follow AWS's documented and captured examples; the tests put the body in.
"""

from __future__ import annotations

import base64
import copy
import gzip
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


SOURCES = ["function-url", "apigw-http-v2", "apigw-rest-v1", "alb", "alb-multivalue"]


def http_event(name: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> dict:
    """The source's event for a request: its method, path, headers (replacing any of the same name), body."""
    loaded = event(
        name, base64.b64encode(body).decode() if body is not None else None, isBase64Encoded=body is not None
    )
    if "http" in loaded["requestContext"]:
        loaded["rawPath"] = path
        loaded["requestContext"]["http"].update(method=method, path=path)
    else:
        loaded.update(path=path, httpMethod=method)
    for key, wrap in (("headers", str), ("multiValueHeaders", lambda value: [value])):
        if loaded.get(key):
            kept = {k: v for k, v in loaded[key].items() if k.lower() not in headers}
            loaded[key] = kept | {k: wrap(v) for k, v in headers.items()}
    return loaded


def answer_of(response: dict) -> tuple[dict[str, str], bytes]:
    """The response's headers (one value each) and body bytes, as the client receives them."""
    multi = response.get("multiValueHeaders")
    headers = {k: v[0] for k, v in multi.items()} if multi else response["headers"]
    body = base64.b64decode(response["body"]) if response["isBase64Encoded"] else response["body"].encode()
    return headers, body


@pytest.mark.parametrize("name", SOURCES)
def test_binary_v2_tensors_on_every_event_source(app, name, samples, expected):
    import numpy
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("input-0", [len(samples), len(samples[0])], "FP32")
    tensor.set_data_from_numpy(numpy.asarray([list(row.values()) for row in samples], dtype=numpy.float32))
    body, length = httpclient.InferenceServerClient.generate_request_body([tensor])  # binary in, binary out
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(length)}
    response = app(http_event(name, "POST", "/v2/models/wine_quality/infer", headers, body))
    assert response["statusCode"] == 200
    answer_headers, answer = answer_of(response)
    parsed = httpclient.InferenceServerClient.parse_response_body(
        answer, header_length=int(answer_headers["inference-header-content-length"])
    )
    assert parsed.as_numpy("predictions").tolist() == expected


@pytest.mark.parametrize("name", SOURCES)
def test_gzip_bodies_and_gzip_answers_on_every_event_source(app, name, samples, expected):
    gzip_body = {"content-type": "application/json", "content-encoding": "gzip"}
    body = gzip.compress(json.dumps({"dataframe_records": samples}).encode())
    response = app(http_event(name, "POST", "/invocations", gzip_body, body))
    assert response["statusCode"] == 200
    assert json.loads(answer_of(response)[1]) == {"predictions": expected}
    many = samples * 200
    gzip_answer = {"content-type": "application/json", "accept-encoding": "gzip, deflate"}
    response = app(http_event(name, "POST", "/invocations", gzip_answer, json.dumps(many).encode()))
    headers, answer = answer_of(response)
    assert response["statusCode"] == 200 and headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(answer)) == {"predictions": expected * 200}


@pytest.mark.parametrize("path", ["/", "/ping", "/openapi.json", "/v2/models/wine_quality"])
@pytest.mark.parametrize("name", SOURCES)
def test_head_through_every_event_source_states_what_get_would_send(app, name, path):
    for accept in ("identity", "gzip"):
        got = app(http_event(name, "GET", path, {"accept-encoding": accept}))
        head = app(http_event(name, "HEAD", path, {"accept-encoding": accept}))
        assert head["statusCode"] == got["statusCode"] == 200
        get_headers, get_body = answer_of(got)
        head_headers, head_body = answer_of(head)
        assert head_body == b"" and get_body
        assert head_headers["content-length"] == str(len(get_body))
        assert {k: v for k, v in head_headers.items() if k not in ("content-length", "x-request-id")} == {
            k: v for k, v in get_headers.items() if k != "x-request-id"
        }
