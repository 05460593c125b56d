"""The XGBoost backend serves models written elsewhere by older XGBoost, bit for bit."""

from __future__ import annotations

import json

import pytest
from conftest import LEGACY_MODELS, shared_file, url_event

from lambda_ml_serve.backends.xgboost import XGBoostBackend
from lambda_ml_serve.runtime.app import App


def seed_style_predict(model_path, samples: list[dict]) -> list[float]:
    """How the original service predicted: a DataFrame into XGBRegressor (pandas + scikit-learn)."""
    pandas = pytest.importorskip("pandas")
    xgboost = pytest.importorskip("xgboost")
    pytest.importorskip("sklearn")
    regressor = xgboost.XGBRegressor()
    regressor.load_model(str(model_path))
    return regressor.predict(pandas.DataFrame(samples)).tolist()


@pytest.mark.parametrize("version", sorted(LEGACY_MODELS))
def test_legacy_models_reproduce_their_predictions(version, samples_body, samples):
    path = shared_file(LEGACY_MODELS[version])
    app = App.load("wine_quality", artifact=path)
    got = json.loads(app(url_event(samples_body))["body"])["predictions"]
    assert got == pytest.approx(seed_style_predict(path, samples), abs=1e-5)
    if version == "1.6.2":
        assert got == pytest.approx([6.573914, 4.869721], abs=1e-5)


def test_prepare_writes_ubj_that_predicts_the_same(tmp_path, samples_body):
    path = shared_file(LEGACY_MODELS["1.6.2"])
    prepared = XGBoostBackend().prepare(path, tmp_path)
    assert prepared.suffix == ".ubj" and prepared.read_bytes()[:1] == b"{"
    from_json = App.load("wine_quality", artifact=path)
    from_ubj = App.load("wine_quality", artifact=prepared)
    assert from_ubj.predictor.feature_names == from_json.predictor.feature_names
    assert from_ubj(url_event(samples_body))["body"] == from_json(url_event(samples_body))["body"]


def test_corrupt_artifact_fails_with_plugin_named(tmp_path):
    from lambda_ml_serve.errors import ModelLoadError

    bad = tmp_path / "model.json"
    bad.write_text('{"learner": ')
    with pytest.raises(ModelLoadError, match=r"plugin 'wine_quality' \(distribution "):
        App.load("wine_quality", artifact=bad)
