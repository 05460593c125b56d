"""Explanations: exact TreeSHAP on every backend, against the libraries' own on the same rows.

XGBoost's ``pred_contribs``, LightGBM's ``pred_contrib`` and, for scikit-learn, the ``shap``
package's TreeExplainer (and a brute-force Shapley computation over a small tree): contributions
within 1e-4, and expected value + contributions == the library's own margin within 1e-5.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import platform
import warnings
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_ml_serve.backends import treeshap
from lambda_ml_serve.backends.compiled import CompiledBackend
from lambda_ml_serve.backends.compiled.runtime import TARGETS
from lambda_ml_serve.backends.lightgbm import runtime as lightgbm_runtime
from lambda_ml_serve.backends.sklearn.explain import Explainer
from lambda_ml_serve.backends.xgboost.runtime import XGBoostPredictor
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.spec import Batch

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
ensemble = pytest.importorskip("sklearn.ensemble")
shap = pytest.importorskip("shap")

TOLERANCE = 1e-4
ADDITIVITY = 1e-5
N_FEATURES = 5
HOST_ARCH = next(t.arch for t in TARGETS.values() if t.machine == platform.machine())


def data(n: int = 400, missing: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, N_FEATURES)).astype(np.float32)
    y = x[:, 0] + 2 * x[:, 1] + np.sin(5 * x[:, 2]) + (x[:, 3] > 0.5)
    if missing:
        x[rng.random(x.shape) < missing] = np.nan
    return x, y


def batch_of(matrix: np.ndarray) -> Batch:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return Batch(array("f", matrix.tobytes()), *matrix.shape)


def as_arrays(explanation) -> tuple[np.ndarray, np.ndarray]:
    return np.array(explanation.base_values), np.array(explanation.contributions)


def library_layout(values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A library's contributions (bias last, classes side by side or stacked) as (base, contributions)."""
    values = np.asarray(values, dtype=np.float64).reshape(n, -1, N_FEATURES + 1)
    return values[:, :, -1], values[:, :, :-1]


def assert_explains(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray], margin: np.ndarray):
    base, phi = got
    assert phi.shape == want[1].shape and base.shape == want[0].shape
    assert np.max(np.abs(phi - want[1])) <= TOLERANCE
    assert np.max(np.abs(base - want[0])) <= TOLERANCE
    assert np.max(np.abs(base + phi.sum(axis=2) - margin.reshape(base.shape))) <= ADDITIVITY * max(
        1.0, float(np.abs(margin).max())
    )


def require_toolchain() -> None:
    import shutil

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")


# ---------------------------------------------------------------- the algorithm itself


