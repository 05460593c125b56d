"""`lambda-ml-serve new --from-model`: real models, trained here, become plugins that install and serve.

For each model (the original XGBoost 1.6.2 file, an XGBoost classifier saved as UBJ, a scikit-learn
Pipeline, a LightGBM regressor, an ONNX model converted from scikit-learn), a plugin is generated
with and without ``--data``, all of them are pip-installed into one ``--target`` folder that only
the subprocesses of these tests see, and then: ``list`` shows them ok, ``invoke`` answers the
example as the library itself does, ``build --no-docker`` renders an image without pandas or
scikit-learn, and the generated plugins' own tests pass. The container test at the end builds the
ONNX and LightGBM images and runs them with the real RIE.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CLI, LEGACY_MODELS, shared_file
from conftest import cli as cli_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tabular_cases import pip_install

from lambda_ml_serve.cli import main

STANDIN = os.environ.get("LMS_STANDIN_TAG", "lambda-ml-serve/standin-python:3.11")
ROWS = 400
SEED = 3
#: Names a request must be able to use as they are: spaces, a dash, a capital.
COLUMNS = ["length cm", "width-mm", "Mass", "parts", "coated"]


@dataclass(frozen=True)
class Case:
    """A model file, how to answer its example with its own library, and the data it came with."""

    key: str
    model_file: Path
    data: Path | None
    target: str | None
    backend: str

    @property
    def model(self) -> str:
        return f"fm_{self.key}"

    def variant(self, with_data: bool) -> str:
        return f"{self.model}_{'data' if with_data else 'bare'}"


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run(site: Path, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def synthetic_frame():
    """Rows with awkward column names, an integer and a 0/1 column, and a regression and a class target."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(
        {
            "length cm": rng.uniform(10, 50, ROWS),
            "width-mm": rng.uniform(100, 400, ROWS),
            "Mass": rng.gamma(2.0, 3.0, ROWS),
            "parts": rng.integers(1, 6, ROWS),
            "coated": rng.integers(0, 2, ROWS),
        }
    )
    frame["price"] = (
        frame["length cm"] * 0.8 + frame["Mass"] * 2 - frame["parts"] * 3 + frame["coated"] * 5 + rng.normal(0, 2, ROWS)
    )
    frame["grade"] = (frame["price"] > frame["price"].median()).astype(int)
    return frame


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    """Train each model here and save it as its library does."""
    import joblib
    import lightgbm
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("models")
    frame = synthetic_frame()
    data = root / "rows.csv"
    frame.to_csv(data, index=False)
    X, numeric = frame[COLUMNS], frame[COLUMNS].to_numpy(dtype="float32")

    ubj = root / "grade.ubj"
    types = ["float", "float", "float", "int", "i"]
    matrix = xgboost.DMatrix(X, label=frame["grade"], feature_names=COLUMNS, feature_types=types)
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": SEED, "nthread": 1}
    xgboost.train(params, matrix, num_boost_round=20).save_model(str(ubj))

    pipeline = root / "price.joblib"
    fitted = make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=40, random_state=SEED))
    joblib.dump(fitted.fit(X, frame["price"]), pipeline)

    lgb = root / "price_lgb.txt"
    names = ["length_cm", "width_mm", "mass", "parts", "coated"]
    train_set = lightgbm.Dataset(numeric, label=frame["price"], feature_name=names, categorical_feature=["parts"])
    lgb_params = {"objective": "regression", "num_leaves": 8, "verbose": -1, "seed": SEED, "num_threads": 1}
    lightgbm.train(lgb_params, train_set, num_boost_round=30).save_model(str(lgb))
    lgb_data = root / "rows_lgb.csv"
    frame.rename(columns=dict(zip(COLUMNS, names, strict=True))).to_csv(lgb_data, index=False)

    # Without names in the model, the header names the columns in order: only features and the target.
    onnx_data = root / "rows_grade.csv"
    frame[[*COLUMNS, "grade"]].to_csv(onnx_data, index=False)
    onnx_file = root / "grade.onnx"
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=SEED).fit(numeric, frame["grade"])
    onnx_file.write_bytes(to_onnx(forest, numeric[:1], options={"zipmap": False}).SerializeToString())

    original = shared_file(LEGACY_MODELS["1.6.2"])
    wine = shared_file(original.parent / "wine_concat.csv")
    return {
        case.key: case
        for case in (
            Case("original", original, wine, "quality", "xgboost"),
            Case("xgb_ubj", ubj, data, "grade", "xgboost"),
            Case("pipeline", pipeline, data, "price", "sklearn"),
            Case("lightgbm", lgb, lgb_data, "price", "lightgbm"),
            Case("onnx", onnx_file, onnx_data, "grade", "onnx"),
        )
    }


