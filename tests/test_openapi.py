"""The OpenAPI 3.1 document: valid, true to the routes, its examples answered, and a generated client works."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import url_event
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from served import serving

from lambda_ml_serve.cli import main
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.errors import STATUS


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO(), docs=True)


@pytest.fixture(scope="module")
def document(app) -> dict:
    response = app(url_event(method="GET", path="/openapi.json"))
    assert response["statusCode"] == 200
    return json.loads(response["body"])


def schema_validator(document: dict, name: str) -> Draft202012Validator:
    # The document is the root, so its "#/components/schemas/..." references resolve as they are.
    return Draft202012Validator({**document, "$ref": f"#/components/schemas/{name}"})


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_cli_prints_the_same_document(document):
    result = CliRunner().invoke(main, ["openapi", "wine_quality"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    # GET /openapi.json of an app with the docs page also lists /docs.
    assert printed["paths"].keys() == document["paths"].keys() - {"/docs"}
    assert printed["components"] == document["components"]


def test_every_error_response_is_documented(document):
    predict = document["paths"]["/predict"]["post"]["responses"]
    assert set(predict) == {"200", *(str(s) for s in STATUS.values())}
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert set(infer) == {"200", *(str(s) for s in STATUS.values())}
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert {"404", "405", "500"} <= set(op["responses"]), (path, method)


def test_every_example_is_valid_and_answered_as_documented(app, document):
    predict = document["paths"]["/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    answer = predict["responses"]["200"]["content"]["application/json"]["example"]
    assert len(examples) == 9
    request_schema = schema_validator(document, "PredictRequest")
    response_schema = schema_validator(document, "PredictResponse")
    response_schema.validate(answer)
    for name, example in examples.items():
        request_schema.validate(example["value"])
        response = app(url_event(json.dumps(example["value"]), path="/predict"))
        assert (name, response["statusCode"]) == (name, 200)
        got = json.loads(response["body"])
        expected = answer["predictions"][:1] if name == "one_row" else answer["predictions"]
        assert got["predictions"] == expected
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    v2_example = infer["requestBody"]["content"]["application/json"]["example"]
    schema_validator(document, "V2InferenceRequest").validate(v2_example)
    response = app(url_event(json.dumps(v2_example), path="/v2/models/wine_quality/infer"))
    v2_answer = json.loads(response["body"])
    schema_validator(document, "V2InferenceResponse").validate(v2_answer)
    assert v2_answer["outputs"][0]["data"] == answer["predictions"]


def test_error_answers_match_the_error_schema(app, document):
    error = schema_validator(document, "Error")
    for body, status in (("{", 400), ("[]", 422), (json.dumps([{"pH": 15}]), 422)):
        response = app(url_event(body))
        assert response["statusCode"] == status
        error.validate(json.loads(response["body"]))
    v2_error = schema_validator(document, "V2Error")
    v2_error.validate(json.loads(app(url_event("{}", path="/v2/models/wine_quality/infer"))["body"]))


def test_generated_client_round_trips_the_example(document, tmp_path, monkeypatch):
    spec_file = tmp_path / "openapi.json"
    spec_file.write_text(json.dumps(document))
    models_file = tmp_path / "wine_client.py"
    codegen = Path(sys.executable).with_name("datamodel-codegen")
    subprocess.run(
        [
            str(codegen),
            "--input",
            str(spec_file),
            "--input-file-type",
            "openapi",
            "--output",
            str(models_file),
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--formatters",
            "ruff-format",
        ],
        check=True,
        capture_output=True,
    )
    loaded = importlib.util.spec_from_file_location("wine_client", models_file)
    client = importlib.util.module_from_spec(loaded)
    monkeypatch.setitem(sys.modules, "wine_client", client)  # pydantic resolves its annotations there
    loaded.loader.exec_module(client)

    predict = document["paths"]["/predict"]["post"]
    example = predict["requestBody"]["content"]["application/json"]["examples"]["instances"]["value"]
    documented = predict["responses"]["200"]["content"]["application/json"]["example"]
    # The client's own models build the request: snake_case attributes, the wire names as aliases.
    rows = [client.Row.model_validate(row) for row in example["instances"]]
    assert rows[0].fixed_acidity == example["instances"][0]["fixed acidity"]
    request = client.Instances(instances=rows)
    body = request.model_dump_json(by_alias=True).encode()
    with pytest.raises(ValueError):
        client.Row.model_validate({**example["instances"][0], "pH": 15})
    with serving() as url:
        http = urllib.request.Request(f"{url}/predict", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(http, timeout=30) as response:
            answer = client.PredictResponse.model_validate_json(response.read())
    assert answer.model_dump() == documented
