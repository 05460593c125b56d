"""Real tabular models, as teams ship them, from file to served plugin with no file edited.

Each model is trained here on the wine data (a few trees, once per module) with its own library:
an XGBoost regressor with a categorical ``color``; a LightGBM regressor on a DataFrame whose columns
have spaces, with two category columns; a scikit-learn Pipeline (OneHotEncoder + OrdinalEncoder +
imputer + scaler) before a multi-class HistGradientBoostingClassifier; an XGBoost multi-class
classifier whose string labels come from ``--data``; a LightGBM multi-class classifier; a RandomForest
binary classifier; and an MLflow model directory. Each goes through ``new --from-model``, is installed,
and is asked with rows written as clients write them (the DataFrame's own column names, category
strings, ``null``): through ``invoke``, through ``serve`` with pandas ``to_json(orient="records")`` and
``dataframe_split`` bodies, and in-process with hypothesis-drawn rows (every category, unknown ones,
missing values). Labels must equal the library's and probabilities be within 1e-5 of its own, predicting
on a DataFrame of the same rows.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import url_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lambda_ml_serve_wine_quality.data import PHYSICO_CHEMICAL
from served import serving
from tabular_cases import COLOURS, GAPPY, GRADES, SWEETNESS, Case, generate_and_install, nullable_columns, wine_frame

from lambda_ml_serve.cli import main

SEED = 5
TRAIN_ROWS = 700
#: Held-out rows clients send; some of their values are set to null below.
CLIENT_ROWS = 6
NUMBERS = list(PHYSICO_CHEMICAL)


def _as_category(frame: pd.DataFrame, column: str, categories: list[str]) -> pd.Series:
    return pd.Categorical(frame[column], categories=categories)


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    return wine_frame(NUMBERS, TRAIN_ROWS + CLIENT_ROWS, SEED)


@pytest.fixture(scope="module")
def cases(wine, tmp_path_factory) -> dict[str, Case]:
    """Every model trained once, saved as its users save it, with a CSV of its training data."""
    import joblib
    import lightgbm
    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    root = tmp_path_factory.mktemp("models")
    train = wine.iloc[:TRAIN_ROWS]
    out: dict[str, Case] = {}

    # XGBoost regressor, a pandas category column, missing values: XGBoost >= 3 stores the categories.
    columns = [*NUMBERS, "color"]
    X = train[columns].assign(color=_as_category(train, "color", COLOURS))
    target = train["quality"] + 2 * (train["color"] == "red")
    xgb_reg = xgboost.XGBRegressor(n_estimators=6, max_depth=3, enable_categorical=True, max_cat_to_onehot=1)
    xgb_reg.fit(X, target)
    xgb_reg.get_booster().save_model(root / "xgb_cat.json")
    data = root / "xgb_cat.csv"
    train[columns].assign(score=target).to_csv(data, index=False)
    out["xgb_cat"] = Case(
        "xgb_cat",
        root / "xgb_cat.json",
        lambda f: (xgb_reg.predict(f).tolist(), None),
        columns,
        ["--data", data, "--target", "score"],
        categories={"color": COLOURS},
        refuses_unknown=True,
    )

    # LightGBM regressor: columns with spaces (stored with underscores), two category columns.
    columns = [*NUMBERS, "color", "sweetness"]
    X = train[columns].assign(
        color=_as_category(train, "color", COLOURS), sweetness=_as_category(train, "sweetness", SWEETNESS)
    )
    lgb_reg = lightgbm.LGBMRegressor(n_estimators=6, num_leaves=7, min_child_samples=5, verbose=-1)
    lgb_reg.fit(X, train["quality"] + 2 * (train["color"] == "red"))
    lgb_reg.booster_.save_model(root / "lgb_cat.txt")
    data = root / "lgb_cat.csv"
    train[columns].assign(quality=train["quality"]).to_csv(data, index=False)
    out["lgb_cat"] = Case(
        "lgb_cat",
        root / "lgb_cat.txt",
        lambda f: (lgb_reg.predict(f).tolist(), None),
        columns,
        ["--data", data, "--target", "quality"],
        categories={"color": COLOURS, "sweetness": SWEETNESS},
    )

    # scikit-learn Pipeline: one-hot colour (unknown ignored), ordinal sweetness (unknown -> -1),
    # imputed and scaled numbers, before a multi-class HistGradientBoostingClassifier with string labels.
    columns = [*NUMBERS, "color", "sweetness"]
    pre = ColumnTransformer(
        [
            ("color", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("sweetness", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["sweetness"]),
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), NUMBERS),
        ]
    )
    pipeline = Pipeline([("pre", pre), ("model", HistGradientBoostingClassifier(max_iter=5, random_state=SEED))])
    pipeline.fit(train[columns], train["grade"])
    joblib.dump(pipeline, root / "pipeline.joblib")
    out["pipeline"] = Case(
        "pipeline",
        root / "pipeline.joblib",
        lambda f: (pipeline.predict(f).tolist(), pipeline.predict_proba(f).tolist()),
        columns,
        classes=GRADES,
        categories={"color": COLOURS, "sweetness": SWEETNESS},
        strings=True,
    )

    # XGBoost multi-class classifier: the file holds class indices, the labels come from --data.
    columns = NUMBERS
    encoded = train["grade"].map({g: i for i, g in enumerate(GRADES)})
    xgb_clf = xgboost.XGBClassifier(n_estimators=4, max_depth=3).fit(train[columns], encoded)
    xgb_clf.get_booster().save_model(root / "xgb_multi.ubj")
    data = root / "xgb_multi.csv"
    train[[*columns, "grade"]].to_csv(data, index=False)
    out["xgb_multi"] = Case(
        "xgb_multi",
        root / "xgb_multi.ubj",
        lambda f: ([GRADES[i] for i in xgb_clf.predict(f)], xgb_clf.predict_proba(f).tolist()),
        columns,
        ["--data", data, "--target", "grade"],
        classes=GRADES,
    )

    # LightGBM multi-class classifier with integer labels (quality bands), labels given with --classes.
    bands = (train["quality"] >= 6).astype(int) + (train["quality"] >= 7).astype(int)
    lgb_clf = lightgbm.LGBMClassifier(n_estimators=4, num_leaves=7, verbose=-1).fit(train[columns], bands)
    lgb_clf.booster_.save_model(root / "lgb_multi.txt")
    out["lgb_multi"] = Case(
        "lgb_multi",
        root / "lgb_multi.txt",
        lambda f: (lgb_clf.predict(f).tolist(), lgb_clf.predict_proba(f).tolist()),
        columns,
        ["--classes", "0,1,2"],
        classes=[0, 1, 2],
    )

    # RandomForest binary classifier with string labels (the colour from the chemistry).
    columns = [c for c in NUMBERS if c not in GAPPY]
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=SEED).fit(train[columns], train["color"])
    joblib.dump(forest, root / "forest.joblib")
    out["forest"] = Case(
        "forest",
        root / "forest.joblib",
        lambda f: (forest.predict(f).tolist(), forest.predict_proba(f).tolist()),
        columns,
        classes=COLOURS,
    )

    # An MLflow model directory: a LightGBM regressor on the DataFrame's own (spaced) column names.
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    columns = NUMBERS
    lgb_flow = lightgbm.LGBMRegressor(n_estimators=5, num_leaves=7, verbose=-1).fit(train[columns], train["quality"])
    signature = infer_signature(train[columns], lgb_flow.predict(train[columns]))
    # The Booster: MLflow saves LightGBM's scikit-learn wrapper through its sklearn flavour instead.
    mlflow.lightgbm.save_model(
        lgb_flow.booster_, root / "mlflow_model", signature=signature, input_example=train[columns].dropna().head(2)
    )
    out["mlflow"] = Case("mlflow", root / "mlflow_model", lambda f: (lgb_flow.predict(f).tolist(), None), columns)
    return out


@pytest.fixture(scope="module")
def site(cases, tmp_path_factory) -> Path:
    """Every case generated by ``new --from-model`` and pip-installed into one folder."""
    plugins = [(case.model_file, case.model, case.args) for case in cases.values()]
    return generate_and_install(plugins, tmp_path_factory.mktemp("projects"), tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def client_rows(wine) -> list[dict]:
    """Held-out rows as a client writes them: the DataFrame's own names, category strings, null."""
    rows = wine.iloc[TRAIN_ROWS:][[*NUMBERS, "color", "sweetness"]].to_dict(orient="records")
    for i, row in enumerate(rows):
        for column, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[column] = None
        if i % 2 == 0:
            row[GAPPY[i % len(GAPPY) if i % 4 else 0]] = None
    return rows