def brute_force_shapley(tree: treeshap.TreeArrays, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Shapley values of v(S): the tree's output with the features of S set and the others weighed by cover."""
    f = len(x)

    def value(node: int, known: frozenset[int]) -> float:
        if tree.left[node] < 0:
            return float(tree.value[node])
        j = int(tree.feature[node])
        left, right = int(tree.left[node]), int(tree.right[node])
        if j in known:
            go_left = bool(treeshap.goes_left(tree, node, np.array([x[j]], dtype=np.float32))[0])
            return value(left if go_left else right, known)
        total = tree.cover[node]
        return (tree.cover[left] * value(left, known) + tree.cover[right] * value(right, known)) / total

    phi = np.zeros(f)
    for i in range(f):
        others = [j for j in range(f) if j != i]
        for size in range(f):
            weight = math.factorial(size) * math.factorial(f - size - 1) / math.factorial(f)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                phi[i] += weight * (value(0, s | {i}) - value(0, s))
    return phi, value(0, frozenset())


def test_treeshap_is_the_brute_force_shapley_value_of_small_trees():
    from sklearn.tree import DecisionTreeRegressor

    x, y = data(200, missing=0.0)
    model = DecisionTreeRegressor(max_depth=4, random_state=0).fit(x, y)
    t = model.tree_
    # Repeated features on one path are what the merging of a path's splits is for: depth 4 on 5
    # features repeats some.
    tree = treeshap.TreeArrays(
        t.children_left,
        t.children_right,
        t.feature,
        t.threshold,
        np.zeros(t.node_count, dtype=bool),
        np.where(t.children_left < 0, t.value[:, 0, 0], 0.0),
        t.weighted_n_node_samples.astype(np.float64),
        le=True,
    )
    rows = x[:12].astype(np.float64)
    phi, expected = treeshap.explain_trees([tree], rows)
    for r, row in enumerate(rows):
        want, want_expected = brute_force_shapley(tree, row)
        assert np.max(np.abs(phi[r] - want)) <= 1e-9
        assert expected == pytest.approx(want_expected, abs=1e-9)


# ---------------------------------------------------------------- scikit-learn: the sklearn backend


def shap_values(model, x: np.ndarray, single: bool) -> tuple[np.ndarray, np.ndarray]:
    """shap's TreeExplainer values as (rows x outputs) base and (rows x outputs x features) contributions."""
    explainer = shap.TreeExplainer(model)
    values = np.asarray(explainer.shap_values(x))
    expected = np.atleast_1d(explainer.expected_value)
    values = values[:, None, :] if values.ndim == 2 else np.moveaxis(values, 2, 1)
    if single and values.shape[1] == 2:  # a forest's two classes: the positive one
        values, expected = values[:, 1:, :], expected[1:]
    return np.broadcast_to(expected, values.shape[:2]).copy(), values


SKLEARN_MODELS = {
    "random forest regressor": (lambda: ensemble.RandomForestRegressor(8, max_depth=5, random_state=0), 0.0, None),
    "random forest 3 classes": (lambda: ensemble.RandomForestClassifier(8, max_depth=5, random_state=0), 0.0, 3),
    "random forest 2 classes": (lambda: ensemble.RandomForestClassifier(8, max_depth=5, random_state=0), 0.0, 2),
    "histogram gradient boosting regressor (missing values)": (
        lambda: ensemble.HistGradientBoostingRegressor(max_iter=15, random_state=0),
        0.1,
        None,
    ),
    "histogram gradient boosting 3 classes (missing values)": (
        lambda: ensemble.HistGradientBoostingClassifier(max_iter=10, random_state=0),
        0.1,
        3,
    ),
    "gradient boosting 2 classes": (lambda: ensemble.GradientBoostingClassifier(n_estimators=10), 0.0, 2),
}


def fit_sklearn(name: str):
    make, missing, classes = SKLEARN_MODELS[name]
    x, y = data(missing=missing)
    target = y if classes is None else np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
    return make().fit(x, target), x, classes


def sklearn_margin(model, x: np.ndarray, classes: int | None) -> np.ndarray:
    if classes is None:
        return model.predict(x)
    if hasattr(model, "decision_function"):
        return model.decision_function(x)
    probabilities = model.predict_proba(x)
    return probabilities[:, 1] if classes == 2 else probabilities


@pytest.mark.parametrize("name", list(SKLEARN_MODELS))
def test_sklearn_backend_matches_shap(name):
    model, x, classes = fit_sklearn(name)
    rows = x[:40]
    predictor = get_registry().backend("sklearn")
    from lambda_ml_serve.backends.sklearn.runtime import SklearnPredictor

    got = as_arrays(SklearnPredictor(model).explain(batch_of(rows)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = shap_values(model, rows.astype(np.float64), single=True)
    assert predictor.name == "sklearn"
    assert_explains(got, want, sklearn_margin(model, rows.astype(np.float64), classes))


def test_pipeline_one_hot_contributions_are_summed_back_to_their_field():
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x, y = data()
    x[:, 0] = np.floor(x[:, 0] * 4)  # a category as an integer code
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("colour", OneHotEncoder(handle_unknown="ignore"), [0]),
                        ("numbers", StandardScaler(), [1, 2, 3, 4]),
                    ]
                ),
            ),
            ("forest", ensemble.RandomForestRegressor(6, max_depth=5, random_state=0)),
        ]
    ).fit(x, y)
    rows = x[:30].astype(np.float64)
    explainer = Explainer(pipeline)
    base, phi = explainer.explain_matrix(rows)
    assert phi.shape == (30, 1, N_FEATURES)
    assert "summed back" in explainer.note
    columns = pipeline[:-1].transform(rows)
    _, want = shap_values(pipeline[-1], columns, single=True)
    assert np.max(np.abs(phi[:, 0, 0] - want[:, 0, :4].sum(axis=1))) <= TOLERANCE  # four one-hot columns
    assert np.max(np.abs(phi[:, 0, 1:] - want[:, 0, 4:])) <= TOLERANCE
    assert np.max(np.abs(base + phi.sum(axis=2) - pipeline.predict(rows)[:, None])) <= ADDITIVITY


# ---------------------------------------------------------------- XGBoost and LightGBM backends


@pytest.fixture(scope="module")
def xgboost_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("xgboost-explain")
    x, y = data(missing=0.1)
    regressor = xgboost.train({"max_depth": 4, "eta": 0.3}, xgboost.DMatrix(x, y), 20)
    regressor.save_model(folder / "regressor.json")
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    classifier = xgboost.train(
        {"max_depth": 3, "objective": "multi:softprob", "num_class": 3}, xgboost.DMatrix(x, labels), 10
    )
    classifier.save_model(folder / "classifier.ubj")
    return {"regressor": folder / "regressor.json", "classifier": folder / "classifier.ubj"}


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_xgboost_backend_matches_pred_contribs(xgboost_models, kind):
    artifact = xgboost_models[kind]
    x, _ = data(missing=0.1, seed=1)
    rows = x[:50]
    booster = xgboost.Booster(model_file=str(artifact))
    matrix = xgboost.DMatrix(rows, missing=np.nan)
    want = library_layout(booster.predict(matrix, pred_contribs=True), len(rows))
    explanation = XGBoostPredictor(artifact).explain(batch_of(rows))
    assert explanation.link == ("softmax" if kind == "classifier" else "identity")
    assert_explains(as_arrays(explanation), want, booster.predict(matrix, output_margin=True))


