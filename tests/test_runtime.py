"""The handler's HTTP contract: Function URL events and direct invocations."""

from __future__ import annotations

import base64
import io
import json

import pytest
from conftest import url_event

from lambda_ml_serve.runtime.app import App


def body_of(response: dict) -> dict:
    assert response["headers"]["content-type"] == "application/json"
    assert response["headers"]["x-request-id"]
    return json.loads(response["body"])


def test_samples_body_unchanged_predicts(wine_app, samples_body):
    response = wine_app(url_event(samples_body))
    assert response["statusCode"] == 200
    body = body_of(response)
    assert body["model"] == "wine_quality"
    assert body["version"] == wine_app.spec.version
    assert len(body["predictions"]) == 2
    assert all(3 <= p <= 9 for p in body["predictions"])


@pytest.mark.parametrize("path", ["/", "/predict"])
def test_three_body_shapes_agree(wine_app, samples, path):
    as_list = body_of(wine_app(url_event(json.dumps(samples), path=path)))["predictions"]
    as_instances = body_of(wine_app(url_event(json.dumps({"instances": samples}), path=path)))
    one_row = body_of(wine_app(url_event(json.dumps(samples[1]), path=path)))
    assert as_instances["predictions"] == as_list
    assert one_row["predictions"] == as_list[1:]


def test_base64_body(wine_app, samples_body):
    event = url_event(base64.b64encode(samples_body).decode(), isBase64Encoded=True)
    plain = body_of(wine_app(url_event(samples_body)))
    assert body_of(wine_app(event)) == plain


def test_request_id_comes_from_the_event(wine_app, samples_body):
    event = url_event(samples_body)
    response = wine_app(event)
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]


def test_get_metadata(wine_app):
    response = wine_app(url_event(method="GET"))
    assert response["statusCode"] == 200
    meta = body_of(response)
    assert meta["model"] == "wine_quality"
    assert meta["features"][0] == "fixed acidity" and meta["features"][-1] == "color_white"
    assert meta["input_schema"]["properties"]["pH"]["maximum"] == 14
    assert len(meta["example"]["instances"]) >= 1
    assert "rmse" in meta["metrics"]


def test_example_input_is_valid(wine_app):
    response = wine_app(url_event(json.dumps({"instances": list(wine_app.spec.example)})))
    assert response["statusCode"] == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_bad_json_is_400(wine_app, body, message):
    response = wine_app(url_event(body))
    assert response["statusCode"] == 400
    error = body_of(response)["error"]
    assert error["type"] == "bad_request"
    assert message in error["message"]


def test_bad_base64_is_400(wine_app):
    event = url_event("@@not base64@@", isBase64Encoded=True)
    response = wine_app(event)
    assert response["statusCode"] == 400
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]
    assert "base64" in body_of(response)["error"]["message"]


def test_validation_reports_every_bad_field_of_every_row(wine_app, samples):
    rows = [dict(r) for r in samples]
    rows[0]["pH"] = 15
    rows[0]["density"] = 3
    rows[1]["alcohol"] = -1
    del rows[1]["chlorides"]
    response = wine_app(url_event(json.dumps(rows)))
    assert response["statusCode"] == 422
    error = body_of(response)["error"]
    assert error["type"] == "validation_error"
    found = {(d["row"], d["field"]) for d in error["details"]}
    assert found == {(0, "pH"), (0, "density"), (1, "alcohol"), (1, "chlorides")}
    missing = next(d for d in error["details"] if d["field"] == "chlorides")
    assert missing["message"] == "required field is missing"


def test_unknown_field_suggests_the_closest_name(wine_app, samples):
    row = dict(samples[0])
    row["fixed acidty"] = row.pop("fixed acidity")
    error = body_of(wine_app(url_event(json.dumps(row))))["error"]
    messages = {d["field"]: d["message"] for d in error["details"]}
    assert messages["fixed acidty"] == "unknown field; did you mean 'fixed acidity'?"
    assert messages["fixed acidity"] == "required field is missing"


def test_errors_never_echo_the_payload(wine_app, samples):
    secret = "s3cr3t-value-123"
    row = dict(samples[0], pH=secret)
    response = wine_app(url_event(json.dumps([row, secret])))
    assert response["statusCode"] == 422
    assert secret not in response["body"]
    rows = {d["row"] for d in body_of(response)["error"]["details"]}
    assert rows == {0, 1}


