"""The scikit-learn backend serves joblib-pickled estimators through the real App, as a plugin would."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import url_event
from pydantic import BaseModel, Field

from lambda_ml_serve import hookimpl
from lambda_ml_serve.backends.sklearn import SklearnBackend
from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.plugins import build_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.spec import ModelSpec

joblib = pytest.importorskip("joblib")
sklearn = pytest.importorskip("sklearn")

FEATURES = ("length", "width", "depth", "mass")


class Row(BaseModel):
    length: float = Field(ge=-100, le=100)
    width: float = Field(ge=-100, le=100)
    depth: float = Field(ge=-100, le=100)
    mass: float = Field(ge=-100, le=100)


class Unbounded(BaseModel):
    length: float
    width: float
    depth: float
    mass: float


class ReorderedRow(BaseModel):
    width: float
    length: float
    depth: float
    mass: float


class OneModel:
    """A plugin registering one model, as a plugin module's ``register_models`` would."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @hookimpl
    def register_models(self, register):
        register(self.spec)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features with an awkward mix of scales, a continuous target and a three-class target."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(240, len(FEATURES))) * [1.0, 10.0, 0.1, 30.0]
    y = X @ [2.0, -0.3, 15.0, 0.05] + rng.normal(scale=0.5, size=len(X))
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    return X, y, labels


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """Dump an estimator into a fresh importable package, register it as a plugin, load it with App."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def serve(estimator, *, extra=None, schema=Row, name="sk_model") -> App:
        package = f"lms_sk_{name}_{len(created)}"
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        joblib.dump(estimator, tmp_path / package / "model.joblib")
        created.append(package)
        spec = ModelSpec(
            name=name,
            version="1.0.0",
            backend="sklearn",
            package=package,
            artifact="model.joblib",
            schema=schema,
            extra=extra or {},
        )
        return App.load(name, registry=build_registry([OneModel(spec)]))

    yield serve
    for package in created:
        sys.modules.pop(package, None)


def rows_of(X: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in X]


def float32(X: np.ndarray) -> np.ndarray:
    """The values a float32 batch holds (the numbers rounded to float32), at the fitted float64."""
    return X.astype(np.float32).astype(np.float64)


def test_regressor_predicts_like_the_estimator(serve, data):
    from sklearn.ensemble import RandomForestRegressor

    X, y, _ = data
    estimator = RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0).fit(X, y)
    app = serve(estimator)
    answer = app({"instances": rows_of(X[:50])})
    assert answer["predictions"] == estimator.predict(X[:50]).tolist()
    assert app.predictor.feature_names is None  # fitted on an array: nothing to check
    assert app.spec.backend == "sklearn"


def test_classifier_answers_labels_by_default(serve, data):
    from sklearn.linear_model import LogisticRegression

    X, _, labels = data
    names = np.array(["low", "mid", "high"])[labels]
    estimator = LogisticRegression(max_iter=1000).fit(X, names)
    response = serve(estimator)(url_event(json.dumps(rows_of(X[:30]))))
    assert response["statusCode"] == 200
    predictions = json.loads(response["body"])["predictions"]
    assert predictions == estimator.predict(X[:30]).tolist()
    assert set(predictions) <= {"low", "mid", "high"}


def test_classifier_answers_probabilities_when_asked(serve, data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _, labels = data
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, labels)
    app = serve(estimator, extra={"predict_proba": True})
    predictions = app({"instances": rows_of(X[:40])})["predictions"]
    expected = estimator.predict_proba(X[:40])
    assert predictions == expected.tolist()
    assert all(len(row) == 3 and sum(row) == pytest.approx(1.0) for row in predictions)
    assert app.predictor.classes == [0, 1, 2]
    assert app.metadata["classes"] == [0, 1, 2]
    # The most probable class is the label the estimator predicts.
    assert np.argmax(predictions, axis=1).tolist() == estimator.predict(X[:40]).tolist()


def test_the_batch_is_float64_and_holds_the_clients_values(serve, data):
    """scikit-learn compares in float64: the served answer is the estimator's on the values as sent."""
    from sklearn.linear_model import LinearRegression

    X, y, _ = data
    estimator = LinearRegression().fit(X, y)
    app = serve(estimator)
    assert app.predictor.input_type == "float64" and app.typecode == "d"
    rows = [dict(zip(FEATURES, (7.4, 0.1, 0.3, 1 / 3), strict=True))]
    for answer in (app(rows), json.loads(app(url_event(json.dumps(rows)))["body"])):
        assert answer["predictions"] == estimator.predict(np.array([[7.4, 0.1, 0.3, 1 / 3]])).tolist()
    assert answer["predictions"] != estimator.predict(float32(np.array([[7.4, 0.1, 0.3, 1 / 3]]))).tolist()