def rows_for(case: Case, rows: list[dict]) -> list[dict]:
    """The rows with the case's columns only; a model that takes no missing value gets none."""
    return [{c: row[c] for c in case.columns} for row in rows]


def assert_answers_like_the_library(case: Case, answer: dict, rows: list[dict]) -> None:
    labels, probabilities = case.library(case.frame(rows))
    if case.classes is None:
        assert close(answer["predictions"], labels), (case.key, answer["predictions"], labels)
        return
    assert answer["classes"] == case.classes
    assert answer["predictions"] == labels, case.key
    assert close(answer["probabilities"], probabilities), (case.key, answer["probabilities"], probabilities)


def close(got: Any, want: Any, tolerance: float = 1e-5) -> bool:
    if isinstance(want, list):
        return (
            isinstance(got, list) and len(got) == len(want) and all(close(g, w) for g, w in zip(got, want, strict=True))
        )
    return math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance)


def run(site: Path, *args: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "lambda_ml_serve.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


KEYS = ["xgb_cat", "lgb_cat", "pipeline", "xgb_multi", "lgb_multi", "forest", "mlflow"]


@pytest.mark.parametrize("key", KEYS)
def test_invoke_answers_client_rows_as_the_library_does(cases, site, client_rows, key, tmp_path):
    case = cases[key]
    rows = rows_for(case, client_rows)
    body = tmp_path / "rows.json"
    body.write_text(json.dumps(rows))
    result = run(site, "invoke", case.model, "--data", body)
    assert result.returncode == 0, result.stderr
    assert_answers_like_the_library(case, json.loads(result.stdout), rows)


@pytest.fixture(scope="module")
def site_on_path(site):
    """``serve`` subprocesses see the installed plugins."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), before) if p)
    yield site
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


def post(url: str, body: str) -> dict:
    request = urllib.request.Request(url, data=body.encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("key", ["xgb_cat", "pipeline", "xgb_multi", "mlflow"])
def test_serve_answers_pandas_bodies(cases, site_on_path, client_rows, key):
    case = cases[key]
    rows = rows_for(case, client_rows)
    frame = pd.DataFrame(rows, columns=case.columns)
    records = frame.to_json(orient="records")
    split = '{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}"
    with serving(case.model) as url:
        for body in (records, split):
            assert_answers_like_the_library(case, post(url + "/", body), rows)


# -- in-process: hypothesis-drawn rows against the library, backend by backend ----------------------


@pytest.fixture(scope="module")
def apps(cases, site) -> dict[str, Any]:
    """Each generated plugin's App, loaded in this process from the installed folder."""
    sys.path.insert(0, str(site))
    from lambda_ml_serve.plugins import build_registry
    from lambda_ml_serve.runtime.app import App

    registry = build_registry()

    loaded = {key: App.load(case.model, registry=registry) for key, case in cases.items()}
    yield loaded
    sys.path.remove(str(site))


def _value(case: Case, column: str, wine: pd.DataFrame) -> st.SearchStrategy:
    if column in case.categories:
        return st.sampled_from([*case.categories[column], "purple"])
    present = wine[column].dropna().unique().tolist()
    return st.sampled_from(present)


@pytest.mark.parametrize("key", KEYS)
def test_drawn_rows_agree_with_the_library(apps, cases, wine, key):
    case, app = cases[key], apps[key]
    nullable = nullable_columns(app, case)

    def row() -> st.SearchStrategy:
        fields = {}
        for column in case.columns:
            value = _value(case, column, wine)
            fields[column] = value | st.none() if column in nullable else value
        return st.fixed_dictionaries(fields)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(rows=st.lists(row(), min_size=1, max_size=5))
    def check(rows):
        response = app(url_event(json.dumps(rows)))
        unknown = any(row[c] is not None and row[c] not in case.categories[c] for row in rows for c in case.categories)
        if unknown and case.refuses_unknown:
            assert response["statusCode"] == 422, response["body"]
            assert "purple" not in response["body"]
            return
        assert response["statusCode"] == 200, response["body"]
        assert_answers_like_the_library(case, json.loads(response["body"]), rows)

    check()


def test_the_documents_show_categories_and_the_classifier_answer(apps):
    pipeline = apps["pipeline"]
    color = pipeline.metadata["input_schema"]["properties"]["color"]
    assert color["anyOf"][0]["x-categories"] == COLOURS
    document = pipeline.openapi
    response = document["components"]["schemas"]["PredictResponse"]
    assert set(response["required"]) == {"model", "version", "predictions", "probabilities", "classes"}
    assert pipeline.metadata["classes"] == GRADES
    xgb = apps["xgb_cat"].metadata["input_schema"]["properties"]["color"]
    assert xgb["anyOf"][0]["enum"] == COLOURS
    v2 = json.loads(apps["xgb_multi"](url_event(None, method="GET", path="/v2/models/tab_xgb_multi"))["body"])
    assert [o["name"] for o in v2["outputs"]] == ["predictions", "probabilities"]
    assert v2["outputs"][1]["parameters"]["classes"] == GRADES


# -- the compiled backend: categorical splits, multi-class sums, binary labels -------------------------


@pytest.mark.parametrize("key", ["xgb_cat", "lgb_cat", "xgb_multi", "lgb_multi", "forest", "pipeline"])
def test_compiled_backend_answers_like_the_library(apps, cases, client_rows, key, tmp_path):
    """``build --backend compiled``'s prepare passes its parity gate and serves the same answers."""
    import platform

    from lambda_ml_serve.backends.compiled import CompiledBackend
    from lambda_ml_serve.runtime.app import App

    arch = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
    case, app = cases[key], apps[key]
    library = CompiledBackend().prepare(app.spec.artifact_path, tmp_path, arch=arch, spec=app.spec)
    compiled = App(app.spec, CompiledBackend().load(library), backend="compiled")
    # Rows arrive in the precision the source library compares in: float64 for LightGBM and the pipeline's
    # HistGradientBoosting (narrowed to the kernel's float32 on the library's side of every split),
    # float32 for XGBoost and the forest (which reads float32 itself).
    float64 = key.startswith("lgb") or key == "pipeline"
    assert compiled.predictor.input_type == ("float64" if float64 else "float32")
    assert compiled.typecode == ("d" if float64 else "f")
    rows = rows_for(case, client_rows)
    response = compiled(url_event(json.dumps(rows)))
    assert response["statusCode"] == 200, response["body"]
    assert_answers_like_the_library(case, json.loads(response["body"]), rows)


# -- MLflow model directories that cannot be served are refused in one line, nothing written ---------


@pytest.mark.parametrize(
    ("mlmodel", "message"),
    [
        (None, "without an MLmodel file"),
        ("flavors:\n  python_function:\n    loader_module: custom\n", "is not served"),
        ("flavors:\n  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n", "'skops'"),
        ("flavors:\n  xgboost:\n    data: ../model.ubj\n", "is not in"),
        ("flavors: [\n", "not a readable MLmodel file"),
        (
            'flavors:\n  lightgbm:\n    data: model.lgb\nsignature:\n  inputs: \'[{"type": "tensor"}]\'\n',
            "tensor signature",
        ),
    ],
)
def test_mlflow_directories_that_cannot_be_served_are_refused_in_one_line(tmp_path, mlmodel, message):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.lgb").write_text("tree\nversion=v4\n")
    if mlmodel is not None:
        (model_dir / "MLmodel").write_text(mlmodel)
    out = tmp_path / "out"
    args = ["new", "--from-model", model_dir, "--model-name", "refused", "--output-dir", out, "--no-input"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists() or not any(out.iterdir())


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200) | st.builds(lambda s: "flavors:\n  " + s, st.text(max_size=120)))
def test_any_mlmodel_text_is_read_or_refused_in_one_line(tmp_path_factory, text):
    from lambda_ml_serve.from_model.mlmodel import read_mlmodel
    from lambda_ml_serve.modelfiles import ModelFileError

    model_dir = tmp_path_factory.mktemp("mlmodel")
    (model_dir / "MLmodel").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        read_mlmodel(model_dir)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(model_dir) in str(exc)