@pytest.fixture(scope="module")
def lightgbm_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lightgbm-explain")
    x, y = data(missing=0.1)
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 15, "verbose": -1, "min_data_in_leaf": 5},
        lightgbm.Dataset(x, (y > np.median(y)).astype(int)),
        15,
    )
    booster.save_model(folder / "binary.txt")
    return folder / "binary.txt"


def test_lightgbm_backend_matches_pred_contrib(lightgbm_model):
    x, _ = data(missing=0.1, seed=2)
    rows = x[:50]
    booster = lightgbm.Booster(model_file=str(lightgbm_model))
    want = library_layout(booster.predict(rows, pred_contrib=True), len(rows))
    explanation = lightgbm_runtime.load(lightgbm_model).explain(batch_of(rows))
    assert explanation.link == "logistic"
    assert_explains(as_arrays(explanation), want, booster.predict(rows, raw_score=True))


# ---------------------------------------------------------------- the compiled backend


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, xgboost_models, lightgbm_model) -> dict[str, tuple[Path, Path]]:
    """Each model compiled (its explanations' parity gate passed at build): name -> (source, library)."""
    require_toolchain()
    folder = tmp_path_factory.mktemp("compiled-explain")
    import joblib

    forest, _, _ = fit_sklearn("random forest regressor")
    joblib.dump(forest, folder / "forest.joblib")
    histogram, _, _ = fit_sklearn("histogram gradient boosting regressor (missing values)")
    joblib.dump(histogram, folder / "histogram.joblib")
    sources = {
        "xgboost": xgboost_models["regressor"],
        "lightgbm": lightgbm_model,
        "forest": folder / "forest.joblib",
        "histogram": folder / "histogram.joblib",
    }
    return {
        name: (source, CompiledBackend().prepare(source, folder / name, arch=HOST_ARCH))
        for name, source in sources.items()
    }


def library_reference(name: str, source: Path, rows: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    if name == "xgboost":
        booster = xgboost.Booster(model_file=str(source))
        matrix = xgboost.DMatrix(rows, missing=np.nan)
        return library_layout(booster.predict(matrix, pred_contribs=True), len(rows)), booster.predict(
            matrix, output_margin=True
        )
    if name == "lightgbm":
        booster = lightgbm.Booster(model_file=str(source))
        return library_layout(booster.predict(rows, pred_contrib=True), len(rows)), booster.predict(
            rows, raw_score=True
        )
    import joblib

    model = joblib.load(source)
    wide = rows.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return shap_values(model, wide, single=True), model.predict(wide)


@pytest.mark.parametrize("name", ["xgboost", "lightgbm", "forest", "histogram"])
def test_compiled_backend_matches_the_library(compiled, name):
    source, library = compiled[name]
    missing = 0.0 if name == "forest" else 0.1
    x, _ = data(missing=missing, seed=3)
    rows = x[:60]
    want, margin = library_reference(name, source, rows)
    predictor = CompiledBackend().load(library)
    assert_explains(as_arrays(predictor.explain(batch_of(rows))), want, margin)
    assert predictor.metadata["explain"]["outputs"] == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.floats(-0.5, 1.5, width=32)), min_size=N_FEATURES, max_size=N_FEATURES),
        min_size=1,
        max_size=20,
    )
)
def test_compiled_and_xgboost_backends_agree_with_xgboost_on_rows_with_missing_values(compiled, xgboost_models, rows):
    matrix = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    want, margin = library_reference("xgboost", compiled["xgboost"][0], matrix)
    assert_explains(as_arrays(CompiledBackend().load(compiled["xgboost"][1]).explain(batch_of(matrix))), want, margin)
    assert_explains(as_arrays(XGBoostPredictor(xgboost_models["regressor"]).explain(batch_of(matrix))), want, margin)


# ---------------------------------------------------------------- the HTTP contract


def url_event(body, path: str = "/explain", query: str = "") -> dict:
    return {
        "requestContext": {"http": {"method": "POST", "path": path}},
        "rawPath": path,
        "rawQueryString": query,
        "body": body if isinstance(body, str) else json.dumps(body),
    }


def answer(app: App, body, path: str = "/explain", query: str = "") -> tuple[int, dict]:
    response = app(url_event(body, path, query))
    return response["statusCode"], json.loads(response["body"])


