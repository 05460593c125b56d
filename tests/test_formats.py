"""Request formats: each one maps to the same validated rows, the same predictions and the same 422 details.

Bodies follow the public specifications: MLflow's scoring server (dataframe_split, dataframe_records,
inputs, instances), pandas' JSON orients, and the Open Inference Protocol v2 (KServe/MLServer/Triton).
"""

from __future__ import annotations

import io
import json

import pandas
import pytest
from conftest import url_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.formats import FORMATS

MARKER = "SECRET-VALUE-42"


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


def post(app: App, body, path: str = "/") -> tuple[int, object]:
    response = app(url_event(json.dumps(body), path=path))
    return response["statusCode"], json.loads(response["body"])


def bodies(samples: list[dict]) -> dict[str, object]:
    """The samples in every format, written as each specification's own examples are."""
    columns = list(samples[0])
    values = [[row[c] for c in columns] for row in samples]
    frame = pandas.DataFrame(samples)
    return {
        "rows": samples,
        "instances": {"instances": samples},
        "instances as lists": {"instances": values},
        # MLflow: {"dataframe_split": {"columns": [...], "data": [[...]]}}, optionally with pandas' index.
        "mlflow dataframe_split": {"dataframe_split": {"columns": columns, "data": values}},
        "mlflow dataframe_split from pandas": {"dataframe_split": json.loads(frame.to_json(orient="split"))},
        "mlflow dataframe_records": {"dataframe_records": samples},
        "mlflow inputs as columns": {"inputs": {c: [row[c] for row in samples] for c in columns}},
        "mlflow inputs as a tensor": {"inputs": values},
        "pandas to_json()": json.loads(frame.to_json()),
        "dict of lists": frame.to_dict(orient="list"),
    }


def v2_bodies(samples: list[dict]) -> dict[str, object]:
    columns = list(samples[0])
    values = [[row[c] for c in columns] for row in samples]
    n = len(samples)
    return {
        "v2 one tensor per feature": {
            "id": "42",
            "inputs": [
                {"name": c, "shape": [n], "datatype": "FP32", "data": [row[c] for row in samples]} for c in columns
            ],
        },
        "v2 [n, features] tensor, flat": {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [n, len(columns)],
                    "datatype": "FP32",
                    "data": [v for row in values for v in row],
                }
            ],
        },
        "v2 [n, features] tensor, nested": {
            "inputs": [{"name": "input-0", "shape": [n, len(columns)], "datatype": "FP64", "data": values}],
            "parameters": {"content_type": "np"},
        },
    }


@pytest.fixture(scope="module")
def expected(app, samples) -> list[float]:
    return app(samples)["predictions"]


def test_every_format_gives_the_same_predictions(app, samples, expected):
    for name, body in bodies(samples).items():
        status, answer = post(app, body)
        assert (name, status) == (name, 200)
        assert (name, answer["predictions"]) == (name, expected)
    for name, body in v2_bodies(samples).items():
        status, answer = post(app, body, "/v2/models/wine_quality/infer")
        assert (name, status) == (name, 200)
        output = answer["outputs"][0]
        assert (name, output["data"]) == (name, expected)
        assert output["shape"] == [len(samples)] and output["datatype"] == "FP64"
        assert answer["model_name"] == "wine_quality" and answer["model_version"] == app.spec.version


def test_v2_request_id_comes_back_and_versions_path_works(app, samples):
    body = v2_bodies(samples)["v2 one tensor per feature"]
    assert post(app, body, "/v2/models/wine_quality/infer")[1]["id"] == "42"
    # The contract (docs/reference/http.md): `id` is echoed when given as a string, absent otherwise.
    for without in ({k: v for k, v in body.items() if k != "id"}, {**body, "id": 42}):
        status, answer = post(app, without, "/v2/models/wine_quality/infer")
        assert status == 200 and "id" not in answer
    status, _ = post(app, body, f"/v2/models/wine_quality/versions/{app.spec.version}/infer")
    assert status == 200


def test_every_format_gives_the_same_422_details(app, samples):
    bad = [dict(samples[0]), dict(samples[1], pH=15.0)]
    want = None
    everything = {**bodies(bad), **{k: v for k, v in v2_bodies(bad).items()}}
    for name, body in everything.items():
        path = "/v2/models/wine_quality/infer" if name.startswith("v2") else "/"
        status, answer = post(app, body, path)
        assert (name, status) == (name, 422)
        details = answer["details"] if name.startswith("v2") else answer["error"]["details"]
        got = [(d["row"], d["field"]) for d in details]
        assert (name, got) == (name, [(1, "pH")])
        want = want or details
        assert details == want