def test_values_too_large_for_the_model_are_refused_as_the_library_refuses_them(serve, data):
    """Finite values past float32's range: a forest refuses them (it reads float32) with a 422 naming
    the row and field; HistGradientBoosting answers them as on a DataFrame; a scaler whose output
    becomes infinite before a linear model is refused too. Never a 500."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = data
    rows = rows_of(X[:3])
    rows[1]["depth"] = 1e300
    forest = serve(RandomForestRegressor(n_estimators=3, random_state=0).fit(X, y), schema=Unbounded, name="rf")
    response = forest(url_event(json.dumps(rows)))
    assert response["statusCode"] == 422, response["body"]
    error = json.loads(response["body"])["error"]
    assert "past float32's range" in error["message"] and "1e+300" not in response["body"]
    assert error["details"] == [{"row": 1, "field": None, "message": "column 2 is too large for the model"}]
    hgb = HistGradientBoostingRegressor(max_iter=5).fit(X, y)
    response = serve(hgb, schema=Unbounded, name="hgb")(url_event(json.dumps(rows)))
    assert response["statusCode"] == 200, response["body"]
    matrix = np.array([[row[f] for f in FEATURES] for row in rows])
    assert json.loads(response["body"])["predictions"] == hgb.predict(matrix).tolist()
    rows[1]["depth"] = 1.7e308  # finite; scaled by 1 / 0.1, infinite
    linear = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    response = serve(linear, schema=Unbounded, name="linear")(url_event(json.dumps(rows)))
    assert response["statusCode"] == 422, response["body"]
    assert "makes a value of these rows infinite" in response["body"]


def test_probabilities_from_a_regressor_are_refused_at_load(serve, data):
    from sklearn.linear_model import Ridge

    X, y, _ = data
    with pytest.raises(ModelLoadError, match="Ridge has no predict_proba"):
        serve(Ridge().fit(X, y), extra={"predict_proba": True})


def test_dataframe_feature_names_are_checked_and_do_not_warn(serve, data):
    pandas = pytest.importorskip("pandas")
    from sklearn.ensemble import GradientBoostingRegressor

    X, y, _ = data
    frame = pandas.DataFrame(X, columns=list(FEATURES))
    estimator = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(frame, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning on every request would flood the logs
        app = serve(estimator)
        got = app({"instances": rows_of(X[:20])})["predictions"]
    assert app.predictor.feature_names == list(FEATURES)
    assert got == estimator.predict(pandas.DataFrame(X[:20], columns=list(FEATURES))).tolist()
    with pytest.raises(ModelLoadError, match="same names, different order"):
        serve(estimator, schema=ReorderedRow)


def test_artifact_from_another_sklearn_version_is_refused(serve, data, tmp_path):
    from sklearn.linear_model import Ridge

    X, y, _ = data
    path = tmp_path / "ridge.joblib"
    joblib.dump(Ridge().fit(X, y), path)
    # Every estimator pickles the version that wrote it; pretend an older release did.
    current = sklearn.__version__.encode()
    older = b"0." + b"9" * (len(current) - 2)
    raw = path.read_bytes()
    assert raw.count(current) == 1
    path.write_bytes(raw.replace(current, older))
    with pytest.raises(RuntimeError, match=rf"written by scikit-learn {older.decode()} .* pin scikit-learn=="):
        SklearnBackend().load(path)


def test_something_else_pickled_is_refused(tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump({"not": "an estimator"}, path)
    with pytest.raises(TypeError, match="holds a dict, not a fitted estimator"):
        SklearnBackend().load(path)


def test_prepare_copies_the_artifact_unchanged(tmp_path, data):
    from sklearn.linear_model import Ridge

    X, y, _ = data
    source = tmp_path / "model.joblib"
    joblib.dump(Ridge().fit(X, y), source)
    out = tmp_path / "prepared"
    out.mkdir()
    prepared = SklearnBackend().prepare(source, out)
    assert prepared == out / "model.joblib"
    assert prepared.read_bytes() == source.read_bytes()
    from array import array

    from lambda_ml_serve.spec import Batch

    batch = Batch(array("f", float32(X[:5]).ravel().tolist()), 5, len(FEATURES))
    assert SklearnBackend().load(prepared).predict(batch) == SklearnBackend().load(source).predict(batch)


def test_registry_startup_imports_no_ml_library():
    code = (
        "import sys; from lambda_ml_serve.plugins import get_registry; "
        "assert 'sklearn' in get_registry().backends; "
        "print(sorted(m for m in ('sklearn', 'joblib', 'numpy', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_requirements_cover_what_loading_imports():
    names = {r.split(">")[0].split("=")[0] for r in SklearnBackend.requirements}
    assert names == {"scikit-learn", "joblib", "numpy", "scipy"}
    assert all(">=" in r for r in SklearnBackend.requirements)
