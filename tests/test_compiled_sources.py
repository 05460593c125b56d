"""The compiled backend's kernel on every source it reads: XGBoost, LightGBM and scikit-learn ensembles.

Every model is trained here, compiled for this machine, and compared with its own library's
predictions on rows this test builds (random values, missing values where the library takes them);
XGBoost models must be bit-identical. Needs the compiled extra plus lightgbm and scikit-learn
(``pip install -e ".[dev]"``) and gcc; skipped locally without them, failing under ``CI``.
"""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import pytest
from conftest import LEGACY_MODELS, shared_file
from pydantic import ConfigDict, create_model
from test_compiled_backend import HOST_ARCH, require, require_toolchain

from lambda_ml_serve.backends.compiled import CompiledBackend, codegen
from lambda_ml_serve.errors import CompileError
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.spec import Batch, ModelSpec

N_FEATURES = 5

pytestmark = pytest.mark.slow


def require_libraries() -> None:
    require_toolchain()
    for module in ("lightgbm", "sklearn", "joblib"):
        try:
            __import__(module)
        except ImportError:
            require(False, f"needs {module}: pip install -e '.[dev]'")


def training_data(n: int = 400, *, missing: bool = False):
    import numpy as np

    rng = np.random.default_rng(3)
    features = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    target = features[:, 0] * 2 + np.sin(features[:, 1] * 3) + features[:, 2] * features[:, 3]
    if missing:
        features[rng.random(features.shape) < 0.1] = np.nan
    return features, target, (target > np.median(target)).astype(int)


def check_rows(*, missing: bool):
    """Rows built here: random values over the training range, a tenth missing when asked."""
    import numpy as np

    rng = np.random.default_rng(11)
    rows = rng.normal(scale=1.5, size=(3000, N_FEATURES)).astype(np.float32)
    if missing:
        rows[rng.random(rows.shape) < 0.1] = np.nan
        rows[0] = np.nan
    return rows


def compile_model(artifact: Path, out: Path, spec: ModelSpec | None = None):
    library = CompiledBackend().prepare(artifact, out, arch=HOST_ARCH, spec=spec)
    assert sorted(p.name for p in out.iterdir()) == ["model.so"]
    return CompiledBackend().load(library)


def predict(predictor, rows, *, scores: bool = True):
    batch = Batch(array("f", rows.tobytes()), *rows.shape)
    return predictor.scores(batch) if scores else predictor.predict(batch)


def assert_close(got, want, tolerance: float = 1e-4) -> None:
    import numpy as np

    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64).reshape(-1)
    assert got.shape == want.shape
    worst = float(np.max(np.abs(got - want)))
    assert worst <= tolerance, f"compiled differs from the library by {worst}"


def spec_for(backend: str, *, extra: dict | None = None, nullable: bool = True) -> ModelSpec:
    """A spec for the trained model: fields f0..f4, optional when ``nullable``."""
    kind = float | None if nullable else float
    fields = {f"f{j}": (kind, None if nullable else ...) for j in range(N_FEATURES)}
    schema = create_model("Row", __config__=ConfigDict(extra="forbid"), **fields)
    return ModelSpec(
        name="trained",
        version="1.0.0",
        backend=backend,
        package="lambda_ml_serve",
        artifact="unused",
        schema=schema,
        example=[{f"f{j}": 0.5 for j in range(N_FEATURES)}],
        extra=extra or {},
    )


# ----------------------------------------------------------------------------------------- XGBoost


@pytest.mark.parametrize("which", ["wine", "1.6.2"])
def test_xgboost_regressors_are_bit_identical(which, tmp_path):
    require_toolchain()
    import numpy as np
    import xgboost

    spec = get_registry().model("wine_quality").spec
    artifact = spec.artifact_path if which == "wine" else shared_file(LEGACY_MODELS[which])
    predictor = compile_model(artifact, tmp_path, spec)
    booster = xgboost.Booster(model_file=str(artifact))
    rng = np.random.default_rng(5)
    rows = np.abs(rng.normal(scale=3, size=(5000, 13))).astype(np.float32)
    rows[:, 7] = rng.uniform(0.98, 1.01, 5000)  # density, where the trees split it
    # Missing values only in the second block of 128 rows, then everywhere: both walks, side by side.
    rows[128:256][rng.random((128, 13)) < 0.05] = np.nan
    rows[1000:][rng.random((4000, 13)) < 0.05] = np.nan
    got = np.array(predict(predictor, rows), dtype=np.float32)
    want = booster.inplace_predict(rows, validate_features=False)
    assert np.array_equal(got, want), f"{int((got != want).sum())} rows differ, by up to {np.abs(got - want).max()}"
    # One row at a time takes the row walk.
    one_by_one = [predict(predictor, rows[i : i + 1])[0] for i in (*range(120, 140), *range(1000, 1020))]
    assert np.array_equal(np.array(one_by_one, dtype=np.float32), want[[*range(120, 140), *range(1000, 1020)]])


