"""The XGBoost backend serves through libxgboost's C API exactly what xgboost's own predictor answers.

Covered: the project's model and the two written elsewhere by XGBoost 1.5.2 and 1.6.2, missing values,
the UBJ conversion and its parity check, and a serving process without numpy, scipy or xgboost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np
import pytest
from conftest import LEGACY_MODELS, REPO, shared_file, url_event

from lambda_ml_serve.backends.xgboost import XGBoostBackend
from lambda_ml_serve.backends.xgboost.prepare import InplacePredictor, ParityError, check_parity
from lambda_ml_serve.backends.xgboost.runtime import XGBoostPredictor
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.spec import Batch

WINE_MODEL = REPO / "models/wine_quality/lambda_ml_serve_wine_quality/model.json"
#: What the original service answers for samples.json with the 1.6.2 model.
ORIGINAL_ANSWER = [6.573914051055908, 4.869720935821533]


def model_files() -> list[Path]:
    return [WINE_MODEL, *(LEGACY_MODELS[v] for v in sorted(LEGACY_MODELS))]


def wine_rows(n: int, missing: float) -> Batch:
    """``n`` rows within the wine features' ranges, a ``missing`` share of the values NaN."""
    rng = np.random.default_rng(n)
    spread = np.array([16, 1.6, 1.7, 66, 0.6, 290, 440, 0.05, 1.4, 2, 7, 1, 1], dtype=np.float32)
    low = np.array([3.8, 0.08, 0, 0.6, 0.009, 1, 6, 0.987, 2.7, 0.2, 8, 0, 0], dtype=np.float32)
    matrix = (low + rng.random((n, 13), dtype=np.float32) * spread).astype(np.float32)
    matrix[:, 11:] = np.round(matrix[:, 11:])
    matrix[rng.random(matrix.shape) < missing] = np.nan
    return Batch(array("f", matrix.tobytes()), n, 13)


@pytest.mark.parametrize("path", model_files(), ids=["wine_quality", *sorted(LEGACY_MODELS)])
@pytest.mark.parametrize(("n", "missing"), [(1, 0.0), (7, 0.5), (5_000, 0.1), (64, 1.0)])
def test_c_api_predicts_exactly_as_inplace_predict(path, n, missing):
    path = shared_file(path)
    batch = wine_rows(n, missing)
    got = XGBoostPredictor(path).predict(batch)
    assert got == InplacePredictor(path).predict(batch)  # bit for bit, NaN rows included
    assert len(got) == n and all(isinstance(v, float) for v in got)


@pytest.mark.parametrize("version", sorted(LEGACY_MODELS))
def test_legacy_models_reproduce_the_original_services_answers(version, samples_body, samples):
    path = shared_file(LEGACY_MODELS[version])
    got = json.loads(App.load("wine_quality", artifact=path)(url_event(samples_body))["body"])["predictions"]
    spec = get_registry().model("wine_quality").spec
    rows = np.array([[row[f] for f in spec.feature_names] for row in samples], dtype=np.float32)
    assert got == InplacePredictor(path).predict(Batch(array("f", rows.tobytes()), *rows.shape))
    if version == "1.6.2":
        assert got == ORIGINAL_ANSWER


def test_feature_names_come_from_the_model(samples):
    predictor = XGBoostPredictor(shared_file(LEGACY_MODELS["1.6.2"]))
    assert predictor.feature_names == tuple(samples[0]) and predictor.num_feature == 13


def test_wrong_batch_width_is_refused():
    predictor = XGBoostPredictor(WINE_MODEL)
    with pytest.raises(ValueError, match=r"batch of 1 rows x 12 features .* takes 13 features per row"):
        predictor.predict(Batch(array("f", [1.0] * 12), 1, 12))


@pytest.mark.parametrize("version", sorted(LEGACY_MODELS))
def test_prepare_writes_ubj_that_predicts_the_same(version, tmp_path, samples_body):
    path = shared_file(LEGACY_MODELS[version])
    spec = get_registry().model("wine_quality").spec
    prepared = XGBoostBackend().prepare(path, tmp_path, spec=spec)
    assert prepared.suffix == ".ubj" and prepared.read_bytes()[:1] == b"{"
    from_json = App.load("wine_quality", artifact=path)
    from_ubj = App.load("wine_quality", artifact=prepared)
    assert from_ubj.predictor.feature_names == from_json.predictor.feature_names
    assert from_ubj(url_event(samples_body))["body"] == from_json(url_event(samples_body))["body"]


def test_parity_check_refuses_an_artifact_that_answers_differently(tmp_path):
    other = XGBoostBackend().prepare(shared_file(LEGACY_MODELS["1.5.2"]), tmp_path)
    reference = InplacePredictor(shared_file(LEGACY_MODELS["1.6.2"]))
    spec = get_registry().model("wine_quality").spec
    with pytest.raises(
        ParityError, match=r"model\.ubj .* predicts .* on example row 0 where xgboost's inplace_predict"
    ):
        check_parity(other, reference, spec)


def test_corrupt_artifact_fails_with_plugin_named(tmp_path):
    from lambda_ml_serve.errors import ModelLoadError

    bad = tmp_path / "model.json"
    bad.write_text('{"learner": ')
    is_not = r"model\.json is not an XGBoost model \(JSON or UBJ written by Booster\.save_model\); XGBoost says: "
    with pytest.raises(ModelLoadError, match=r"plugin 'wine_quality' \(distribution .*" + is_not) as loading:
        App.load("wine_quality", artifact=bad)
    with pytest.raises(BuildError, match=is_not) as preparing:
        XGBoostBackend().prepare(bad, tmp_path)
    for caught in (loading, preparing):  # XGBoost's own message, without its stack trace
        assert "\n" not in str(caught.value) and "[bt]" not in str(caught.value)


SERVE_LEAN = """
import json, sys
from lambda_ml_serve.runtime.handler import handler
response = handler(json.loads(sys.stdin.read()), None)
print(json.dumps({"body": response["body"],
                  "heavy": [m for m in ("numpy", "scipy", "xgboost", "pandas", "sklearn") if m in sys.modules]}))
"""


def test_serving_imports_neither_numpy_scipy_nor_xgboost(samples_body):
    """A fresh interpreter of this environment, where all three are installed, serving the 1.6.2 model."""
    env = {
        **os.environ,
        "LAMBDA_ML_SERVE_MODEL": "wine_quality",
        "LAMBDA_ML_SERVE_ARTIFACT": str(shared_file(LEGACY_MODELS["1.6.2"])),
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVE_LEAN],
        input=json.dumps(url_event(samples_body)),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["heavy"] == []
    assert json.loads(out["body"])["predictions"] == ORIGINAL_ANSWER