@dataclass(frozen=True)
class Generated:
    case: Case
    with_data: bool
    project: Path
    warnings: str

    @property
    def model(self) -> str:
        return self.case.variant(self.with_data)

    @property
    def package(self) -> Path:
        return self.project / f"lambda_ml_serve_{self.model}"

    @property
    def example(self) -> list[dict]:
        return json.loads((self.package / "example.json").read_text())["instances"]

    @property
    def card(self) -> dict:
        return json.loads((self.package / "model_card.json").read_text())


@pytest.fixture(scope="module")
def generated(cases, tmp_path_factory) -> dict[str, Generated]:
    """Every case, with and without --data, generated by the command and installed into one folder."""
    root = tmp_path_factory.mktemp("projects")
    out: dict[str, Generated] = {}
    for case in cases.values():
        for with_data in (False, True):
            model = case.variant(with_data)
            args = ["new", "--from-model", case.model_file, "--model-name", model, "--output-dir", root, "--no-input"]
            if with_data:
                args += ["--data", case.data, "--target", case.target]
            result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            project = root / f"lambda-ml-serve-{model.replace('_', '-')}"
            out[model] = Generated(case, with_data, project, result.output)
    return out


@pytest.fixture(scope="module")
def site(generated, tmp_path_factory) -> Path:
    return pip_install([g.project for g in generated.values()], tmp_path_factory.mktemp("site"))


#: Classifiers answer a label per row and the class probabilities (their labels: 0 and 1).
CLASSIFIERS = {"xgb_ubj", "onnx"}


def library_predictions(case: Case, rows: list[dict]) -> list:
    """What the answer's ``predictions`` must be: the library's values, or a classifier's labels."""
    values = library_values(case, rows)
    if case.key not in CLASSIFIERS:
        return values
    return [int(p > 0.5) if case.key == "xgb_ubj" else int(p[1] > p[0]) for p in values]


def library_probabilities(case: Case, rows: list[dict]) -> list | None:
    """A classifier's class probabilities, as the answer's ``probabilities`` carries them."""
    if case.key not in CLASSIFIERS:
        return None
    values = library_values(case, rows)
    return [[1 - p, p] for p in values] if case.key == "xgb_ubj" else values