def test_xgboost_binary_logistic_classifier(tmp_path):
    require_toolchain()
    import numpy as np
    import xgboost

    features, _, labels = training_data(missing=True)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.3},
        xgboost.DMatrix(features, label=labels),
        num_boost_round=40,
    )
    artifact = tmp_path / "classifier.ubj"
    booster.save_model(str(artifact))
    predictor = compile_model(artifact, tmp_path / "out")
    rows = check_rows(missing=True)
    got = np.array(predict(predictor, rows), dtype=np.float32)
    want = booster.inplace_predict(rows)
    assert want.min() < 0.1 and want.max() > 0.9  # a real classifier, both classes seen
    assert_close(got, want, 1e-6)
    assert predictor.metadata["source"]["backend"] == "xgboost"


# ---------------------------------------------------------------------------------------- LightGBM


def train_lightgbm(tmp_path: Path, objective: str, **params) -> tuple[Path, object]:
    import lightgbm

    features, target, labels = training_data(missing=True)
    booster = lightgbm.train(
        {"objective": objective, "verbose": -1, "num_threads": 1, **params},
        lightgbm.Dataset(features, labels if objective == "binary" else target),
        num_boost_round=60,
    )
    artifact = tmp_path / f"{objective}.txt"
    booster.save_model(str(artifact))
    return artifact, lightgbm.Booster(model_file=str(artifact))


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_lightgbm_models_predict_what_lightgbm_predicts(objective, tmp_path):
    require_libraries()
    artifact, booster = train_lightgbm(tmp_path, objective, num_leaves=31, min_data_in_leaf=5)
    predictor = compile_model(artifact, tmp_path / "out", spec_for("lightgbm"))
    for missing in (False, True):
        rows = check_rows(missing=missing)
        assert_close(predict(predictor, rows), booster.predict(rows))
    assert predictor.metadata["source"] | {"sha256": None} == {
        "file": artifact.name,
        "backend": "lightgbm",
        "sha256": None,
        "lightgbm": __import__("lightgbm").__version__,
    }


def test_deep_leaf_wise_trees_use_the_node_layout(tmp_path):
    """Unbalanced trees this deep would pad to thousands of leaves each: only the node layout is tried."""
    require_libraries()
    artifact, booster = train_lightgbm(
        tmp_path, "regression", num_leaves=200, min_data_in_leaf=1, max_depth=-1, min_sum_hessian_in_leaf=0
    )
    predictor = compile_model(artifact, tmp_path / "out")
    assert predictor.metadata["depth"] >= 12
    assert predictor.metadata["layout"] == "node"
    assert predictor.metadata["layout_reason"].startswith("node: padding")
    assert_close(predict(predictor, check_rows(missing=True)), booster.predict(check_rows(missing=True)))


def test_layout_choice_is_recorded_and_reproducible(tmp_path, capfd):
    """The layout follows from the trees' shapes: two builds give the same bytes, and say why."""
    require_toolchain()
    import hashlib

    spec = get_registry().model("wine_quality").spec
    predictor = compile_model(spec.artifact_path, tmp_path / "a", spec)
    metadata = predictor.metadata
    assert metadata["layout"] == "level" and "layout_ms" not in metadata
    assert metadata["layout_reason"] == (
        "level: walking every tree to depth 5 takes 1.00x the steps of each tree's own depth (at most 1.1)"
    )
    assert (metadata["trees"], metadata["depth"]) == (553, 5)
    printed = capfd.readouterr().err
    assert f"layout {metadata['layout_reason']}" in printed and "553 trees, depth 5" in printed
    compile_model(spec.artifact_path, tmp_path / "b", spec)
    first, second = ((tmp_path / d / "model.so").read_bytes() for d in "ab")
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


