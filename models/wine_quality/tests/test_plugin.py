"""The plugin as the framework sees it: found through its entry point only."""

from __future__ import annotations

from importlib.metadata import entry_points

from lambda_ml_serve.plugins import get_registry


def test_registered_through_the_entry_point():
    (ep,) = [e for e in entry_points(group="lambda_ml_serve") if e.name == "wine_quality"]
    assert ep.value == "lambda_ml_serve_wine_quality.plugin"
    model = get_registry().model("wine_quality")
    assert model.plugin.distribution == "lambda-ml-serve-wine-quality"
    assert model.spec.backend == "xgboost"
    assert model.spec.artifact_path.is_file()


def test_model_card_matches_the_artifact():
    spec = get_registry().model("wine_quality").spec
    card = spec.load_card()
    assert card["features"] == list(spec.feature_names)
    assert card["metrics"]["rmse"] <= 0.69