@pytest.fixture(scope="module")
def wine_app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


def test_explain_route_answers_predictions_and_additive_contributions(wine_app):
    rows = wine_app.examples["rows"]
    status, body = answer(wine_app, {"instances": rows})
    assert status == 200
    assert body["predictions"] == wine_app.predict(rows)["predictions"]
    header = body["explanation"]
    assert header["fields"] == list(wine_app.spec.feature_names)
    assert header["space"] == "margin" and header["link"] == "identity"
    for prediction, row in zip(body["predictions"], body["explanations"], strict=True):
        assert list(row["contributions"]) == header["fields"]
        assert row["expected_value"] + sum(row["contributions"].values()) == pytest.approx(row["margin"], abs=1e-9)
        assert row["margin"] == pytest.approx(prediction, abs=1e-5)


def test_explain_query_on_predict_routes_and_top(wine_app):
    rows = wine_app.examples["rows"]
    _, full = answer(wine_app, rows)
    for path in ("/", "/predict"):
        status, body = answer(wine_app, rows, path, "explain=true")
        assert status == 200 and body["explanations"] == full["explanations"]
    status, body = answer(wine_app, rows, "/", "explain=true&top=3")
    assert status == 200 and body["explanation"]["top"] == 3
    for short, long in zip(body["explanations"], full["explanations"], strict=True):
        values = long["contributions"]
        largest = sorted(values, key=lambda f: -abs(values[f]))[:3]
        assert list(short["contributions"]) == largest
        total = short["expected_value"] + sum(short["contributions"].values()) + short["rest"]
        assert total == pytest.approx(long["margin"], abs=1e-9)
    # Without explain=true, predictions as ever (and through the fast path).
    status, body = answer(wine_app, rows, "/", "")
    assert status == 200 and "explanations" not in body


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("explain=maybe", "'explain' must be true or false"),
        ("explain=true&top=0", "'top' must be a whole number from 1 to 13"),
        ("explain=true&top=x", "'top' must be a whole number from 1 to 13"),
        ("top=3", "add explain=true"),
    ],
)
def test_bad_explain_parameters_are_400(wine_app, query, message):
    status, body = answer(wine_app, wine_app.examples["rows"], "/", query)
    assert status == 400 and message in body["error"]["message"]


def test_explain_rows_beyond_the_explain_limit_are_413(monkeypatch):
    monkeypatch.setenv("LAMBDA_ML_SERVE_EXPLAIN_MAX_ROWS", "1")
    app = App.load("wine_quality", log_stream=io.StringIO())
    assert app.metadata["explain"]["max_rows"] == 1
    status, body = answer(app, app.examples["rows"][:2])
    assert status == 413 and "maximum of 1 per explanation request" in body["error"]["message"]
    assert answer(app, app.examples["rows"][:2], "/", "")[0] == 200  # predictions keep their own limit


def test_invalid_rows_are_the_same_422_as_predictions(wine_app):
    bad = [dict(wine_app.examples["rows"][0], alcohol="strong")]
    explained, predicted = answer(wine_app, bad), answer(wine_app, bad, "/", "")
    assert explained[0] == predicted[0] == 422
    assert explained[1]["error"]["details"] == predicted[1]["error"]["details"]


def test_v2_parameters_explain_adds_tensors(wine_app):
    rows = wine_app.examples["rows"]
    features = wine_app.spec.feature_names
    body = {
        "inputs": [
            {"name": f, "shape": [len(rows)], "datatype": "FP32", "data": [row[f] for row in rows]} for f in features
        ],
        "parameters": {"explain": True},
    }
    status, answered = answer(wine_app, body, f"/v2/models/{wine_app.spec.name}/infer")
    assert status == 200
    outputs = {o["name"]: o for o in answered["outputs"]}
    contributions = outputs["contributions"]
    assert contributions["shape"] == [len(rows), len(features)]
    assert contributions["parameters"]["fields"] == list(features)
    data = np.array(contributions["data"]).reshape(len(rows), len(features))
    base = np.array(outputs["expected_value"]["data"])
    assert np.allclose(base + data.sum(axis=1), outputs["margin"]["data"], atol=1e-9)


def test_compiled_backend_serves_the_same_explanations(wine_app, tmp_path, monkeypatch):
    require_toolchain()
    spec = wine_app.spec
    library = CompiledBackend().prepare(spec.artifact_path, tmp_path, arch=HOST_ARCH, spec=spec)
    app = App.load("wine_quality", artifact=library, backend="compiled", log_stream=io.StringIO())
    rows = wine_app.examples["rows"]
    _, compiled_body = answer(app, rows)
    _, xgboost_body = answer(wine_app, rows)
    for got, want in zip(compiled_body["explanations"], xgboost_body["explanations"], strict=True):
        assert got["expected_value"] == pytest.approx(want["expected_value"], abs=TOLERANCE)
        assert got["contributions"] == pytest.approx(want["contributions"], abs=TOLERANCE)
    assert app.metadata["explain"]["available"]


