{%- set classification = cookiecutter.task == "classification" -%}
"""The model loads through lambda-ml-serve, as in the Lambda function, and answers the example."""

import csv
import json
{%- if not classification %}
import math
{%- endif %}
from importlib.resources import files

import pytest
from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App

from {{ cookiecutter.package_name }}.plugin import ARTIFACT, CARD, EXAMPLE, EXAMPLE_FILE
from {{ cookiecutter.package_name }}.schema import FEATURES

MODEL = "{{ cookiecutter.model_name }}"


@pytest.fixture(scope="module")
def app() -> App:
    return App.load(MODEL)


@pytest.fixture(scope="module")
def card(app) -> dict:
    """The model card the plugin registers; empty when it registers none (``card=None``)."""
    return app.spec.load_card()


def post(app: App, body: bytes) -> dict:
    """Answer a Function URL POST, as the deployed function would."""
    return app(to_event("POST", "/", [("content-type", "application/json")], body))


def check_predictions(predictions: list, rows: int, card: dict) -> None:
    assert len(predictions) == rows
{%- if classification %}
    for probabilities in predictions:
        if "classes" in card:
            assert len(probabilities) == len(card["classes"])
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
{%- else %}
    assert all(isinstance(p, float) and math.isfinite(p) for p in predictions)
{%- endif %}


def test_predicts_for_the_example(app, card):
    answer = app({"instances": list(EXAMPLE)})
    assert answer["model"] == MODEL
    check_predictions(answer["predictions"], len(EXAMPLE), card)


def test_function_url_request_with_the_example_file(app, card):
    body = files("{{ cookiecutter.package_name }}").joinpath(EXAMPLE_FILE).read_bytes()
    response = post(app, body)
    assert response["statusCode"] == 200, response["body"]
    check_predictions(json.loads(response["body"])["predictions"], len(EXAMPLE), card)


def test_invalid_row_is_answered_with_a_422_naming_it(app):
    bad = {**EXAMPLE[0], FEATURES[0]: "not a number"}
    response = post(app, json.dumps([EXAMPLE[0], bad]).encode())
    assert response["statusCode"] == 422
    error = json.loads(response["body"])["error"]
    assert error["type"] == "validation_error"
    assert [(d["row"], d["field"]) for d in error["details"]] == [(1, FEATURES[0])]


def test_metadata_describes_the_model(app, card):
    meta = app.metadata
    assert meta["features"] == list(FEATURES) == card.get("features", list(FEATURES))
    assert meta["metrics"] == card.get("metrics", {})
    assert meta["example"] == {"instances": list(EXAMPLE)}


def test_training_on_synthetic_rows_learns(tmp_path):
    pytest.importorskip("sklearn")
    from {{ cookiecutter.package_name }}.train import train

    card = train(output_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ARTIFACT, CARD])
{%- if classification %}
    # Three classes: guessing scores about 0.33.
    assert card["metrics"]["accuracy"] > 0.7
{%- else %}
    assert card["metrics"]["r2"] > 0.8
{%- endif %}
    fresh = App.load(MODEL, artifact=tmp_path / ARTIFACT)
    check_predictions(fresh({"instances": list(EXAMPLE)})["predictions"], len(EXAMPLE), card)


def test_training_reads_a_csv_file(tmp_path):
    pytest.importorskip("sklearn")
    from {{ cookiecutter.package_name }}.train import TARGET, synthetic_data, train

    X, y = synthetic_data(rows=200, seed=7)
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, TARGET])
        writer.writerows([*row, target] for row, target in zip(X.tolist(), y.tolist(), strict=True))
    card = train(data=path, output_dir=tmp_path / "model")
    assert card["data"] == {"source": "rows.csv", "rows": 200, "train_rows": 150, "test_rows": 50}
    assert (tmp_path / "model" / ARTIFACT).is_file()
