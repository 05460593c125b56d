"""The compiled kernel on tabular models: categorical splits, multi-class and binary classifiers.

Each model is trained here on a small frame with a categorical column (pandas ``category``), compiled
for this machine (the parity gate runs inside), loaded through the runtime, and compared with its own
library on rows holding every category, unknown codes (NaN, -1, past the list, fractions) and missing
values: probabilities within 1e-5 and the same labels. The categorical column is sent as its code
into the model's own category list, as the library takes it as a number.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compiled_backend import HOST_ARCH, require, require_toolchain

from lambda_ml_serve.backends.compiled import CompiledBackend, parity
from lambda_ml_serve.backends.compiled.ensemble import read_ensemble
from lambda_ml_serve.errors import CompileError
from lambda_ml_serve.spec import Batch

pytestmark = pytest.mark.slow

COLORS = ["red", "white", "rose", "orange", "green", "blue", "black", "amber"]
#: Codes that are no category of the model: missing, the encoders' -1, past the list, fractions.
ODD_CODES = [float("nan"), -1.0, -0.5, -0.99, -2.0, 1.5, 7.9, 8.0, 9.0, 31.0, 32.0, 33.0, 64.0, 1e6, 3e9]


def require_libraries() -> None:
    require_toolchain()
    for module in ("lightgbm", "sklearn", "pandas"):
        try:
            __import__(module)
        except ImportError:
            require(False, f"needs {module}: pip install -e '.[dev]'")


def frame(n: int = 1500, seed: int = 0):
    """Two numbers (a tenth missing) and a colour; a target and three classes that depend on all three."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "acidity": rng.normal(size=n),
            "sugar": rng.normal(size=n),
            "color": pd.Categorical(rng.choice(COLORS, n), categories=COLORS),
        }
    )
    data.loc[rng.random(n) < 0.1, "acidity"] = np.nan
    code = data["color"].cat.codes.to_numpy()
    target = data["acidity"].fillna(0).to_numpy() + np.isin(code, [1, 4, 6]) * 2.0 + (code == 0) * 1.5
    classes = np.isin(code, [1, 4]).astype(int) + (data["sugar"].to_numpy() > 0.3)
    return data, target, classes


def rows(n: int = 4000, seed: int = 1):
    """A float32 matrix as requests arrive: codes for the colour, NaN for missing, odd codes mixed in."""
    import numpy as np

    rng = np.random.default_rng(seed)
    matrix = np.column_stack(
        [
            rng.normal(scale=1.5, size=n),
            rng.normal(scale=1.5, size=n),
            rng.integers(0, len(COLORS), n).astype(float),
        ]
    ).astype(np.float32)
    numbers = matrix[:, :2]  # a view
    numbers[rng.random((n, 2)) < 0.1] = np.nan
    odd = rng.random(n) < 0.3
    matrix[odd, 2] = rng.choice(np.array(ODD_CODES, dtype=np.float32), int(odd.sum()))
    every = np.array([[0.3, -0.2, c] for c in [*range(len(COLORS)), *ODD_CODES]], dtype=np.float32)
    return np.ascontiguousarray(np.vstack([every, matrix]))


def compiled(artifact: Path, out: Path):
    library = CompiledBackend().prepare(artifact, out, arch=HOST_ARCH)
    return CompiledBackend().load(library)


def answers(predictor, matrix):
    return predictor.predict(Batch(array("f", matrix.tobytes()), *matrix.shape))