# -- float64 backends: values at split thresholds answer as the library's own predict does -----------


def _thresholds(case: Case, artifact: Path) -> dict[str, set[float]]:
    """Each number column's split thresholds as the library compares them, in the client's units."""
    import joblib
    import lightgbm

    found: dict[str, set[float]] = {c: set() for c in case.columns if c not in case.categories}
    if artifact.read_bytes()[:5] == b"tree\n":  # a LightGBM text model
        dumped = lightgbm.Booster(model_file=str(artifact)).dump_model()
        stack = [tree["tree_structure"] for tree in dumped["tree_info"]]
        while stack:
            node = stack.pop()
            if "split_feature" in node:
                column = case.columns[node["split_feature"]]
                if node["decision_type"] == "<=" and column in found:
                    found[column].add(float(node["threshold"]))
                stack += [node["left_child"], node["right_child"]]
        return found
    estimator = joblib.load(artifact)
    if hasattr(estimator, "estimators_"):  # a forest: scikit-learn's trees, on the raw columns
        for tree in estimator.estimators_:
            for feature, threshold in zip(tree.tree_.feature, tree.tree_.threshold, strict=True):
                if feature >= 0:
                    found[case.columns[feature]].add(float(threshold))
        return found
    # The pipeline: HistGradientBoosting's thresholds are on the scaled columns; x = t * scale + mean.
    pre, model = estimator[:-1], estimator[-1]
    names = list(pre.get_feature_names_out())
    scaler = pre.named_steps["pre"].named_transformers_["numbers"][-1] if "pre" in pre.named_steps else None
    scaler = scaler or estimator.named_steps["pre"].named_transformers_["numbers"][-1]
    for trees in model._predictors:
        for tree in trees:
            for node in tree.nodes:
                if node["is_leaf"] or node["is_categorical"]:
                    continue
                name = names[node["feature_idx"]]
                if name.startswith("numbers__"):
                    j = NUMBERS.index(name.removeprefix("numbers__"))
                    x = float(node["num_threshold"] * scaler.scale_[j] + scaler.mean_[j])
                    found[NUMBERS[j]].add(x)
    return found