def test_openapi_documents_the_explain_route_with_an_answered_example(wine_app):
    from jsonschema import Draft202012Validator

    document = wine_app.openapi
    op = document["paths"]["/explain"]["post"]
    assert {"200", "413", "422", "501"} <= set(op["responses"])
    example = op["responses"]["200"]["content"]["application/json"]["example"]
    Draft202012Validator({**document, "$ref": "#/components/schemas/ExplainResponse"}).validate(example)
    assert [p["name"] for p in document["paths"]["/predict"]["post"]["parameters"]] == ["explain", "top"]


def test_onnx_backend_refuses_with_501_naming_the_fix(wine_app, tmp_path):
    pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx

    from lambda_ml_serve.backends.onnx import runtime as onnx_runtime

    rows = wine_app.examples["rows"]
    features = wine_app.spec.feature_names
    x = np.array([[row[f] for f in features] for row in rows] * 4, dtype=np.float32)
    model = ensemble.RandomForestRegressor(3, max_depth=3, random_state=0).fit(x, np.arange(len(x)) % 3)
    path = tmp_path / "model.onnx"
    path.write_bytes(to_onnx(model, x[:1]).SerializeToString())
    app = App(wine_app.spec, onnx_runtime.load(path), backend="onnx", log_stream=io.StringIO())
    assert app.metadata["explain"]["available"] is False
    status, body = answer(app, rows)
    assert status == 501
    assert "serve the tree model with backend xgboost, lightgbm, sklearn or compiled" in body["error"]["message"]
    assert answer(app, rows, "/", "")[0] == 200


def test_batch_explain_writes_contributions_as_columns(tmp_path, wine_app):
    import csv

    from lambda_ml_serve.batch import score_file

    features = list(wine_app.spec.feature_names)
    rows = wine_app.examples["rows"] * 3
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(features)
        writer.writerows([[row[f] for f in features] for row in rows])
        writer.writerow(["x"] * len(features))  # a row that fails validation goes to the errors file
    output = tmp_path / "out.csv"
    summary = score_file(source, output, model="wine_quality", chunk_rows=4, explain=True)
    assert (summary.scored, summary.rejected) == (len(rows), 1)
    with output.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == [
        "row",
        "prediction",
        *(f"shap:{f}" for f in features),
        "shap:expected_value",
        "shap:margin",
    ]
    want = wine_app.explain(rows)["explanations"]
    for line, explained in zip(table, want, strict=True):
        total = float(line["shap:expected_value"]) + sum(float(line[f"shap:{f}"]) for f in features)
        assert total == pytest.approx(float(line["shap:margin"]), abs=1e-9)
        assert float(line["shap:alcohol"]) == explained["contributions"]["alcohol"]


def test_explanation_gate_fails_the_build_and_writes_nothing(xgboost_models, tmp_path, monkeypatch):
    require_toolchain()
    from lambda_ml_serve.backends.compiled import shap as compiled_shap

    reference = compiled_shap.library_contributions

    def off_by_a_hundredth(ensemble, artifact, matrix):
        values = reference(ensemble, artifact, matrix).copy()
        values[2, 0, 1] += 0.01
        return values

    monkeypatch.setattr(compiled_shap, "library_contributions", off_by_a_hundredth)
    out = tmp_path / "out"
    with pytest.raises(
        compiled_shap.ExplainParityError, match=r"differ from xgboost's by up to 0\.01 .* row 2, output 0, feature 'f1'"
    ):
        CompiledBackend().prepare(xgboost_models["regressor"], out, arch=HOST_ARCH)
    assert list(out.iterdir()) == []


def test_lightgbm_backend_explains_categorical_splits(tmp_path):
    x, y = data(missing=0.1)
    x[:, 0] = np.floor(x[:, 0] * 5)  # a category as an integer code
    y = y + np.where(np.isin(x[:, 0], [1, 3]), 2.0, 0.0)
    booster = lightgbm.train(
        {"num_leaves": 15, "verbose": -1, "min_data_in_leaf": 5, "min_data_per_group": 5, "cat_smooth": 1},
        lightgbm.Dataset(x, y, categorical_feature=[0]),
        15,
    )
    booster.save_model(tmp_path / "categorical.txt")
    dump = booster.dump_model()
    assert any("==" in json.dumps(t["tree_structure"]) for t in dump["tree_info"])  # it does split on sets
    rows = data(missing=0.1, seed=4)[0][:50]
    rows[:, 0] = np.floor(rows[:, 0] * 5)
    want = library_layout(booster.predict(rows, pred_contrib=True), len(rows))
    explanation = lightgbm_runtime.load(tmp_path / "categorical.txt").explain(batch_of(rows))
    assert_explains(as_arrays(explanation), want, booster.predict(rows, raw_score=True))