def assert_probabilities(predictor, matrix, want, labels) -> None:
    """Probability rows within 1e-5 of the library's, and the library's labels wherever there is no tie."""
    import numpy as np

    got = np.array(answers(predictor, matrix), dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    want = np.column_stack([1 - want, want]) if want.ndim == 1 else want
    assert got.shape == want.shape
    worst = float(np.abs(got - want).max())
    assert worst <= 1e-5, f"probabilities differ by {worst}"
    top = np.sort(want, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-6
    chosen = np.array(predictor.classes)[np.argmax(got, axis=1)]
    assert (chosen[clear] == np.asarray(labels)[clear]).all()
    assert clear.mean() > 0.9


# ----------------------------------------------------------------------------------------- XGBoost


@pytest.fixture(scope="module")
def xgboost_models(tmp_path_factory):
    require_libraries()
    import xgboost

    tmp = tmp_path_factory.mktemp("xgboost-tabular")
    data, target, classes = frame()
    made = {}
    for name, params, label in [
        ("regressor", {"max_depth": 4, "max_cat_to_onehot": 1}, target),
        ("onehot", {"max_depth": 3, "max_cat_to_onehot": 16}, target),
        ("softprob", {"max_depth": 4, "objective": "multi:softprob", "num_class": 3}, classes),
        ("binary", {"max_depth": 4, "objective": "binary:logistic"}, classes > 0),
    ]:
        booster = xgboost.train(params, xgboost.DMatrix(data, label, enable_categorical=True), num_boost_round=30)
        path = tmp / f"{name}.json"
        booster.save_model(str(path))
        made[name] = (booster, compiled(path, tmp / name))
    return made


@pytest.mark.parametrize("name", ["regressor", "onehot"])
def test_xgboost_categorical_regressors_are_bit_identical(xgboost_models, name):
    import numpy as np

    booster, predictor = xgboost_models[name]
    matrix = rows()
    got = np.array(answers(predictor, matrix), dtype=np.float32)
    want = booster.inplace_predict(matrix, validate_features=False)
    assert np.array_equal(got, want), f"{int((got != want).sum())} rows differ"
    assert predictor.metadata["categories"] == {"2": len(COLORS)}
    assert predictor.classes is None


def test_xgboost_codes_are_the_models_own_category_list(xgboost_models):
    """A code is the index into the model's categories: the library on the DataFrame agrees."""
    import numpy as np
    import pandas as pd

    booster, predictor = xgboost_models["regressor"]
    data, _, _ = frame(200, seed=5)
    shuffled = data.assign(color=data["color"].cat.reorder_categories(list(reversed(COLORS))))
    codes = data.assign(color=data["color"].cat.codes.astype(np.float32)).to_numpy(np.float32)
    want = booster.inplace_predict(shuffled)  # XGBoost re-codes a frame's categories to the model's
    assert np.array_equal(np.array(answers(predictor, np.ascontiguousarray(codes)), dtype=np.float32), want)
    assert isinstance(shuffled, pd.DataFrame)


def test_xgboost_multiclass_answers_probabilities_and_labels(xgboost_models):
    import numpy as np

    booster, predictor = xgboost_models["softprob"]
    matrix = rows()
    want = booster.inplace_predict(matrix, validate_features=False)
    assert want.shape == (len(matrix), 3)
    assert_probabilities(predictor, matrix, want, np.argmax(want, axis=1))
    assert predictor.classes == [0, 1, 2] and predictor.metadata["num_output"] == 3


def test_xgboost_binary_classifier_answers_both_classes(xgboost_models):
    booster, predictor = xgboost_models["binary"]
    matrix = rows()
    want = booster.inplace_predict(matrix, validate_features=False)
    assert_probabilities(predictor, matrix, want, (want > 0.5).astype(int))
    assert predictor.classes == [0, 1]


def test_xgboost_softmax_answers_softprob_probabilities(tmp_path):
    """multi:softmax answers class indices; the kernel answers their probabilities, with the same argmax."""
    require_libraries()
    import numpy as np
    import xgboost

    data, _, classes = frame()
    params = {"max_depth": 3, "objective": "multi:softmax", "num_class": 3}
    booster = xgboost.train(params, xgboost.DMatrix(data, classes, enable_categorical=True), num_boost_round=15)
    booster.save_model(str(tmp_path / "softmax.json"))
    predictor = compiled(tmp_path / "softmax.json", tmp_path / "out")
    matrix = rows()
    labels = booster.inplace_predict(matrix, validate_features=False)
    booster.set_param({"objective": "multi:softprob"})
    assert_probabilities(predictor, matrix, booster.inplace_predict(matrix, validate_features=False), labels)
    assert np.array_equal(labels, labels.astype(int))


# ---------------------------------------------------------------------------------------- LightGBM


@pytest.fixture(scope="module")
def lightgbm_models(tmp_path_factory):
    require_libraries()
    import lightgbm

    tmp = tmp_path_factory.mktemp("lightgbm-tabular")
    data, target, classes = frame()
    params = {"verbose": -1, "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1, "num_leaves": 15}
    made = {}
    for name, extra, label in [
        ("regressor", {}, target),
        ("multiclass", {"objective": "multiclass", "num_class": 3}, classes),
        ("binary", {"objective": "binary"}, classes > 0),
    ]:
        booster = lightgbm.train(params | extra, lightgbm.Dataset(data, label), num_boost_round=30)
        path = tmp / f"{name}.txt"
        booster.save_model(str(path))
        made[name] = (lightgbm.Booster(model_file=str(path)), compiled(path, tmp / name))
    return made


def test_lightgbm_categorical_regressor(lightgbm_models):
    import numpy as np

    booster, predictor = lightgbm_models["regressor"]
    matrix = rows()
    got, want = np.array(answers(predictor, matrix)), booster.predict(matrix, num_threads=1)
    assert float(np.abs(got - want).max()) <= 1e-9
    assert predictor.metadata["categories"] == {"2": len(COLORS)}


@pytest.mark.parametrize("name", ["multiclass", "binary"])
def test_lightgbm_classifiers_answer_probabilities_and_labels(lightgbm_models, name):
    import numpy as np

    booster, predictor = lightgbm_models[name]
    matrix = rows()
    want = booster.predict(matrix, num_threads=1)
    labels = np.argmax(want, axis=1) if want.ndim == 2 else (want > 0.5).astype(int)
    assert_probabilities(predictor, matrix, want, labels)


def test_lightgbm_reads_negative_and_fractional_codes_its_own_way(lightgbm_models):
    """-0.5 truncates to category 0 in LightGBM (XGBoost: no category); -1 and NaN are no category."""
    import numpy as np

    booster, predictor = lightgbm_models["regressor"]
    matrix = np.array([[0.1, 0.2, c] for c in (0.0, -0.5, -0.99, -1.0, float("nan"), 1.0, 1.7)], dtype=np.float32)
    want = booster.predict(matrix, num_threads=1)
    assert want[0] == want[1] == want[2] and want[5] == want[6]
    assert np.abs(np.array(answers(predictor, matrix)) - want).max() <= 1e-9


def assert_walks_to_own_leaf(predictor) -> None:
    from lambda_ml_serve.backends.compiled import codegen

    assert predictor.metadata["layout"] == "node" and predictor.metadata["depth"] >= 15
    assert predictor.metadata["layout_reason"].endswith(
        f"; each row to its own leaf (trees deeper than {codegen.FULL_WALK_DEPTH})"
    )


#: Batches around the early-exit block size, single rows, and every row at once.
DEEP_BATCHES = [(0, 1), (5, 1), (0, 2), (0, 511), (0, 512), (1, 513), (0, 4000)]


@pytest.mark.parametrize("objective", ["regression", "multiclass"])
def test_deep_leaf_wise_trees_stop_each_row_at_its_own_leaf(objective, tmp_path):
    """Deep, unbalanced LightGBM trees with a categorical split and missing values: the node layout's walks
    (one row alone, and blocks whose rows leave at their own leaves, one sum or one per class) answer
    what LightGBM answers, in batches around the block size and in one batch of every row."""
    require_libraries()
    import lightgbm
    import numpy as np

    from lambda_ml_serve.backends.compiled import codegen

    data, target, classes = frame(4000)
    params = {"verbose": -1, "num_threads": 1, "num_leaves": 127, "min_data_in_leaf": 2, "min_data_per_group": 5}
    if objective == "multiclass":
        params |= {"objective": "multiclass", "num_class": 3}
        target = classes
    booster = lightgbm.train(params, lightgbm.Dataset(data, target), num_boost_round=20)
    booster.save_model(str(tmp_path / "deep.txt"))
    predictor = compiled(tmp_path / "deep.txt", tmp_path / "out")
    assert_walks_to_own_leaf(predictor)
    assert codegen.NODE_BLOCK == 512
    matrix = rows()
    want = booster.predict(matrix, num_threads=1)
    for start, size in DEEP_BATCHES:
        got = np.array(answers(predictor, np.ascontiguousarray(matrix[start : start + size])))
        assert float(np.abs(got - want[start : start + size]).max()) <= 1e-9, (start, size)


def test_deep_forest_adds_class_frequencies_at_each_rows_own_leaf(tmp_path):
    """A forest of unbounded trees holds one value per class in each leaf: a row stopping above its leaf
    adds nothing, at its leaf the whole row of frequencies, as scikit-learn averages them."""
    require_libraries()
    import joblib
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    data, _, classes = frame(4000)
    features = data.assign(color=data["color"].cat.codes).fillna(0).to_numpy(np.float64)
    forest = RandomForestClassifier(n_estimators=15, min_samples_leaf=1, random_state=0).fit(features, classes)
    joblib.dump(forest, tmp_path / "forest.joblib")
    predictor = compiled(tmp_path / "forest.joblib", tmp_path / "out")
    assert_walks_to_own_leaf(predictor)
    matrix = np.nan_to_num(rows(), nan=0.0)
    want = forest.predict_proba(matrix.astype(np.float64))
    for start, size in DEEP_BATCHES:
        part = np.ascontiguousarray(matrix[start : start + size])
        assert_probabilities(predictor, part, want[start : start + size], forest.predict(part.astype(np.float64)))


def test_node_links_name_each_inner_nodes_children_and_which_are_leaves(tmp_path):
    """The node layout's link: left child index x 4, +1 when it is a leaf, +2 when the right one is."""
    require_libraries()
    import lightgbm
    import numpy as np

    from lambda_ml_serve.backends.compiled import codegen

    data, target, _ = frame()
    booster = lightgbm.train({"verbose": -1, "num_leaves": 31}, lightgbm.Dataset(data, target), num_boost_round=3)
    booster.save_model(str(tmp_path / "small.txt"))
    for tree in read_ensemble(tmp_path / "small.txt", None).trees:
        tables = codegen._node_tables(tree)
        link = tables["link"]
        # A leaf's link points to itself minus one; an inner node's left child comes after it.
        leaf = (link >> 2) + 1 == np.arange(len(link))
        leaf[0] = len(link) == 1
        for node in range(len(link)):
            if leaf[node]:
                continue
            left = link[node] >> 2
            assert 0 < left < len(link) - 1
            assert (link[node] & 1, link[node] >> 1 & 1) == (leaf[left], leaf[left + 1])
        assert leaf.sum() == (~leaf).sum() + 1  # every inner node has two children, every other node is one


# ------------------------------------------------------------------------------------ scikit-learn


@pytest.mark.parametrize("kind", ["RandomForestClassifier", "ExtraTreesClassifier", "GradientBoostingClassifier"])
def test_sklearn_multiclass_and_binary_forests(kind, tmp_path):
    require_libraries()
    import joblib
    import numpy as np
    from sklearn import ensemble

    data, _, classes = frame()
    features = data.assign(color=data["color"].cat.codes).fillna(0).to_numpy(np.float64)
    names = np.array(["dry", "medium", "sweet"])[classes]
    for label in (names, names == "dry"):
        estimator = getattr(ensemble, kind)(n_estimators=20, max_depth=6, random_state=0).fit(features, label)
        path = tmp_path / f"{kind}-{len(estimator.classes_)}.joblib"
        joblib.dump(estimator, path)
        predictor = compiled(path, tmp_path / path.stem)
        matrix = np.nan_to_num(rows(), nan=0.0)  # trained without missing values: scikit-learn refuses them
        wide = matrix.astype(np.float64)
        assert_probabilities(predictor, matrix, estimator.predict_proba(wide), estimator.predict(wide))
        assert predictor.classes == estimator.classes_.tolist()


# ------------------------------------------------------------------------------ the parity gate


def test_parity_rows_hold_every_category_and_unknown_codes(tmp_path):
    require_libraries()
    import numpy as np
    import xgboost

    data, target, _ = frame()
    booster = xgboost.train({"max_depth": 3}, xgboost.DMatrix(data, target, enable_categorical=True), 5)
    booster.save_model(str(tmp_path / "m.json"))
    ensemble = read_ensemble(tmp_path / "m.json", None)
    matrix, _ = parity.parity_rows(ensemble, None)
    column = matrix[:, 2]
    seen = set(column[~np.isnan(column)].tolist())
    assert set(range(len(COLORS))) <= seen and {-1.0, -0.5, 8.0, 1e6} <= seen and np.isnan(column).any()
    assert (column == -1.0).sum() > 50 and (column < len(COLORS)).mean() > 0.7


def test_parity_gate_compares_labels_too(tmp_path):
    """Probabilities within the tolerance are not enough: a library answering other labels fails the gate."""
    require_libraries()
    import dataclasses

    import lightgbm
    import numpy as np

    data, _, classes = frame()
    params = {"verbose": -1, "objective": "multiclass", "num_class": 3, "min_data_per_group": 5}
    booster = lightgbm.train(params, lightgbm.Dataset(data, classes), num_boost_round=10)
    booster.save_model(str(tmp_path / "m.txt"))
    library = CompiledBackend().prepare(tmp_path / "m.txt", tmp_path / "out", arch=HOST_ARCH)
    real = read_ensemble(tmp_path / "m.txt", None)
    assert parity.check_parity(CompiledBackend().load(library), real, None) <= 1e-9
    wrong = dataclasses.replace(real, label_reference=lambda matrix: np.full(len(matrix), 2))
    with pytest.raises(parity.ParityError, match=r"answers another class than lightgbm on \d+ of \d+ rows; first at"):
        parity.check_parity(CompiledBackend().load(library), wrong, None)


# --------------------------------------------------------------------------------- property tests


def test_any_codes_and_missing_values_match_the_libraries(xgboost_models, lightgbm_models):
    """Hypothesis rows: random categories, unknown codes and missing values, in any batch size."""
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    numbers = st.floats(-4, 4, width=32) | st.just(float("nan"))
    codes = st.integers(0, len(COLORS) - 1).map(float) | st.sampled_from(ODD_CODES) | st.floats(width=32)
    row = st.tuples(numbers, numbers, codes)

    @settings(max_examples=80, deadline=None)
    @given(st.lists(row, min_size=1, max_size=260))
    def check(batch):
        matrix = np.array(batch, dtype=np.float32)
        booster, predictor = xgboost_models["softprob"]
        want = booster.inplace_predict(matrix, validate_features=False)
        assert np.abs(np.array(answers(predictor, matrix)) - want).max() <= 1e-5
        booster, predictor = lightgbm_models["multiclass"]
        want = booster.predict(matrix, num_threads=1)
        assert np.abs(np.array(answers(predictor, matrix)) - want).max() <= 1e-5
        booster, predictor = xgboost_models["regressor"]
        got = np.array(answers(predictor, matrix), dtype=np.float32)
        assert np.array_equal(got, booster.inplace_predict(matrix, validate_features=False))

    check()


# ------------------------------------------------------------------------- scikit-learn Pipelines

SWEETNESS = ["dry", "medium", "sweet", "luscious"]
PIPELINE_FIELDS = ["acidity", "sugar", "color", "sweetness", "unused"]


def pipeline_frame(n: int = 1200, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "acidity": rng.normal(7, 1, n),
            "sugar": rng.gamma(2, 3, n),
            "color": rng.choice(COLORS[:3], n),
            "sweetness": rng.choice(SWEETNESS, n),
            "unused": rng.normal(size=n),
        }
    )
    data.loc[rng.random(n) < 0.1, "acidity"] = np.nan
    target = (data["sugar"] > 6).astype(int) + (data["color"] == "red") + (data["sweetness"] == "sweet")
    return data, np.array(["low", "mid", "high", "top"])[target]


def make_pipeline_model(estimator):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["sweetness"]),
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["acidity"]),
            ("range", MinMaxScaler(), ["sugar"]),
            ("gone", "drop", ["unused"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", estimator)])


def pipeline_rows(n: int = 3000, seed: int = 3):
    """The kernel's input: the pipeline's fields in order, categories as codes (-1 unknown), NaN missing."""
    import numpy as np

    rng = np.random.default_rng(seed)
    matrix = np.column_stack(
        [
            rng.normal(7, 1.5, n),
            rng.gamma(2, 3, n),
            rng.integers(0, 3, n),
            rng.integers(0, len(SWEETNESS), n),
            rng.normal(size=n),
        ]
    ).astype(np.float32)
    matrix[rng.random(n) < 0.1, 0] = np.nan
    for j in (2, 3):
        odd = rng.random(n) < 0.15
        matrix[odd, j] = rng.choice(np.array([-1.0, np.nan, 9.0], dtype=np.float32), int(odd.sum()))
    return matrix


@pytest.fixture(scope="module")
def pipeline_model(tmp_path_factory):
    require_libraries()
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    tmp = tmp_path_factory.mktemp("pipeline")
    data, labels = pipeline_frame()
    pipeline = make_pipeline_model(HistGradientBoostingClassifier(max_iter=25, random_state=0)).fit(data, labels)
    joblib.dump(pipeline, tmp / "pipeline.joblib")
    return pipeline, compiled(tmp / "pipeline.joblib", tmp / "out")


def as_frame(predictor, matrix):
    """The DataFrame a client of the original pipeline sends for the same rows (unknown: an unseen string)."""
    import numpy as np
    import pandas as pd

    data = {}
    for j, name in enumerate(PIPELINE_FIELDS):
        column = matrix[:, j].astype(np.float64)
        if name in ("color", "sweetness"):
            names = sorted(COLORS[:3] if name == "color" else SWEETNESS)  # the encoders' categories_
            cells = [
                np.nan if np.isnan(v) else (names[int(v)] if 0 <= v < len(names) else "never seen") for v in column
            ]
            data[name] = pd.Series(cells, dtype=object)
        else:
            data[name] = column
    return pd.DataFrame(data)


def test_pipeline_is_folded_into_the_kernel(pipeline_model):
    """OneHotEncoder, OrdinalEncoder, SimpleImputer + StandardScaler, MinMaxScaler and drop: no scikit-learn left."""
    pipeline, predictor = pipeline_model
    matrix = pipeline_rows()
    frame = as_frame(predictor, matrix)
    assert_probabilities(predictor, matrix, pipeline.predict_proba(frame), pipeline.predict(frame))
    assert predictor.feature_names == tuple(PIPELINE_FIELDS)
    assert predictor.classes == ["high", "low", "mid", "top"]
    assert predictor.metadata["categories"] == {"2": 3, "3": len(SWEETNESS)}


def test_pipeline_rows_from_hypothesis(pipeline_model):
    import numpy as np
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pipeline, predictor = pipeline_model
    number = st.floats(-50, 50, width=32) | st.just(float("nan"))
    code = st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.0, float("nan"), 7.0])
    row = st.tuples(number, number, code, code, number)

    @settings(max_examples=40, deadline=None)
    @given(st.lists(row, min_size=1, max_size=200))
    def check(batch):
        matrix = np.array(batch, dtype=np.float32)
        matrix[:, 2] = np.where(matrix[:, 2] == 3.0, -1.0, matrix[:, 2])  # colour has three categories
        got = np.array(answers(predictor, matrix))
        assert np.abs(got - pipeline.predict_proba(as_frame(predictor, matrix))).max() <= 1e-5

    check()