def library_values(case: Case, rows: list[dict]) -> list:
    """What the model's own library answers for ``rows``, with no lambda-ml-serve code involved."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(rows)
    if case.backend == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(case.model_file))
        frame = frame[booster.feature_names].astype("float32")
        return booster.predict(xgboost.DMatrix(frame, feature_names=booster.feature_names)).tolist()
    if case.backend == "sklearn":
        import joblib

        return joblib.load(case.model_file).predict(frame).tolist()
    if case.backend == "lightgbm":
        import lightgbm

        return lightgbm.Booster(model_file=str(case.model_file)).predict(frame.to_numpy(dtype="float32")).tolist()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(case.model_file), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {session.get_inputs()[0].name: frame.to_numpy(np.float32)})
    return probabilities.tolist()


def close(got, want, tolerance: float = 1e-5) -> bool:
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(close(g, w, tolerance) for g, w in zip(got, want, strict=True))
        )
    return math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance)


def test_list_shows_every_generated_plugin_ok(generated, site):
    result = run(site, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    for name, plugin in generated.items():
        assert rows[name]["status"] == "ok", rows.get(name)
        assert rows[name]["backend"] == plugin.case.backend


#: One variant per model goes through the `invoke` command (a process each); the generated tests
#: check that every variant's App answers its recorded predictions, which the next test compares
#: with the library for all ten.
INVOKED = ["original-data", "xgb_ubj-bare", "pipeline-data", "lightgbm-bare", "onnx-data"]


def plugin_for(generated: dict[str, Generated], key: str, with_data: bool) -> Generated:
    return next(g for g in generated.values() if g.case.key == key and g.with_data == with_data)


@pytest.mark.parametrize("variant", INVOKED)
def test_invoke_answers_the_example_as_the_library_does(generated, site, variant):
    key, kind = variant.rsplit("-", 1)
    plugin = plugin_for(generated, key, kind == "data")
    result = run(site, "invoke", plugin.model, "--data", plugin.package / "example.json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == plugin.model
    assert close(answer["predictions"], library_predictions(plugin.case, plugin.example))
    if plugin.case.key in CLASSIFIERS:
        assert answer["classes"] == [0, 1]
        assert close(answer["probabilities"], library_probabilities(plugin.case, plugin.example))


def test_recorded_predictions_are_the_librarys_own(generated):
    for plugin in generated.values():
        expected = json.loads((plugin.project / "tests" / "expected_predictions.json").read_text())
        assert close(expected, library_predictions(plugin.case, plugin.example)), plugin.model


def test_the_original_model_answers_samples_exactly_as_the_original_service(generated, site, samples_body):
    result = subprocess.run(
        cli_line("invoke fm_original_bare --data -"),
        input=samples_body.decode(),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"] == [6.573914051055908, 4.869720935821533]


def test_the_model_file_is_copied_unchanged_and_named_in_every_answer(generated, site):
    for plugin in generated.values():
        artifact = plugin.package / plugin.card["model_file"]
        assert artifact.read_bytes() == plugin.case.model_file.read_bytes()
        assert plugin.card["model_sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()


def test_names_types_and_aliases_come_from_the_model(generated):
    original = generated["fm_original_bare"]
    schema = (original.package / "schema.py").read_text()
    assert 'alias="fixed acidity"' in schema and "color_red: int" in schema
    ubj = (generated["fm_xgb_ubj_bare"].package / "schema.py").read_text()
    assert 'alias="length cm"' in ubj and 'alias="width-mm"' in ubj and "parts: int" in ubj and "coated: bool" in ubj
    lgb = (generated["fm_lightgbm_bare"].package / "schema.py").read_text()
    assert "parts: int | None = Field(\n" in lgb and "ge=0," in lgb  # a categorical feature: a non-negative code
    assert generated["fm_pipeline_bare"].card["features"] == COLUMNS  # feature_names_in_


def test_a_model_without_names_gets_f0_to_fn_and_a_warning_unless_data_names_them(generated):
    bare, named = generated["fm_onnx_bare"], generated["fm_onnx_data"]
    assert bare.card["features"] == [f"f{i}" for i in range(len(COLUMNS))]
    assert "stores no feature names" in bare.warnings
    assert named.card["features"] == COLUMNS and named.card["feature_names_from"] == "data"


def test_data_gives_examples_ranges_and_metrics_and_no_data_says_so(generated):
    with_data, bare = generated["fm_original_data"], generated["fm_original_bare"]
    metrics = with_data.card["metrics"]
    assert set(metrics) == {"rmse", "mae", "r2"} and 0 < metrics["rmse"] < 1
    assert "observed 3.8 to 15.9 in wine_concat.csv" in (with_data.package / "schema.py").read_text()
    assert bare.card["metrics"] == {} and "no metrics" in bare.card["metrics_note"]
    assert with_data.example[0]["fixed acidity"] == 7.4  # the data's first row
    assert generated["fm_onnx_data"].card["metrics"]["accuracy"] > 0.8
    readme = (bare.project / "README.md").read_text()
    assert "## Where each value came from" in readme and "split values" in readme


@pytest.fixture(scope="module")
def contexts(generated, site, tmp_path_factory) -> dict[str, Path]:
    """Rendered build contexts for the ONNX, LightGBM and XGBoost plugins (Python 3.11: the stand-in's)."""
    root = tmp_path_factory.mktemp("contexts")
    out = {}
    for key in ("onnx", "lightgbm", "original"):
        model = f"fm_{key}_bare"
        output = root / model
        result = run(
            site, "build", model, "--no-docker", "--python", "3.11", "--base-image", STANDIN, "--output", output
        )
        assert result.returncode == 0, result.stderr
        out[key] = output
    return out


@pytest.mark.parametrize("key", ["onnx", "lightgbm", "original"])
def test_build_renders_an_image_without_pandas_or_scikit_learn(contexts, generated, key):
    context = contexts[key]
    installed = json.loads((context / "build-info.json").read_text())["installed"]
    assert not {"pandas", "scikit-learn", "skl2onnx", "onnx", "onnxmltools"} & set(installed)
    backend = generated[f"fm_{key}_bare"].case.backend
    assert {"onnx": "onnxruntime", "lightgbm": "lightgbm", "xgboost": "xgboost-cpu"}[backend] in installed
    dockerfile = (context / "Dockerfile").read_text()
    sha = generated[f"fm_{key}_bare"].card["model_sha256"]
    assert f"LAMBDA_ML_SERVE_MODEL_SHA256={sha}" in dockerfile
    if key == "lightgbm":
        assert (context / "artifacts" / "libgomp.so.1").is_file()  # Lambda's base images lack it


def test_the_generated_plugins_own_tests_pass(generated, site):
    projects = [str(g.project / "tests") for g in generated.values()]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib", *projects],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"{7 * len(projects)} passed" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b'{"not": "a model"}', "is JSON but not an XGBoost model"),
        (
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",
            "is a pickle of objects from 'os'",
        ),
        (
            # functools.partial is read (HistGradientBoosting keeps one), never around a forbidden function.
            b"\x80\x04\x95B\x00\x00\x00\x00\x00\x00\x00\x8c\tfunctools\x94\x8c\x07partial\x94\x93\x94\x8c\x05posix"
            b"\x94\x8c\x06system\x94\x93\x94\x85\x94R\x94(h\x05\x8c\x04true\x94\x85\x94}\x94Nt\x94b.",
            "is a pickle of objects from 'posix'",
        ),
        (b"tree\nversion=v4\nnum_class=", "is not a readable LightGBM model"),
        (b"{L\x00learner garbage", "is not a readable XGBoost model"),
        (b"plain text", "is not a model file lambda-ml-serve reads"),
    ],
    ids=["empty", "json", "foreign-pickle", "partial-of-foreign", "corrupt-lightgbm", "corrupt-ubj", "text"],
)
def test_unreadable_files_are_refused_in_one_line_and_nothing_is_written(tmp_path, content, message):
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(content)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["new", "--from-model", str(model_file), "--output-dir", str(out), "--no-input"])
    lines = result.output.strip().splitlines()
    assert (result.exit_code, len(lines)) == (1, 1), result.output
    assert lines[0].startswith(f"Error: {model_file}") and message in lines[0]
    assert not out.exists()