def test_sklearn_categorical_histogram_model_is_explained_through_its_bitsets():
    from lambda_ml_serve.backends.sklearn.runtime import SklearnPredictor

    x, y = data()
    x[:, 0] = np.floor(x[:, 0] * 4)
    model = ensemble.HistGradientBoostingRegressor(max_iter=5, categorical_features=[0]).fit(x, y)
    predictor = SklearnPredictor(model)
    assert predictor.explains is True
    rows = x[:20].copy()
    rows[:3, 0] = [np.nan, 99.0, -7.0]  # missing, and two categories the model never saw: missing too
    base, phi = as_arrays(predictor.explain(batch_of(rows)))
    margin = model.predict(rows.astype(np.float32).astype(np.float64))
    assert np.max(np.abs(base[:, 0] + phi[:, 0].sum(axis=1) - margin)) <= 1e-9


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.none(), st.floats(-0.5, 1.5, width=32)), min_size=N_FEATURES, max_size=N_FEATURES),
        min_size=1,
        max_size=15,
    )
)
def test_sklearn_backend_agrees_with_shap_on_rows_with_missing_values(rows):
    from lambda_ml_serve.backends.sklearn.runtime import SklearnPredictor

    model, _, _ = _histogram_regressor()
    matrix = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    got = as_arrays(SklearnPredictor(model).explain(batch_of(matrix)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = shap_values(model, matrix.astype(np.float64), single=True)
    assert_explains(got, want, model.predict(matrix.astype(np.float64)))


@functools.cache
def _histogram_regressor():
    return fit_sklearn("histogram gradient boosting regressor (missing values)")


def test_compiled_backend_explains_a_multiclass_model_per_class(xgboost_models, tmp_path):
    require_toolchain()
    source = xgboost_models["classifier"]
    library = CompiledBackend().prepare(source, tmp_path, arch=HOST_ARCH)  # its explanation gate passed
    predictor = CompiledBackend().load(library)
    assert predictor.metadata["explain"]["outputs"] == 3 and predictor.metadata["explain"]["link"] == "softmax"
    rows = data(missing=0.1, seed=5)[0][:40]
    booster = xgboost.Booster(model_file=str(source))
    matrix = xgboost.DMatrix(rows, missing=np.nan)
    want = library_layout(booster.predict(matrix, pred_contribs=True), len(rows))
    assert_explains(as_arrays(predictor.explain(batch_of(rows))), want, booster.predict(matrix, output_margin=True))


# ---------------------------------------------------------------- compiled: categorical splits and pipelines

N_CATEGORIES = 6
#: Codes no model knows, as each library reads them: below 0, fractional, past the last category, huge.
UNKNOWN_CODES = (-1.0, -0.5, -2.0, 3.7, float(N_CATEGORIES), N_CATEGORIES + 3.5, 1e6)
XGBOOST_TYPES = ["q", "c", "q", "q", "q"]


def categorical_data(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Column 1 is a category code in [0, N_CATEGORIES) that moves the target; NaN in every column."""
    x, y = data(n, missing=0.1, seed=seed)
    rng = np.random.default_rng(seed + 100)
    x[:, 1] = rng.integers(0, N_CATEGORIES, n)
    x[rng.random(n) < 0.1, 1] = np.nan
    y = y + np.where(np.isin(x[:, 1], [1, 3, 4]), 2.0, 0.0)
    return x, y


def categorical_rows(seed: int) -> np.ndarray:
    """Rows holding every category, every unknown code and NaN in the categorical column."""
    x, _ = categorical_data(60, seed=seed)
    codes = [*range(N_CATEGORIES), *UNKNOWN_CODES, np.nan]
    x[: len(codes), 1] = codes
    return x


@pytest.fixture(scope="module")
def categorical_models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """XGBoost (regressor, 3-class) and LightGBM models that split on category sets, compiled (gate passed)."""
    require_toolchain()
    folder = tmp_path_factory.mktemp("compiled-categorical")
    x, y = categorical_data()
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))

    def dmatrix(target):
        return xgboost.DMatrix(x, target, feature_types=XGBOOST_TYPES, enable_categorical=True)

    regressor = xgboost.train({"max_depth": 4, "max_cat_to_onehot": 1}, dmatrix(y), 15)
    regressor.save_model(folder / "xgboost-regressor.json")
    params = {"max_depth": 3, "objective": "multi:softprob", "num_class": 3, "max_cat_to_onehot": 1}
    xgboost.train(params, dmatrix(labels), 8).save_model(folder / "xgboost-classifier.json")
    lightgbm.train(
        {"num_leaves": 15, "verbose": -1, "min_data_in_leaf": 5, "min_data_per_group": 5, "cat_smooth": 1},
        lightgbm.Dataset(x, y, categorical_feature=[1]),
        15,
    ).save_model(folder / "lightgbm.txt")
    sources = {
        "xgboost-regressor": folder / "xgboost-regressor.json",
        "xgboost-classifier": folder / "xgboost-classifier.json",
        "lightgbm": folder / "lightgbm.txt",
    }
    return {
        name: (source, CompiledBackend().prepare(source, folder / name, arch=HOST_ARCH))
        for name, source in sources.items()
    }


def categorical_reference(name: str, source: Path, rows: np.ndarray):
    """(expected values, contributions) and margins from the library's own TreeSHAP."""
    if name.startswith("xgboost"):
        booster = xgboost.Booster(model_file=str(source))
        matrix = xgboost.DMatrix(rows, missing=np.nan, feature_types=XGBOOST_TYPES, enable_categorical=True)
        values = booster.predict(matrix, pred_contribs=True)
        return library_layout(values, len(rows)), booster.predict(matrix, output_margin=True)
    booster = lightgbm.Booster(model_file=str(source))
    return library_layout(booster.predict(rows, pred_contrib=True), len(rows)), booster.predict(rows, raw_score=True)


@pytest.mark.parametrize("name", ["xgboost-regressor", "xgboost-classifier", "lightgbm"])
def test_compiled_backend_explains_categorical_splits_like_the_library(categorical_models, name):
    source, library = categorical_models[name]
    from lambda_ml_serve.backends.compiled.ensemble import read_ensemble

    assert read_ensemble(source, None).category_sets  # the trees do split on category sets
    predictor = CompiledBackend().load(library)
    assert predictor.explains  # the build compiled its explanations: GET / and info say "available"
    assert predictor.metadata["explain"]["outputs"] == (3 if name == "xgboost-classifier" else 1)
    rows = categorical_rows(seed=7)
    want, margin = categorical_reference(name, source, rows)
    assert_explains(as_arrays(predictor.explain(batch_of(rows))), want, margin)


category_cells = st.one_of(
    st.none(), st.integers(0, N_CATEGORIES - 1).map(float), st.sampled_from(UNKNOWN_CODES), st.floats(-3, 40, width=32)
)
number_cells = st.one_of(st.none(), st.floats(-0.5, 1.5, width=32))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["xgboost-regressor", "xgboost-classifier", "lightgbm"]),
    st.lists(
        st.tuples(number_cells, category_cells, number_cells, number_cells, number_cells), min_size=1, max_size=12
    ),
)
def test_compiled_categorical_explanations_agree_on_generated_rows(categorical_models, name, rows):
    source, library = categorical_models[name]
    matrix = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    want, margin = categorical_reference(name, source, matrix)
    assert_explains(as_arrays(CompiledBackend().load(library).explain(batch_of(matrix))), want, margin)


COLOURS = ["blue", "green", "red", "white"]
SWEETNESS = ["dry", "medium", "sweet"]
#: The pipelines' input fields in order: categories travel as codes into these lists (sorted, as the encoders').
PIPELINE_FIELDS = ["acidity", "colour", "sweetness", "sugar"]


def fit_pipeline(estimator):
    """A ColumnTransformer (one-hot, ordinal, imputed and scaled, passthrough) before ``estimator``."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    rng = np.random.default_rng(0)
    n = 500
    frame = pd.DataFrame(
        {
            "acidity": rng.normal(7, 1, n),
            "colour": rng.choice(COLOURS, n),
            "sweetness": rng.choice(SWEETNESS, n),
            "sugar": rng.gamma(2, 3, n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "acidity"] = np.nan
    score = (frame["sugar"] > 6).astype(int) + (frame["colour"] == "red") + (frame["sweetness"] == "sweet")
    prepare = ColumnTransformer(
        [
            ("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
            ("sweetness", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["sweetness"]),
            ("acidity", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["acidity"]),
            ("sugar", "passthrough", ["sugar"]),
        ]
    )
    target = (
        np.array(["low", "mid", "high", "top"])[score]
        if hasattr(estimator, "predict_proba")
        else score + 0.1 * frame["sugar"]
    )
    return Pipeline([("prepare", prepare), ("model", estimator)]).fit(frame, target)


def pipeline_frame(matrix: np.ndarray):
    """What a client of the pipeline sends for the kernel's rows: category strings (an unseen one for an
    unknown code), NaN for missing."""
    import pandas as pd

    data = {}
    for j, name in enumerate(PIPELINE_FIELDS):
        column = matrix[:, j].astype(np.float64)
        if name in ("colour", "sweetness"):
            known = COLOURS if name == "colour" else SWEETNESS
            data[name] = pd.Series(
                [np.nan if np.isnan(v) else (known[int(v)] if 0 <= v < len(known) else "never seen") for v in column],
                dtype=object,
            )
        else:
            data[name] = column
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def compiled_pipelines(tmp_path_factory) -> dict[str, tuple[object, Path]]:
    """The pipelines before a HistGradientBoosting 4-class classifier and a random forest, compiled."""
    import joblib

    require_toolchain()
    folder = tmp_path_factory.mktemp("compiled-pipelines")
    estimators = {
        "histogram classifier": ensemble.HistGradientBoostingClassifier(max_iter=8, max_depth=4, random_state=0),
        "forest": ensemble.RandomForestRegressor(6, max_depth=6, random_state=0),
    }
    made = {}
    for name, estimator in estimators.items():
        pipeline = fit_pipeline(estimator)
        artifact = folder / f"{name.replace(' ', '-')}.joblib"
        joblib.dump(pipeline, artifact)
        made[name] = (pipeline, CompiledBackend().prepare(artifact, folder / name.replace(" ", "-"), arch=HOST_ARCH))
    return made


def pipeline_margin(pipeline, matrix: np.ndarray) -> np.ndarray:
    frame = pipeline_frame(matrix)
    if hasattr(pipeline, "predict_proba"):
        return pipeline.decision_function(frame)
    return pipeline.predict(frame)


def pipeline_kernel_rows(seed: int) -> np.ndarray:
    """The kernel's input for the pipelines: every category, unknown codes and NaN in both encoded fields."""
    rng = np.random.default_rng(seed)
    n = 60
    matrix = np.column_stack(
        [rng.normal(7, 1.5, n), rng.integers(0, 4, n), rng.integers(0, 3, n), rng.gamma(2, 3, n)]
    ).astype(np.float32)
    matrix[rng.random(n) < 0.15, 0] = np.nan
    matrix[:10, 1] = [0, 1, 2, 3, -1, 4, 9.5, 1e6, np.nan, -0.5]
    matrix[:10, 2] = [np.nan, 0, 1, 2, -1, 3, 7, -3, 2.5, np.nan]
    return matrix