def threshold_rows(case: Case, artifact: Path, wine: pd.DataFrame) -> list[dict]:
    """Held-out rows, each with one number set to a threshold or a float64 neighbour of it (values
    float32 cannot hold), missing numbers filled with the column's median."""
    import numpy as np

    held = wine.iloc[TRAIN_ROWS:][case.columns]
    bases = held.fillna(held.median(numeric_only=True)).to_dict(orient="records")
    rows = []
    for column, thresholds in sorted(_thresholds(case, artifact).items()):
        for t in sorted(thresholds):
            for value in (t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf)):
                if float(np.float32(value)) != value and math.isfinite(value):
                    rows.append({**bases[len(rows) % len(bases)], column: value})
    return rows


def _answers(case: Case, answer: Any) -> tuple[list, list | None]:
    """(labels or values, probabilities or None) of a served JSON answer or a v2 one."""
    if "outputs" in answer:
        outputs = {o["name"]: o for o in answer["outputs"]}
        probabilities = outputs.get("probabilities")
        if probabilities is None:
            return outputs["predictions"]["data"], None
        k = probabilities["shape"][1]
        data = probabilities["data"]
        return outputs["predictions"]["data"], [data[i : i + k] for i in range(0, len(data), k)]
    return answer["predictions"], answer.get("probabilities")