def test_details_are_capped(wine_app):
    rows = [{"pH": 99}] * 40
    error = body_of(wine_app(url_event(json.dumps(rows))))["error"]
    assert len(error["details"]) == 50
    assert "showing the first 50" in error["message"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "no rows"),
        ({"instances": {}}, "'instances' must be a list"),
        ({"instances": [], "extra": 1}, "unexpected top-level key"),
        ("a string", "JSON string"),
        (42, "JSON number"),
        (None, "JSON null"),
    ],
)
def test_wrong_shapes_are_422(wine_app, payload, message):
    response = wine_app(url_event(json.dumps(payload)))
    assert response["statusCode"] == 422
    assert message in body_of(response)["error"]["message"]


def test_too_many_rows_is_413(wine_app, samples):
    app = App(wine_app.spec, wine_app.predictor, max_rows=3)
    assert app(url_event(json.dumps(samples)))["statusCode"] == 200
    response = app(url_event(json.dumps(samples * 2)))
    assert response["statusCode"] == 413
    assert "maximum of 3" in body_of(response)["error"]["message"]


def test_max_rows_from_environment(wine_app, samples, monkeypatch):
    monkeypatch.setenv("LAMBDA_ML_SERVE_MAX_ROWS", "1")
    app = App.load("wine_quality")
    assert app(url_event(json.dumps(samples)))["statusCode"] == 413


def test_method_and_route_errors(wine_app):
    put = wine_app(url_event("{}", method="PUT"))
    assert put["statusCode"] == 405
    assert put["headers"]["allow"] == "GET, HEAD, POST"
    assert body_of(wine_app(url_event(method="GET", path="/predict")))["error"]["type"] == ("method_not_allowed")
    missing = wine_app(url_event("{}", path="/nope"))
    assert missing["statusCode"] == 404
    assert body_of(missing)["error"]["type"] == "not_found"


class _Exploding:
    feature_names = None

    def predict(self, batch):
        raise RuntimeError("boom at /secret/path")


def test_internal_error_is_500_without_trace_but_logged(wine_app, samples_body):
    log = io.StringIO()
    app = App(wine_app.spec, _Exploding(), log_stream=log)
    event = url_event(samples_body)
    response = app(event)
    assert response["statusCode"] == 500
    body = body_of(response)
    request_id = event["requestContext"]["requestId"]
    assert body["error"] == {
        "type": "internal_error",
        "message": f"internal error; quote request id {request_id}",
        "details": [],
    }
    record = json.loads(log.getvalue())
    assert record["request_id"] == request_id and record["status"] == 500
    assert "boom at /secret/path" in record["error"] and "Traceback" in record["error"]


def test_direct_invocation(wine_app, samples):
    assert wine_app({"instances": samples}) == {
        "model": "wine_quality",
        "version": wine_app.spec.version,
        "predictions": body_of(wine_app(url_event(json.dumps(samples))))["predictions"],
    }
    error = wine_app({"instances": [{"pH": 3}]})
    assert error["error"]["type"] == "validation_error"
    assert "statusCode" not in error


def test_one_log_line_per_request_is_emf(wine_app, samples_body):
    log = io.StringIO()
    app = App(wine_app.spec, wine_app.predictor, log_stream=log)
    event = url_event(samples_body)
    app(event)
    app(url_event("nope"))
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["request_id"] == event["requestContext"]["requestId"]
    assert (first["status"], first["rows"], first["model"]) == (200, 2, "wine_quality")
    assert first["latency_ms"] >= 0
    metrics = first["_aws"]["CloudWatchMetrics"][0]
    assert {m["Name"] for m in metrics["Metrics"]} == {"latency_ms", "rows"}
    assert metrics["Dimensions"] == [["model"], ["model", "version"]]  # no function outside Lambda
    assert (second["status"], second["rows"]) == (400, 0)


def test_on_lambda_the_records_name_the_function_and_have_its_metrics(wine_app, samples_body, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "stack-Model-1AB2")
    log = io.StringIO()
    app = App(wine_app.spec, wine_app.predictor, log_stream=log)
    app(url_event(samples_body))
    app(url_event("nope"))
    for line in log.getvalue().splitlines():
        record = json.loads(line)
        assert record["function"] == "stack-Model-1AB2"
        # Every dimension of the directive is a field of the record, as EMF requires.
        dimensions = record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        assert dimensions == [["model"], ["model", "version"], ["function"]]
        assert all(name in record for names in dimensions for name in names)


def test_log_line_counts_the_rows_sent_when_they_are_refused(wine_app, samples):
    log = io.StringIO()
    app = App(wine_app.spec, wine_app.predictor, log_stream=log, max_rows=3)
    bad = [{**samples[0], "pH": 99}, samples[1], samples[0]]
    assert app(url_event(json.dumps(bad)))["statusCode"] == 422
    assert app(url_event(json.dumps(bad + bad)))["statusCode"] == 413
    assert app(url_event("[]"))["statusCode"] == 422
    records = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [(r["status"], r["rows"]) for r in records] == [(422, 3), (413, 6), (422, 0)]
