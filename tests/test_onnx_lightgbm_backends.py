"""The onnx and lightgbm backends on real models: load, predict, convert to ONNX with a parity check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from lambda_ml_serve.backends.lightgbm import LightGBMBackend
from lambda_ml_serve.backends.lightgbm.runtime import OPENMP_LIBRARY
from lambda_ml_serve.backends.onnx import OnnxBackend
from lambda_ml_serve.backends.onnx.runtime import ANSWER_KEY, FEATURE_NAMES_KEY
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.runtime.validation import RowValidator
from lambda_ml_serve.spec import ModelSpec

onnx = pytest.importorskip("onnx")
lightgbm = pytest.importorskip("lightgbm")


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    a: float = Field(ge=0, le=1)
    b: float = Field(ge=0, le=1)
    c: float = Field(ge=0, le=1)


EXAMPLE = [{"a": 0.1, "b": 0.5, "c": 0.9}, {"a": 0.8, "b": 0.2, "c": 0.4}, {"a": 0.45, "b": 0.95, "c": 0.05}]


def spec_for(backend: str, **extra) -> ModelSpec:
    return ModelSpec(
        name="abc",
        version="1",
        backend=backend,
        package="lambda_ml_serve",
        artifact="-",
        schema=Row,
        example=EXAMPLE,
        extra=extra,
    )


def batch():
    return RowValidator(spec_for("onnx"), 10).to_batch(EXAMPLE)


@pytest.fixture(scope="module")
def data():
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (300, 3)).astype("float32")
    return X, X[:, 0] * 2 + X[:, 1] - X[:, 2], (X[:, 0] > 0.5).astype(int), rng.integers(0, 3, 300)


@pytest.fixture(scope="module")
def models(data, tmp_path_factory) -> dict[str, Path]:
    import joblib
    import xgboost
    from sklearn.ensemble import GradientBoostingClassifier

    X, y, binary, three = data
    root = tmp_path_factory.mktemp("models")
    params = {"num_leaves": 8, "verbose": -1, "seed": 0, "num_threads": 1}
    out = {}
    for name, objective, label in (("lgb_reg", "regression", y), ("lgb_bin", "binary", binary)):
        booster = lightgbm.train({**params, "objective": objective}, lightgbm.Dataset(X, label=label), 20)
        booster.save_model(str(root / f"{name}.txt"))
        out[name] = root / f"{name}.txt"
    multi = {**params, "objective": "multiclass", "num_class": 3}
    lightgbm.train(multi, lightgbm.Dataset(X, label=three), 10).save_model(str(root / "lgb_multi.txt"))
    out["lgb_multi"] = root / "lgb_multi.txt"
    dmatrix = xgboost.DMatrix(X, label=binary, feature_names=["a", "b", "c"])
    xgboost.train({"objective": "binary:logistic", "max_depth": 3}, dmatrix, 20).save_model(str(root / "xgb.ubj"))
    out["xgb_bin"] = root / "xgb.ubj"
    joblib.dump(GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, three), root / "gbc.joblib")
    out["sk_multi"] = root / "gbc.joblib"
    return out


def test_lightgbm_predicts_as_lightgbm_does(models):
    import numpy as np

    for name in ("lgb_reg", "lgb_bin", "lgb_multi"):
        predictor = LightGBMBackend().load(models[name])
        assert predictor.feature_names is None  # LightGBM's made-up Column_0... are not names
        want = lightgbm.Booster(model_file=str(models[name])).predict(np.array([list(r.values()) for r in EXAMPLE]))
        assert np.allclose(predictor.predict(batch()), want, atol=1e-6), name


def test_lightgbm_prepare_ships_the_openmp_runtime(models, tmp_path):
    prepared = LightGBMBackend().prepare(models["lgb_reg"], tmp_path, arch="x86_64")
    assert prepared.read_bytes() == models["lgb_reg"].read_bytes()
    assert (tmp_path / OPENMP_LIBRARY).read_bytes()[:4] == b"\x7fELF"


def test_lightgbm_prepare_refuses_what_is_not_a_lightgbm_model(tmp_path):
    bad = tmp_path / "model.txt"
    bad.write_text("tree\nversion=v4\nnot a model\n")
    with pytest.raises(BuildError, match=r"cannot read .* as a LightGBM text model"):
        LightGBMBackend().prepare(bad, tmp_path / "out", arch="x86_64")


@pytest.mark.parametrize(
    ("name", "source", "extra"),
    [
        ("lgb_reg", "lightgbm", {}),
        ("lgb_bin", "lightgbm", {}),
        ("lgb_multi", "lightgbm", {}),
        ("xgb_bin", "xgboost", {}),
        ("sk_multi", "sklearn", {"predict_proba": True}),
        ("sk_multi", "sklearn", {}),
    ],
)
def test_conversions_to_onnx_answer_as_the_original_backend(models, tmp_path, name, source, extra):
    from lambda_ml_serve.plugins import get_registry

    spec = spec_for(source, **extra)
    prepared = OnnxBackend().prepare(models[name], tmp_path, spec=spec)
    meta = {p.key: p.value for p in onnx.load(str(prepared)).metadata_props}
    assert json.loads(meta[FEATURE_NAMES_KEY]) == ["a", "b", "c"] and ANSWER_KEY in meta
    converted = OnnxBackend().load(prepared, extra)
    original = get_registry().backend(source).load(models[name], extra)
    got, want = converted.predict(batch()), original.predict(batch())
    assert len(got) == len(want) == len(EXAMPLE)
    flat = [(g, w) for gs, ws in zip(got, want, strict=True) for g, w in zip(*(_flat(gs), _flat(ws)), strict=True)]
    assert all(abs(g - w) <= 1e-4 for g, w in flat)


def _flat(value):
    return value if isinstance(value, list) else [value]


def test_onnx_runs_one_intra_op_thread_by_default(models, tmp_path):
    prepared = OnnxBackend().prepare(models["lgb_reg"], tmp_path, spec=spec_for("lightgbm"))
    predictor = OnnxBackend().load(prepared)
    assert predictor._session.get_session_options().intra_op_num_threads == 1
    assert OnnxBackend().load(prepared, {"threads": 2})._session.get_session_options().intra_op_num_threads == 2


def test_a_failing_parity_check_writes_nothing(models, tmp_path, monkeypatch):
    from lambda_ml_serve.backends.onnx import prepare

    monkeypatch.setattr(prepare, "PARITY_TOLERANCE", -1.0)  # any difference at all now fails
    with pytest.raises(BuildError, match=r"the ONNX conversion answers up to .* on check row"):
        OnnxBackend().prepare(models["lgb_reg"], tmp_path, spec=spec_for("lightgbm"))
    assert list(tmp_path.iterdir()) == []


def test_a_zipmap_classifier_answers_lists_of_probabilities(tmp_path, data):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X, _, _, three = data
    model = LogisticRegression(max_iter=500).fit(X, three)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(to_onnx(model, X[:1]).SerializeToString())  # ZipMap on: a map per row
    got = OnnxBackend().load(path, {"predict_proba": True}).predict(batch())
    want = model.predict_proba([list(r.values()) for r in EXAMPLE]).tolist()
    assert all(abs(g - w) < 1e-5 for gs, ws in zip(got, want, strict=True) for g, w in zip(gs, ws, strict=True))
    assert OnnxBackend().load(path).predict(batch()) == model.predict([list(r.values()) for r in EXAMPLE]).tolist()


def test_the_batch_follows_the_precision_the_model_declares(tmp_path, data, models):
    """A model with a double input is fed float64 batches: the client's values, as scikit-learn reads
    them; a float input keeps float32 batches. LightGBM reads float64."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    from lambda_ml_serve.runtime.app import App

    X, y, _, _ = data
    model = LinearRegression().fit(X.astype(np.float64), y)
    rows = [{"a": 0.1, "b": 0.7, "c": 1 / 3}]
    matrix = np.array([[0.1, 0.7, 1 / 3]])
    for dtype, typecode in ((np.float64, "d"), (np.float32, "f")):
        path = tmp_path / f"linear_{typecode}.onnx"
        path.write_bytes(to_onnx(model, X[:1].astype(dtype)).SerializeToString())
        predictor = OnnxBackend().load(path)
        assert predictor.input_type == {"d": "float64", "f": "float32"}[typecode]
        app = App(spec_for("onnx"), predictor)
        assert app.typecode == typecode
        # skl2onnx's linear model on double inputs computes in float64, as scikit-learn does.
        want = model.predict(matrix if typecode == "d" else matrix.astype(np.float32).astype(np.float64))
        assert app(rows)["predictions"] == pytest.approx(want.tolist(), rel=1e-6 if typecode == "f" else 1e-12)
    assert LightGBMBackend().load(models["lgb_reg"]).input_type == "float64"
