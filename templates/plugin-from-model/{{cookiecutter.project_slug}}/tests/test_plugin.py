{%- set m = cookiecutter.model -%}
"""The plugin serves its model file as lambda-ml-serve does in the Lambda function, and answers like the library did.

``expected_predictions.json`` holds what {{ m.library }} answered for the example rows when the
project was generated; the served model must answer the same.
"""

import hashlib
import json
import math
from importlib.resources import files
from pathlib import Path

import pytest
from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.app import App

from {{ cookiecutter.package_name }}.plugin import ARTIFACT, EXAMPLE, EXAMPLE_FILE
from {{ cookiecutter.package_name }}.schema import FEATURES, {{ cookiecutter.__schema_class }}

MODEL = "{{ cookiecutter.model_name }}"
PACKAGE = files("{{ cookiecutter.package_name }}")
EXPECTED = json.loads((Path(__file__).parent / "expected_predictions.json").read_text(encoding="utf-8"))
{%- if m.classes_literal %}
#: The class probabilities of the example rows, in the order of the answer's ``classes``.
PROBABILITIES = json.loads((Path(__file__).parent / "expected_probabilities.json").read_text(encoding="utf-8"))
{%- endif %}


def close(got, want, tolerance=1e-5):
    """Predictions equal within ``tolerance`` (numbers), or exactly (labels), nested lists included."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(close, got, want))
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance)
    return got == want


@pytest.fixture(scope="module")
def app() -> App:
    return App.load(MODEL)


def post(app: App, body: bytes) -> dict:
    """Answer a Function URL POST, as the deployed function would."""
    return app(to_event("POST", "/", [("content-type", "application/json")], body))


def test_the_plugin_is_installed_and_loads():
    registry = get_registry()
    assert MODEL in registry.models, [f.message for f in registry.failures]
    assert registry.models[MODEL].spec.feature_names == FEATURES


def test_the_example_is_answered_as_the_library_answered_it(app):
    answer = app({"instances": list(EXAMPLE)})
    assert answer["model"] == MODEL
    assert close(answer["predictions"], EXPECTED), (answer["predictions"], EXPECTED)
{%- if m.classes_literal %}
    assert answer["classes"] == {{ m.classes_literal }}
    assert close(answer["probabilities"], PROBABILITIES), (answer["probabilities"], PROBABILITIES)
{%- endif %}


def test_a_function_url_request_names_the_model_file(app):
    response = post(app, PACKAGE.joinpath(EXAMPLE_FILE).read_bytes())
    assert response["statusCode"] == 200, response["body"]
    assert close(json.loads(response["body"])["predictions"], EXPECTED)
    digest = hashlib.sha256(PACKAGE.joinpath(ARTIFACT).read_bytes()).hexdigest()
    assert response["headers"]["x-model-sha256"] == digest


def test_original_names_and_field_names_are_both_accepted(app):
    by_field = [{{ cookiecutter.__schema_class }}.model_validate(row).model_dump() for row in EXAMPLE]
    assert close(app({"instances": by_field})["predictions"], EXPECTED)


def test_an_invalid_value_is_a_422_naming_the_row_and_field(app):
    bad = {**EXAMPLE[0], FEATURES[0]: {"not": "a value"}}
    response = post(app, json.dumps([EXAMPLE[0], bad]).encode())
    assert response["statusCode"] == 422
    error = json.loads(response["body"])["error"]
    assert [(d["row"], d["field"]) for d in error["details"]] == [(1, FEATURES[0])]


def test_unknown_and_missing_fields_are_refused(app):
    row = {k: v for k, v in EXAMPLE[0].items() if k != FEATURES[-1]}
    row["not_a_feature"] = 1
    response = post(app, json.dumps([row]).encode())
    assert response["statusCode"] == 422
    fields = {d["field"] for d in json.loads(response["body"])["error"]["details"]}
    assert fields == {FEATURES[-1], "not_a_feature"}


def test_metadata_matches_the_model_card(app):
    meta = app.metadata
    card = json.loads(PACKAGE.joinpath("model_card.json").read_text(encoding="utf-8"))
    assert meta["features"] == list(FEATURES) == card["features"]
    assert meta["metrics"] == card["metrics"]
    assert meta["model_sha256"] == card["model_sha256"]