def test_random_forest_pipeline_binary(tmp_path):
    require_libraries()
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    data, labels = pipeline_frame()
    forest = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0)
    pipeline = make_pipeline_model(forest).fit(data, labels == "top")
    joblib.dump(pipeline, tmp_path / "forest.joblib")
    predictor = compiled(tmp_path / "forest.joblib", tmp_path / "out")
    matrix = pipeline_rows()
    frame = as_frame(predictor, matrix)
    assert_probabilities(predictor, matrix, pipeline.predict_proba(frame), pipeline.predict(frame))
    assert predictor.classes == [False, True]


def test_a_step_the_kernel_cannot_compute_is_named(tmp_path):
    require_libraries()
    import joblib
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    data, _ = pipeline_frame(200)
    prep = ColumnTransformer([("logs", FunctionTransformer(np.log1p), ["sugar"])])
    pipeline = Pipeline([("prep", prep), ("model", GradientBoostingRegressor(n_estimators=3))])
    pipeline.fit(data, data["acidity"].fillna(0))
    joblib.dump(pipeline, tmp_path / "p.joblib")
    with pytest.raises(
        CompileError, match=r"p\.joblib: step 'logs' is a FunctionTransformer, which the compiled"
    ) as caught:
        CompiledBackend().prepare(tmp_path / "p.joblib", tmp_path / "out", arch=HOST_ARCH)
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ float64 rows (lms_narrow)