@pytest.mark.parametrize("name", ["histogram classifier", "forest"])
def test_compiled_pipeline_explanations_are_the_sklearn_backends_per_field(compiled_pipelines, name):
    pipeline, library = compiled_pipelines[name]
    predictor = CompiledBackend().load(library)
    assert predictor.explains
    rows = pipeline_kernel_rows(seed=11)
    explanation = predictor.explain(batch_of(rows))
    assert "summed back to the field" in explanation.note
    want = Explainer(pipeline, to_input=pipeline_frame).explain_matrix(rows)
    assert_explains(as_arrays(explanation), want, pipeline_margin(pipeline, rows))
    # Four one-hot columns, one ordinal, one scaled, one passed through: one contribution per input field.
    assert predictor.metadata["explain"]["fold"] == [1, 1, 1, 1, 2, 0, 3]
    if name == "histogram classifier":
        assert explanation.outputs == ["high", "low", "mid", "top"] and explanation.link == "softmax"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["histogram classifier", "forest"]),
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(0, 14, width=32)),
            st.one_of(st.none(), st.integers(-2, 6).map(float), st.floats(-2, 8, width=32)),
            st.one_of(st.none(), st.integers(-2, 5).map(float), st.floats(-2, 8, width=32)),
            st.one_of(st.none(), st.floats(0, 30, width=32)),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_compiled_pipeline_explanations_agree_on_generated_rows(compiled_pipelines, name, rows):
    pipeline, library = compiled_pipelines[name]
    matrix = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    want = Explainer(pipeline, to_input=pipeline_frame).explain_matrix(matrix)
    got = as_arrays(CompiledBackend().load(library).explain(batch_of(matrix)))
    assert_explains(got, want, pipeline_margin(pipeline, matrix))


def test_a_fold_without_one_node_per_split_builds_without_explanations(tmp_path, monkeypatch, capsys):
    """Explanations over folded trees need each node's own column; without it the build says so in one line."""
    import joblib

    from lambda_ml_serve.backends.compiled import pipeline as folding

    require_toolchain()
    fitted = fit_pipeline(ensemble.RandomForestRegressor(3, max_depth=4, random_state=0))
    joblib.dump(fitted, tmp_path / "pipeline.joblib")
    fold = folding.Preprocessing.fold

    def without_columns(self, trees):
        return [{k: v for k, v in tree.items() if k != "explain_feature"} for tree in fold(self, trees)]

    monkeypatch.setattr(folding.Preprocessing, "fold", without_columns)
    library = CompiledBackend().prepare(tmp_path / "pipeline.joblib", tmp_path / "out", arch=HOST_ARCH)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("no explanations compiled")]
    assert len(lines) == 1 and "one node per split" in lines[0] and "backend 'sklearn'" in lines[0]
    assert CompiledBackend().load(library).explains is False