def test_v2_errors_are_v2_shaped(app, samples):
    short = {"inputs": [{"name": "x", "shape": [2, 13], "datatype": "FP32", "data": [1]}]}
    status, answer = post(app, short, "/v2/models/wine_quality/infer")
    assert status == 422
    assert isinstance(answer["error"], str) and "shape [2, 13] holds 26 values but data has 1" in answer["error"]
    status, answer = post(app, {"inputs": []}, "/v2/models/other/infer")
    assert status == 404 and "no such model" in answer["error"] and "'other'" not in answer["error"]
    response = app(url_event(method="GET", path="/v2/models/wine_quality/infer"))
    assert response["statusCode"] == 405 and response["headers"]["allow"] == "POST"
    status, answer = post(app, {"instances": samples}, "/v2/models/wine_quality/infer")
    assert status == 422 and answer["error"].startswith("validation_error: a v2 inference request is")


def test_v2_metadata_and_health(app):
    def get(path):
        response = app(url_event(method="GET", path=path))
        return response["statusCode"], json.loads(response["body"])

    status, meta = get("/v2/models/wine_quality")
    assert status == 200
    assert meta["name"] == "wine_quality" and meta["versions"] == [app.spec.version]
    assert [t["name"] for t in meta["inputs"]] == list(app.spec.feature_names)
    assert {t["name"]: t["datatype"] for t in meta["inputs"]}["color_red"] == "BOOL"
    assert meta["outputs"][0]["name"] == "predictions"
    assert get("/v2/health/live") == (200, {"live": True})
    assert get("/v2/health/ready") == (200, {"ready": True})
    assert get("/v2/models/wine_quality/ready") == (200, {"ready": True})
    assert get("/v2/models/nope")[0] == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pH": [3.2], "alcohol": 9.5, "note": MARKER}, "ambiguous body"),
        ({"instances": [], "options": {"x": MARKER}}, "1 unexpected top-level key(s) beside 'instances'"),
        ({"instances": [[1, 2, MARKER]]}, "1 row(s) are lists of the wrong length"),
        ({"dataframe_split": {"columns": ["pH"], "data": [[1, MARKER]]}}, "are not lists of 1 values"),
        ({"dataframe_split": {"columns": ["pH", "pH"], "data": []}}, "names a column twice"),
        ({"pH": [1, 2], "alcohol": [MARKER]}, "have different lengths"),
        ({"pH": {"0": 1}, "alcohol": {"1": MARKER}}, "other index labels than the first column"),
        ({"inputs": MARKER}, "'inputs' must be a list"),
    ],
)
def test_malformed_formats_are_refused_in_one_line(app, body, message):
    status, answer = post(app, body)
    assert status == 422
    error = answer["error"]
    assert message in error["message"]
    assert "\n" not in error["message"] and MARKER not in json.dumps(answer)


def test_ambiguous_body_names_every_format(app):
    _, answer = post(app, {"pH": [3.2], "alcohol": 9.5})
    assert all(f in answer["error"]["message"] for f in FORMATS)


def test_response_option_answers_the_bare_array(samples, expected):
    app = App.load("wine_quality", response="predictions", log_stream=io.StringIO())
    status, answer = post(app, samples)
    assert (status, answer) == (200, expected)
    assert app({"instances": samples}) == expected
    # v2 clients still get v2 answers, and errors keep their shape.
    status, answer = post(app, v2_bodies(samples)["v2 one tensor per feature"], "/v2/models/wine_quality/infer")
    assert answer["outputs"][0]["data"] == expected
    assert post(app, [{"pH": 3}])[1]["error"]["type"] == "validation_error"


def test_response_option_comes_from_the_environment(monkeypatch, samples, expected):
    monkeypatch.setenv("LAMBDA_ML_SERVE_RESPONSE", "predictions")
    assert App.load("wine_quality", log_stream=io.StringIO())(samples) == expected
    monkeypatch.setenv("LAMBDA_ML_SERVE_RESPONSE", "bare")
    with pytest.raises(Exception, match="LAMBDA_ML_SERVE_RESPONSE: response must be one of object, predictions"):
        App.load("wine_quality", log_stream=io.StringIO())


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.just(MARKER),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["pH", "a", "0", "data"]), inner),
    max_leaves=20,
)
wrappers = st.sampled_from(["instances", "dataframe_split", "dataframe_records", "inputs", "columns", "data", "pH"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(wrappers, json_values, max_size=3) | json_values)
def test_any_json_body_gets_a_client_answer_without_echo(app, body):
    for path in ("/", "/v2/models/wine_quality/infer"):
        response = app(url_event(json.dumps(body), path=path))
        assert response["statusCode"] in (200, 413, 422)
        assert MARKER not in response["body"] or response["statusCode"] == 200


def test_deeply_nested_v2_data_is_a_client_error(app):
    data: list = [1.0]
    for _ in range(800):
        data = [data]
    body = {"inputs": [{"name": "pH", "shape": [1], "datatype": "FP32", "data": data}]}
    status, answer = post(app, body, "/v2/models/wine_quality/infer")
    assert status == 422 and answer["details"][0]["message"] == "required field is missing"