def test_an_onnx_model_without_a_feature_count_needs_data(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["y"], keepdims=0)],
        "sum",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "F"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    model_file = tmp_path / "sum.onnx"
    model_file.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    result = CliRunner().invoke(
        main, ["new", "--from-model", str(model_file), "--output-dir", str(tmp_path / "o"), "--no-input"]
    )
    assert result.exit_code == 1
    assert "has no fixed number of features" in result.output and "pass --data" in result.output
    assert not (tmp_path / "o").exists()


def test_missing_data_columns_and_a_wrong_target_are_one_line(cases, tmp_path):
    case = cases["xgb_ubj"]
    short = tmp_path / "short.csv"
    short.write_text("length cm,Mass\n1,2\n")
    for extra, message in (
        (["--data", short], "has no column for the model's feature(s) 'width-mm', 'parts', 'coated'"),
        (["--data", case.data, "--target", "nope"], "--target 'nope' is not a column of"),
        (["--data", tmp_path / "absent.csv"], "cannot read it"),
    ):
        result = CliRunner().invoke(
            main,
            [
                "new",
                "--from-model",
                str(case.model_file),
                "--output-dir",
                str(tmp_path / "o"),
                "--no-input",
                *map(str, extra),
            ],
        )
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert message in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.container
@pytest.mark.parametrize("key", ["onnx", "lightgbm"])
def test_onnx_and_lightgbm_images_answer_in_the_real_rie(contexts, generated, key, samples_body):
    from conftest import url_event

    from lambda_ml_serve.bundling.docker import find_engine
    from lambda_ml_serve.local.container import RieContainer

    if find_engine() is None:
        message = 'no Docker engine reachable (run `eval "$(.ci/docker-up)"`)'
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    plugin = generated[f"fm_{key}_bare"]
    tag = f"lambda-ml-serve-test/{plugin.model}:latest"
    build = subprocess.run(
        [shutil.which("docker") or "docker", "build", "-q", "-t", tag, str(contexts[key])],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        with RieContainer(tag) as function:
            response = function.invoke(url_event(json.dumps(plugin.example)))
            assert response["statusCode"] == 200, response["body"]
            assert close(json.loads(response["body"])["predictions"], library_predictions(plugin.case, plugin.example))
            assert response["headers"]["x-model-sha256"] == plugin.card["model_sha256"]
            assert function.invoke(url_event('[{"f0": "x"}]'))["statusCode"] == 422
            check = "import importlib.util as u; print([m for m in ('pandas', 'sklearn') if u.find_spec(m)])"
            listed = subprocess.run(
                [shutil.which("docker") or "docker", "run", "--rm", "--entrypoint", "python3", tag, "-c", check],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert listed.stdout.strip() == "[]", listed.stderr
    finally:
        subprocess.run([shutil.which("docker") or "docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture(scope="module")
def small_models(tmp_path_factory) -> dict[str, bytes]:
    """Small real model files of every format, to cut and damage."""
    import joblib
    import lightgbm
    import numpy as np
    import xgboost
    from skl2onnx import to_onnx
    from sklearn.tree import DecisionTreeRegressor

    root = tmp_path_factory.mktemp("small")
    X = np.random.default_rng(0).uniform(0, 1, (60, 3)).astype("float32")
    y = X[:, 0] - X[:, 1]
    xgboost.train({"max_depth": 2}, xgboost.DMatrix(X, label=y), 3).save_model(str(root / "m.ubj"))
    lightgbm.train({"verbose": -1, "num_leaves": 4, "min_data_in_leaf": 5}, lightgbm.Dataset(X, label=y), 3).save_model(
        str(root / "m.txt")
    )
    tree = DecisionTreeRegressor(max_depth=2).fit(X, y)
    joblib.dump(tree, root / "m.joblib")
    (root / "m.onnx").write_bytes(to_onnx(tree, X[:1]).SerializeToString())
    return {p.suffix: p.read_bytes() for p in root.iterdir()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".ubj", ".txt", ".joblib", ".onnx"]),
    cut=st.floats(0, 1, exclude_max=True),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=3),
)
def test_damaged_model_files_are_described_or_refused_in_one_line(small_models, tmp_path, suffix, cut, flips):
    """Invariant: a cut or bit-flipped model file is either still a readable model, or refused with a
    ModelFileError whose one-line message names the file; no other exception escapes."""
    from lambda_ml_serve.from_model.describe import describe
    from lambda_ml_serve.modelfiles import ModelFileError

    data = bytearray(small_models[suffix][: max(1, int(len(small_models[suffix]) * cut))])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(bytes(data))
    try:
        description = describe(path)
    except ModelFileError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message and len(message) < 600
    else:
        assert description.features


def test_data_gives_the_card_a_training_profile(generated):
    for plugin in generated.values():
        if not plugin.with_data:
            assert "profile" not in plugin.card
            continue
        profile = plugin.card["profile"]
        assert list(profile["features"]) == list(plugin.example[0])
        assert profile["rows"] == plugin.card["data"]["rows"]
        assert profile["predictions"]["count"] == profile["rows"]
        for feature in profile["features"].values():
            assert 0 <= feature["missing_rate"] <= 1
            assert feature["kind"] in ("numeric", "categorical")