@pytest.fixture(scope="module")
def narrowing(tmp_path_factory):
    """A LightGBM model's library (float64 rows), its ``lms_narrow`` and its features' split points."""
    require_libraries()
    import ctypes

    import lightgbm

    folder = tmp_path_factory.mktemp("narrow")
    data, target, _ = frame(3000)
    data = data.assign(acidity=data["acidity"].round(2), sugar=data["sugar"].round(1))
    booster = lightgbm.train({"verbose": -1, "num_leaves": 31}, lightgbm.Dataset(data, target), num_boost_round=30)
    booster.save_model(str(folder / "m.txt"))
    library = CompiledBackend().prepare(folder / "m.txt", folder / "out", arch=HOST_ARCH)
    narrow = ctypes.CDLL(str(library)).lms_narrow
    narrow.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    ensemble = read_ensemble(folder / "m.txt", None)
    return booster, CompiledBackend().load(library), narrow, ensemble.boundaries


def test_a_lightgbm_library_takes_float64_rows_and_answers_lightgbms_float64_predict(narrowing):
    import numpy as np

    booster, predictor, _, points = narrowing
    assert predictor.input_type == "float64" and len(points[0]) > 10 and len(points[2]) == 0  # colour: codes
    rng = np.random.default_rng(3)
    # Values as clients write them (two decimals), at the split points and the doubles just below them.
    matrix = rows(6000).astype(np.float64)
    matrix[:2000, 0] = rng.normal(scale=1.5, size=2000).round(2)
    matrix[2000:4000, 0] = rng.choice(points[0], 2000)
    matrix[4000:6000, 1] = np.nextafter(rng.choice(points[1], 2000), -np.inf)
    want = booster.predict(matrix, num_threads=1)
    got = np.array(predictor.predict(Batch(array("d", matrix.tobytes()), *matrix.shape)))
    assert float(np.abs(got - want).max()) <= 1e-9
    # Read as float32 (as the app once packed them), some rows go the other way at a split.
    narrowed = np.array(answers(predictor, matrix.astype(np.float32)))
    assert float(np.abs(narrowed - want).max()) > 1e-6