# ------------------------------------------------------------------------------------ scikit-learn


def sklearn_models():
    from sklearn import ensemble

    return {
        "RandomForestRegressor": ensemble.RandomForestRegressor(n_estimators=30, max_depth=8, random_state=0),
        "ExtraTreesRegressor": ensemble.ExtraTreesRegressor(n_estimators=30, max_depth=8, random_state=0),
        "GradientBoostingRegressor": ensemble.GradientBoostingRegressor(n_estimators=50, random_state=0),
        "HistGradientBoostingRegressor": ensemble.HistGradientBoostingRegressor(max_iter=50, random_state=0),
        "RandomForestClassifier": ensemble.RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0),
        "ExtraTreesClassifier": ensemble.ExtraTreesClassifier(n_estimators=30, random_state=0),
        "GradientBoostingClassifier": ensemble.GradientBoostingClassifier(n_estimators=50, random_state=0),
        "HistGradientBoostingClassifier": ensemble.HistGradientBoostingClassifier(max_iter=50, random_state=0),
    }


def dump(estimator, path: Path) -> Path:
    import joblib

    joblib.dump(estimator, path)
    return path


@pytest.mark.parametrize("kind", list(sklearn_models()))
def test_sklearn_ensembles_predict_what_sklearn_predicts(kind, tmp_path):
    require_libraries()
    import numpy as np

    estimator = sklearn_models()[kind]
    # HistGradientBoosting learns where missing values go; the others are trained without any.
    takes_missing = kind.startswith("Hist")
    features, target, labels = training_data(missing=takes_missing)
    classifier = kind.endswith("Classifier")
    estimator.fit(features.astype(np.float64), labels if classifier else target)
    artifact = dump(estimator, tmp_path / "model.joblib")
    spec = spec_for("sklearn", extra={"predict_proba": True} if classifier else None, nullable=takes_missing)
    predictor = compile_model(artifact, tmp_path / "out", spec)
    rows = check_rows(missing=takes_missing)
    wide = rows.astype(np.float64)
    if classifier:
        probabilities = estimator.predict_proba(wide)
        assert_close(predict(predictor, rows), probabilities[:, 1])
        answered = predict(predictor, rows, scores=False)
        # As close as the build's own check of a prepared artifact asks (relative 1e-6), near 0 and 1 too.
        assert np.allclose(np.array(answered), probabilities, rtol=1e-6, atol=1e-9)
        assert predictor.classes == [0, 1]
    else:
        assert_close(predict(predictor, rows), estimator.predict(wide))
    assert predictor.metadata["source"]["backend"] == "sklearn"


def test_sklearn_classifier_answers_probabilities_of_its_labels(tmp_path):
    """A classifier answers its classes' probabilities with the classes named; the App picks the label."""
    require_libraries()
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    features, _, labels = training_data()
    names = np.array(["low", "high"])[labels]
    estimator = RandomForestClassifier(n_estimators=25, random_state=1).fit(features.astype(np.float64), names)
    predictor = compile_model(dump(estimator, tmp_path / "m.joblib"), tmp_path / "out", spec_for("sklearn"))
    rows = check_rows(missing=False)
    proba = estimator.predict_proba(rows.astype(np.float64))
    got = np.array(predict(predictor, rows, scores=False))
    assert predictor.classes == predictor.metadata["classes"] == ["high", "low"]
    assert np.allclose(got, proba, rtol=1e-6, atol=1e-9)
    clear = np.abs(proba[:, 0] - proba[:, 1]) > 1e-9  # ties aside, where rounding may pick either
    chosen = np.array(predictor.classes)[np.argmax(got, axis=1)]
    assert clear.sum() > 2500 and (chosen[clear] == estimator.predict(rows.astype(np.float64))[clear]).all()


# -------------------------------------------------------------------------------------- refusals


def refuses(artifact: Path, out: Path, pattern: str, spec: ModelSpec | None = None) -> None:
    with pytest.raises(CompileError, match=pattern) as caught:
        CompiledBackend().prepare(artifact, out, arch=HOST_ARCH, spec=spec)
    message = str(caught.value)
    assert "\n" not in message and artifact.name in message, message
    assert not out.exists()