def _v2_binary(case: Case, rows: list[dict]) -> tuple[bytes, int]:
    """The rows as a v2 binary request: an FP64 tensor per number, a BYTES tensor per category."""
    import struct

    inputs, chunks = [], []
    for column in case.columns:
        values = [row[column] for row in rows]
        if column in case.categories:
            encoded = [str(v).encode() for v in values]
            chunk, datatype = b"".join(struct.pack("<I", len(e)) + e for e in encoded), "BYTES"
        else:
            chunk, datatype = struct.pack(f"<{len(values)}d", *values), "FP64"
        inputs.append(
            {"name": column, "shape": [len(rows)], "datatype": datatype, "parameters": {"binary_data_size": len(chunk)}}
        )
        chunks.append(chunk)
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(chunks), len(header)


@pytest.mark.parametrize("key", ["lgb_multi", "lgb_cat", "mlflow", "pipeline", "forest"])
def test_values_at_split_thresholds_answer_as_the_library_does(apps, cases, wine, key):
    """LightGBM and scikit-learn compare in float64: values at and beside their split thresholds,
    which float32 cannot hold, get the library's own answer on a DataFrame of the same float64 values
    through the fast path, the full path and v2 FP64 tensors (labels equal, numbers within 1e-12)."""
    import copy

    import numpy as np

    from lambda_ml_serve.local.events import to_event

    case, app = cases[key], apps[key]
    assert app.typecode == "d"
    rows = threshold_rows(case, app.spec.artifact_path, wine)
    assert len(rows) > 20, key
    labels, probabilities = case.library(case.frame(rows))
    want = (labels, probabilities)

    def agrees(got: tuple[list, list | None]) -> None:
        if case.classes is None:
            assert np.allclose(got[0], want[0], rtol=0, atol=1e-12), key
            return
        assert got[0] == want[0], key
        assert np.allclose(got[1], want[1], rtol=0, atol=1e-12), key

    event = url_event(json.dumps(rows))
    assert app.fast is not None and app.fast.batch_of(event) is not None
    full = copy.copy(app)
    full.fast = None
    for served in (app, full):
        response = served(copy.deepcopy(event))
        assert response["statusCode"] == 200, response["body"]
        agrees(_answers(case, json.loads(response["body"])))
    body, length = _v2_binary(case, rows)
    headers = [("content-type", "application/octet-stream"), ("inference-header-content-length", str(length))]
    response = app(to_event("POST", f"/v2/models/{app.spec.name}/infer", headers, body))
    assert response["statusCode"] == 200, response["body"]
    agrees(_answers(case, json.loads(response["body"])))
    csv = "\n".join(
        [
            ",".join(case.columns),
            *(",".join(repr(row[c]) if isinstance(row[c], float) else row[c] for c in case.columns) for row in rows),
        ]
    )
    response = app(to_event("POST", "/", [("content-type", "text/csv")], csv.encode()))
    assert response["statusCode"] == 200, response["body"]
    agrees(_answers(case, json.loads(response["body"])))
    # Explanations are computed on the same float64 values: each row's margin gives its prediction.
    some = rows[: app.explain_max_rows]
    response = app(url_event(json.dumps(some), path="/explain"))
    assert response["statusCode"] == 200, response["body"]
    answer = json.loads(response["body"])
    margins = np.array([row["margin"] for row in answer["explanations"]], dtype=float)
    link = answer["explanation"]["link"]
    if link == "softmax":
        margins = np.exp(margins - margins.max(axis=1, keepdims=True))
        margins /= margins.sum(axis=1, keepdims=True)
    assert link in ("softmax", "identity"), link
    served = np.array(answer["probabilities"] if case.classes is not None else answer["predictions"])
    if margins.ndim == 1 and served.ndim == 2:  # a binary classifier explains its positive class
        served = served[:, -1]
    assert np.allclose(margins, served, rtol=0, atol=1e-9), key
    want = (want[0][: len(some)], None if want[1] is None else want[1][: len(some)])
    agrees(_answers(case, answer))
    if key != "forest":
        # The rows do test the precision: read as float32, as before, the library answers some otherwise.
        narrowed = [{c: float(np.float32(v)) if isinstance(v, float) else v for c, v in row.items()} for row in rows]
        labels32, probabilities32 = case.library(case.frame(narrowed))
        numbers32, numbers = (labels32, labels) if probabilities is None else (probabilities32, probabilities)
        assert not np.allclose(numbers32, numbers, rtol=0, atol=1e-12), key