def _float32_neighbours(x: float) -> tuple[float, float]:
    import numpy as np

    with np.errstate(over="ignore"):
        nearest = np.float32(x)
    below = nearest if float(nearest) <= x else np.nextafter(nearest, np.float32(-np.inf))
    above = nearest if float(nearest) >= x else np.nextafter(nearest, np.float32(np.inf))
    return float(below), float(above)


def _sides(value: float, points) -> list[bool]:
    return [value < p for p in points.tolist()]


@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_narrowing_keeps_every_value_on_its_side_of_every_split(narrowing, data):
    """lms_narrow's float32 is one of the value's two float32 neighbours, on the value's side of every
    split point of its feature whenever one of them is; NaN stays NaN, infinities stay."""
    import math

    import numpy as np

    *_, narrow, points = narrowing
    j = data.draw(st.sampled_from([0, 1]))
    near = st.sampled_from(points[j].tolist()).flatmap(
        lambda p: st.integers(-3, 3).map(lambda k: float(np.nextafter(p, np.inf if k > 0 else -np.inf) if k else p))
    )
    values = data.draw(
        st.lists(near | st.floats(allow_nan=True, allow_infinity=True) | st.floats(-3, 3), min_size=3, max_size=3)
    )
    row = array("d", [0.0, 0.0, 1.0])
    row[j] = values[0]
    out = array("f", bytes(12))
    for x in values:
        row[j] = x
        narrow(row.buffer_info()[0], 3, out.buffer_info()[0])
        y = out[j]
        if math.isnan(x):
            assert math.isnan(y)
            continue
        below, above = _float32_neighbours(x)
        assert y in (below, above), (x, y)
        want = _sides(x, points[j])
        if _sides(below, points[j]) == want or _sides(above, points[j]) == want:
            assert _sides(y, points[j]) == want, (x, y)