def test_refusals_name_the_file_and_what_is_unsupported(tmp_path):
    require_libraries()
    import lightgbm
    import numpy as np
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, target, _ = training_data()
    booster = lightgbm.train(
        {"objective": "multiclassova", "num_class": 3, "verbose": -1},
        lightgbm.Dataset(
            features, (target > np.quantile(target, 0.33)).astype(int) + (target > np.quantile(target, 0.66))
        ),
        num_boost_round=3,
    )
    booster.save_model(str(tmp_path / "ova.txt"))
    refuses(tmp_path / "ova.txt", tmp_path / "o1", r"ova\.txt ends with treelite's 'multiclass_ova' transformation")

    pipeline = make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=3)).fit(features, target)
    refuses(dump(pipeline, tmp_path / "pipeline.joblib"), tmp_path / "o3", r"fitted without column names")

    (tmp_path / "notes.txt").write_text("not a model\n")
    refuses(tmp_path / "notes.txt", tmp_path / "o5", r"neither an XGBoost model .* nor a joblib file")


def test_the_spec_backend_decides_how_the_artifact_is_read(tmp_path):
    require_libraries()
    artifact, _ = train_lightgbm(tmp_path, "regression")
    # A LightGBM text model named by an XGBoost spec is read, and refused, as XGBoost.
    refuses(artifact, tmp_path / "out", r"cannot read .*regression\.txt as an XGBoost model", spec_for("xgboost"))
    refuses(artifact, tmp_path / "out", r"uses backend 'onnx'; the compiled backend compiles", spec_for("onnx"))


def test_generated_source_is_exact_and_self_contained(tmp_path):
    """Thresholds and leaves are written as hexadecimal literals: the C holds the model's exact floats."""
    require_toolchain()
    from lambda_ml_serve.backends.compiled.ensemble import read_ensemble

    spec = get_registry().model("wine_quality").spec
    ensemble = read_ensemble(spec.artifact_path, spec)
    source = codegen.render(ensemble, "level", {"format": 2, "note": 'a "quoted" ?? value'})
    assert "#include <math.h>" in source and "0x1." in source
    literal = source.split('return "', 1)[1].split('";', 1)[0]
    # C's \? (written so that ?? starts no trigraph) is no Python escape: undo it before decoding.
    assert json.loads(literal.replace("\\?", "?").encode().decode("unicode_escape")) == {
        "format": 2,
        "note": 'a "quoted" ?? value',
    }
    assert len(ensemble.trees) == 553 and ensemble.max_depth() == 5


# ------------------------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def wine_kernel(tmp_path_factory):
    require_toolchain()
    spec = get_registry().model("wine_quality").spec
    return compile_model(spec.artifact_path, tmp_path_factory.mktemp("kernel"), spec), spec.artifact_path


def test_any_float32_input_is_predicted_as_xgboost_does(wine_kernel):
    """NaN, infinities, signed zeros, subnormals and huge values, in any mix and batch size."""
    import numpy as np
    import xgboost
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    predictor, artifact = wine_kernel
    booster = xgboost.Booster(model_file=str(artifact))
    values = st.floats(width=32, allow_nan=True, allow_infinity=True) | st.sampled_from(
        [0.0, -0.0, 1e-45, 0.99, 3.2, 1e38]
    )

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 300).flatmap(lambda n: arrays(np.float32, (n, 13), elements=values)))
    def check(rows):
        got = np.array(predict(predictor, rows), dtype=np.float32)
        want = booster.inplace_predict(rows, validate_features=False)
        assert np.array_equal(got, want)

    check()


def test_a_batch_of_the_wrong_shape_is_refused(wine_kernel):
    predictor, _ = wine_kernel
    with pytest.raises(ValueError, match=r"batch of 2 rows x 12 features \(24 values\); .* takes 13 features"):
        predictor.predict(Batch(array("f", bytes(4 * 24)), 2, 12))
    with pytest.raises(ValueError, match=r"batch of 3 rows x 13 features \(26 values\)"):
        predictor.predict(Batch(array("f", bytes(4 * 26)), 3, 13))
    assert predictor.predict(Batch(array("f"), 0, 13)) == []
