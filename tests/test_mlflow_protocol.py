"""MLflow's scoring protocol: POST /invocations (JSON in every format, CSV), GET /ping and /health.

MLflow's own client (``ScoringServerClient``) and payload helper (``dump_input_data``, what
``mlflow models predict`` and the pyfunc serving tools send) talk to ``serve``; every event source
answers the same in-process.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy
import pandas
import pytest
from conftest import url_event
from served import serving

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App

EVENTS = Path(__file__).parent / "events"
MARKER = "SECRET-VALUE-42"


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


@pytest.fixture(scope="module")
def expected(app: App, samples: list[dict]) -> list[float]:
    return app(samples)["predictions"]


@pytest.fixture(scope="module")
def served() -> str:
    with serving() as url:
        yield url


@pytest.fixture(scope="module")
def mlflow_client(served: str):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    parts = urlsplit(served)
    return ScoringServerClient(parts.hostname, parts.port)


def test_mlflow_client_pings_and_invokes_serve(mlflow_client, samples, expected) -> None:
    mlflow_client.ping()
    mlflow_client.wait_server_ready(timeout=10)
    response = mlflow_client.invoke(pandas.DataFrame(samples))
    assert response.get_predictions(predictions_format="ndarray").tolist() == expected
    assert response["predictions"] == expected


def test_mlflow_client_sends_params_they_are_accepted_and_ignored(mlflow_client, samples, expected) -> None:
    response = mlflow_client.invoke(pandas.DataFrame(samples), params={"temperature": 0.5, "top_k": 3})
    assert response["predictions"] == expected


def test_every_payload_mlflow_helpers_write_is_answered_alike(app, samples, expected) -> None:
    from mlflow.models import convert_input_example_to_serving_input
    from mlflow.utils.proto_json_utils import dump_input_data

    frame = pandas.DataFrame(samples)
    columns = {c: numpy.asarray(frame[c]) for c in frame.columns}
    payloads = {
        "dataframe": dump_input_data(frame),
        "dataframe with params": dump_input_data(frame, params={"alpha": 1}),
        "dict of arrays": dump_input_data(columns),
        "matrix": dump_input_data(frame.to_numpy()),
        "records": dump_input_data(samples),
        "serving input example": convert_input_example_to_serving_input(frame),
    }
    for name, payload in payloads.items():
        response = app(url_event(payload, path="/invocations"))
        assert response["statusCode"] == 200, (name, response["body"])
        assert json.loads(response["body"]) == {"predictions": expected}, name


@pytest.mark.parametrize("name", ["function-url", "apigw-http-v2", "apigw-rest-v1", "alb", "alb-multivalue"])
def test_invocations_and_ping_on_every_event_source(app, name, samples, expected) -> None:
    loaded = json.loads((EVENTS / f"{name}.json").read_text())

    def on(method: str, path: str, body: str | None, content_type: str) -> dict:
        event = copy.deepcopy(loaded)
        event["body"] = body
        if "requestContext" in event and "http" in event["requestContext"]:
            event["rawPath"] = path
            event["requestContext"]["http"].update(method=method, path=path)
        else:
            event.update(path=path, httpMethod=method)
        if isinstance(event.get("multiValueHeaders"), dict):
            event["multiValueHeaders"]["content-type"] = [content_type]
        else:
            event.setdefault("headers", {})["content-type"] = content_type
        return app(event)

    def body_of(response: dict) -> object:
        return json.loads(response["body"])

    csv = pandas.DataFrame(samples).to_csv(index=False)
    answered = on("POST", "/invocations", json.dumps({"dataframe_records": samples}), "application/json")
    assert answered["statusCode"] == 200 and body_of(answered) == {"predictions": expected}
    answered = on("POST", "/invocations", csv, "text/csv")
    assert answered["statusCode"] == 200 and body_of(answered) == {"predictions": expected}
    for path in ("/ping", "/health"):
        assert on("GET", path, None, "application/json")["statusCode"] == 200


def test_csv_bodies_with_a_header_row_typed_by_the_schema(app, samples, expected) -> None:
    frame = pandas.DataFrame(samples)

    def post(csv: str, path: str = "/invocations", content_type: str = "text/csv") -> tuple[int, object]:
        response = app(to_event("POST", path, [("content-type", content_type)], csv.encode()))
        return response["statusCode"], json.loads(response["body"])

    assert post(frame.to_csv(index=False)) == (200, {"predictions": expected})
    # Columns in another order, a BOM, CRLF line ends, text/csv with a charset: the same rows.
    shuffled = frame[list(reversed(frame.columns))].to_csv(index=False, lineterminator="\r\n")
    assert post("\ufeff" + shuffled, content_type="text/csv; charset=utf-8") == (200, {"predictions": expected})
    # On the plain prediction routes too, answered in their own shape.
    status, body = post(frame.to_csv(index=False), path="/")
    assert status == 200 and body["predictions"] == expected


def test_csv_rows_get_the_same_422_details_as_json(app, samples) -> None:
    bad = [dict(samples[0]), dict(samples[1])]
    bad[1]["pH"] = MARKER
    del bad[0]["alcohol"]
    json_answer = app(url_event(json.dumps({"dataframe_records": bad}), path="/invocations"))
    csv = pandas.DataFrame(bad).to_csv(index=False)
    csv_answer = app(to_event("POST", "/invocations", [("content-type", "text/csv")], csv.encode()))
    assert csv_answer["statusCode"] == json_answer["statusCode"] == 422
    assert json.loads(csv_answer["body"]) == json.loads(json_answer["body"])
    assert MARKER not in csv_answer["body"]


@pytest.mark.parametrize(
    ("csv", "status", "says"),
    [
        ("", 400, "empty"),
        ("\n\n", 400, "empty"),
        ("a,a\n1,2\n", 422, "twice"),
        ("pH,alcohol\n", 422, "no rows"),
        ('pH,alcohol\n"3.1,9\n', 400, "not valid CSV"),
        ("pH,alcohol\n3.1\n", 422, "number of cells"),
    ],
)
def test_broken_csv_bodies_are_named_in_one_line(app, csv: str, status: int, says: str) -> None:
    response = app(to_event("POST", "/invocations", [("content-type", "text/csv")], csv.encode()))
    assert response["statusCode"] == status, response["body"]
    assert says in json.loads(response["body"])["error"]["message"]


def test_params_must_be_an_object_and_come_beside_a_format(app, samples) -> None:
    response = app(url_event(json.dumps({"instances": samples, "params": [1]}), path="/invocations"))
    assert response["statusCode"] == 422
    assert "params" in json.loads(response["body"])["error"]["message"]