@pytest.mark.parametrize("key", ["lgb_multi", "lgb_cat", "pipeline"])
def test_compiled_kernel_answers_float64_values_at_split_thresholds_as_the_library(apps, cases, wine, key, tmp_path):
    """The compiled kernel of a LightGBM model, or of a Pipeline before a HistGradientBoosting model,
    takes float64 rows: values at and beside the model's split thresholds, which float32 cannot hold,
    get the library's own answer on both request paths and in explanations, where the same rows read
    as float32 would not."""
    import copy
    import platform

    import numpy as np

    from lambda_ml_serve.backends.compiled import CompiledBackend
    from lambda_ml_serve.runtime.app import App

    arch = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
    case, app = cases[key], apps[key]
    library = CompiledBackend().prepare(app.spec.artifact_path, tmp_path, arch=arch, spec=app.spec)
    compiled = App(app.spec, CompiledBackend().load(library), backend="compiled")
    assert compiled.typecode == "d"
    rows = threshold_rows(case, app.spec.artifact_path, wine)
    labels, probabilities = case.library(case.frame(rows))
    event = url_event(json.dumps(rows))
    assert compiled.fast is not None and compiled.fast.batch_of(event) is not None
    full = copy.copy(compiled)
    full.fast = None

    def agrees(got: tuple[list, list | None], n: int) -> None:
        if case.classes is None:  # a regressor: its values
            assert np.allclose(got[0], labels[:n], rtol=0, atol=1e-9), key
            return
        assert got[0] == labels[:n], key
        assert np.allclose(got[1], probabilities[:n], rtol=0, atol=1e-9), key

    for served in (compiled, full):
        response = served(copy.deepcopy(event))
        assert response["statusCode"] == 200, response["body"]
        agrees(_answers(case, json.loads(response["body"])), len(rows))
    some = rows[: compiled.explain_max_rows]
    response = compiled(url_event(json.dumps(some), path="/explain"))
    assert response["statusCode"] == 200, response["body"]
    agrees(_answers(case, json.loads(response["body"])), len(some))
    # The same rows as float32 values: the library itself answers some of them otherwise.
    narrowed = [{c: float(np.float32(v)) if isinstance(v, float) else v for c, v in row.items()} for row in rows]
    labels32, probabilities32 = case.library(case.frame(narrowed))
    numbers32, numbers = (labels32, labels) if probabilities is None else (probabilities32, probabilities)
    assert not np.allclose(numbers32, numbers, rtol=0, atol=1e-12), key
