"""The compiled backend on XGBoost models: native libraries that predict what xgboost predicts.

Needs treelite and Jinja2 (``pip install -e ".[compiled]"``), gcc, and for the arm64 test
Debian's ``gcc-aarch64-linux-gnu``. Without them the tests are skipped locally; with ``CI`` set,
which installs all of them, a missing one fails.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from conftest import LEGACY_MODELS, shared_file, url_event

from lambda_ml_serve.backends.compiled import CompiledBackend, parity
from lambda_ml_serve.backends.compiled.ensemble import read_ensemble
from lambda_ml_serve.backends.compiled.parity import ParityError
from lambda_ml_serve.backends.compiled.runtime import TARGETS
from lambda_ml_serve.errors import CompileError, ModelLoadError
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.settings import BACKEND_ENV
from lambda_ml_serve.spec import Batch

#: What the serving image must never import for this backend.
HEAVY_MODULES = ("xgboost", "lightgbm", "numpy", "scipy", "treelite", "jinja2", "pandas", "sklearn")
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
ELF_MACHINE = {"x86_64": 62, "arm64": 183}


def require(ok: bool, reason: str) -> None:
    """Skip without a build tool locally; fail in CI, which is set up to have every one."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def require_toolchain() -> None:
    for module in ("xgboost", "treelite", "jinja2"):
        try:
            __import__(module)
        except ImportError:
            require(False, f"needs {module}: pip install -e '.[compiled]'")
    require(sys.platform == "linux" and HOST_ARCH is not None, "compiles for Linux on x86_64 or arm64")
    require(shutil.which(os.environ.get("CC", "gcc")) is not None, "needs a C compiler: apt-get install gcc")


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def xgboost_reference(artifact: Path, matrix) -> list[float]:
    import xgboost

    booster = xgboost.Booster(model_file=str(artifact))
    return booster.inplace_predict(matrix, validate_features=False).tolist()


def independent_rows(artifact: Path):
    """Rows built here, not by the backend: every threshold, the float32 below it, NaN, random values."""
    import numpy as np

    learner = json.loads(artifact.read_text())["learner"]
    trees = learner["gradient_booster"]["model"]["trees"]
    n = int(learner["learner_model_param"]["num_feature"])
    thresholds: list[set[float]] = [set() for _ in range(n)]
    for tree in trees:
        for left, feature, value in zip(
            tree["left_children"], tree["split_indices"], tree["split_conditions"], strict=True
        ):
            if left != -1:
                thresholds[feature].add(value)
    rng = np.random.default_rng(7)
    lists = [np.array(sorted(t) or [0.0], dtype=np.float32) for t in thresholds]
    edges = [np.concatenate([t, np.nextafter(t, np.float32(-np.inf))]) for t in lists]
    longest = max(len(e) for e in edges)
    on_thresholds = np.column_stack([e[np.arange(longest) % len(e)] for e in edges])
    random = np.column_stack([rng.uniform(t[0] - 1, t[-1] + 1, 10_000) for t in lists]).astype(np.float32)
    random[rng.random(random.shape) < 0.1] = np.nan
    all_missing = np.full((1, n), np.nan, dtype=np.float32)
    return np.ascontiguousarray(np.vstack([on_thresholds, random, all_missing]), dtype=np.float32)


def assert_matches_xgboost(library: Path, artifact: Path) -> None:
    """Parity on rows the test builds itself, within the 1e-4 the build gate promises."""
    import numpy as np

    matrix = independent_rows(artifact)
    predictor = CompiledBackend().load(library)
    got = predictor.predict(Batch(array("f", matrix.tobytes()), *matrix.shape))
    want = xgboost_reference(artifact, matrix)
    assert len(got) == len(want) == len(matrix)
    worst = float(np.max(np.abs(np.array(got) - np.array(want))))
    assert worst <= 1e-4, f"compiled differs from xgboost by {worst}"


@pytest.fixture(scope="session")
def wine_spec():
    return get_registry().model("wine_quality").spec


@pytest.fixture(scope="session")
def wine_library(tmp_path_factory, wine_spec) -> Path:
    require_toolchain()
    out = tmp_path_factory.mktemp("compiled-wine")
    return CompiledBackend().prepare(wine_spec.artifact_path, out, arch=HOST_ARCH, spec=wine_spec)


def served(artifact: Path, body: bytes, monkeypatch, backend: str | None) -> dict:
    """The response body an App loaded as the image loads it answers to ``body``."""
    with monkeypatch.context() as env:
        if backend:
            env.setenv(BACKEND_ENV, backend)
        else:
            env.delenv(BACKEND_ENV, raising=False)
        app = App.load("wine_quality", artifact=artifact)
    return json.loads(app(url_event(body))["body"])


def assert_same_response(compiled_body: dict, xgboost_body: dict) -> None:
    assert {k: v for k, v in compiled_body.items() if k != "predictions"} == {
        k: v for k, v in xgboost_body.items() if k != "predictions"
    }
    assert compiled_body["predictions"] == pytest.approx(xgboost_body["predictions"], abs=1e-4)


@pytest.mark.slow
def test_wine_library_is_one_self_describing_file(wine_library, wine_spec):
    assert sorted(p.name for p in wine_library.parent.iterdir()) == ["model.so"]  # no work files left
    assert elf_machine(wine_library) == ELF_MACHINE[HOST_ARCH]
    predictor = CompiledBackend().load(wine_library)
    assert predictor.feature_names == wine_spec.feature_names
    assert predictor.metadata["arch"] == HOST_ARCH
    assert predictor.metadata["source"]["file"] == "model.json"
    # An XGBoost model's library reads float32 rows, as XGBoost does; a float64 batch built by other code
    # is narrowed first, as the app would have packed it, past float32's range to infinity.
    assert predictor.input_type == predictor.metadata["input_type"] == "float32"
    values = [7.4, 0.3, 0.36, 2.1, 0.045, 30.0, 120.0, 0.995, 3.2, 0.5, 10.4, 0.0, 1.0]
    narrow, wide = array("f", values), array("d", values)
    n = len(values)
    assert predictor.predict(Batch(wide, 1, n)) == predictor.predict(Batch(narrow, 1, n))
    wide[5], narrow[5] = 1e300, 1e300
    assert predictor.predict(Batch(wide, 1, n)) == predictor.predict(Batch(narrow, 1, n))


@pytest.mark.slow
def test_wine_parity_with_xgboost(wine_library, wine_spec):
    predictor = CompiledBackend().load(wine_library)
    # The build gate itself, on the spec's rows and, without a spec, with missing values anywhere.
    ensemble = read_ensemble(wine_spec.artifact_path, wine_spec)
    assert parity.check_parity(predictor, ensemble, wine_spec) <= 1e-4
    assert parity.check_parity(predictor, ensemble, None) <= 1e-4
    assert_matches_xgboost(wine_library, wine_spec.artifact_path)


def test_parity_rows_cover_thresholds_bounds_and_missing(wine_spec):
    require_toolchain()
    import numpy as np
    import xgboost

    booster = xgboost.Booster(model_file=str(wine_spec.artifact_path))
    ensemble = read_ensemble(wine_spec.artifact_path, wine_spec)
    matrix, n_examples = parity.parity_rows(ensemble, wine_spec)
    assert n_examples == len(wine_spec.example)
    assert len(matrix) >= n_examples + parity.PARITY_ROWS
    names = list(wine_spec.feature_names)
    # Within the schema's bounds; the wine schema has no optional field, so nothing is missing.
    assert not np.isnan(matrix).any()
    assert matrix[:, : names.index("color_red")].min() >= 0
    density = matrix[:, names.index("density")]
    assert density.min() >= np.float32(0.9) and density.max() <= np.float32(1.1)
    for color in ("color_red", "color_white"):
        assert set(np.unique(matrix[:, names.index(color)])) <= {0.0, 1.0}
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    for tree in trees[:50]:
        for left, feature, value in zip(
            tree["left_children"], tree["split_indices"], tree["split_conditions"], strict=True
        ):
            if left != -1:
                assert np.float32(value) in matrix[:, feature], f"threshold {value} of {names[feature]}"
    # Without a spec, every feature may be missing.
    unconstrained, _ = parity.parity_rows(ensemble, None)
    assert np.isnan(unconstrained).any(axis=0).all()


@pytest.mark.slow
def test_wine_served_like_the_xgboost_backend(wine_library, samples_body, monkeypatch):
    from_compiled = served(wine_library, samples_body, monkeypatch, "compiled")
    from_xgboost = served(get_registry().model("wine_quality").spec.artifact_path, samples_body, monkeypatch, None)
    assert_same_response(from_compiled, from_xgboost)
    assert len(from_compiled["predictions"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("version", sorted(LEGACY_MODELS))
def test_legacy_models_compile_and_serve_the_same(version, tmp_path, wine_spec, samples_body, monkeypatch):
    require_toolchain()
    artifact = shared_file(LEGACY_MODELS[version])
    library = CompiledBackend().prepare(artifact, tmp_path, arch=HOST_ARCH, spec=wine_spec)
    assert_matches_xgboost(library, artifact)
    assert_same_response(
        served(library, samples_body, monkeypatch, "compiled"),
        served(artifact, samples_body, monkeypatch, None),
    )


@pytest.mark.slow
def test_arm64_cross_compile_produces_an_aarch64_library(tmp_path, wine_spec):
    require_toolchain()
    cross = os.environ.get("CC_aarch64_linux_gnu", "aarch64-linux-gnu-gcc")  # noqa: SIM112 (the cc-rs convention)
    require(shutil.which(cross) is not None, "needs the arm64 cross compiler: apt-get install gcc-aarch64-linux-gnu")
    library = CompiledBackend().prepare(wine_spec.artifact_path, tmp_path, arch="arm64", spec=wine_spec)
    assert elf_machine(library) == 183
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.so"]
    if HOST_ARCH != "arm64":
        with pytest.raises(ModelLoadError, match=r"compiled for arm64 but this machine is x86_64"):
            CompiledBackend().load(library)


@pytest.mark.slow
def test_serving_imports_no_ml_library(wine_library, wine_spec, samples, samples_body, monkeypatch):
    """The image's path: the handler module loads the model at import, then answers an invocation."""
    script = (
        "import json, sys\n"
        "import lambda_ml_serve.runtime.handler as h\n"
        f"answer = h.handler({samples!r}, None)\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY_MODULES!r} if m in sys.modules], 'answer': answer}}))\n"
    )
    env = {
        **os.environ,
        "LAMBDA_ML_SERVE_MODEL": "wine_quality",
        "LAMBDA_ML_SERVE_ARTIFACT": str(wine_library),
        BACKEND_ENV: "compiled",
    }
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    from_xgboost = served(wine_spec.artifact_path, samples_body, monkeypatch, None)["predictions"]
    assert report["answer"]["predictions"] == pytest.approx(from_xgboost, abs=1e-4)


def _train_small(tmp_path: Path, **params) -> Path:
    """A tiny model of a kind the compiled backend refuses, trained here and saved as JSON."""
    require_toolchain()
    import numpy as np
    import xgboost

    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 60)
    booster = xgboost.train(params, xgboost.DMatrix(features, label=labels), num_boost_round=3)
    path = tmp_path / "small.json"
    booster.save_model(str(path))
    return path


def test_linear_booster_is_refused(tmp_path):
    artifact = _train_small(tmp_path, booster="gblinear", objective="reg:squarederror")
    with pytest.raises(CompileError, match=r"'gblinear' booster, not a tree ensemble.*backend 'xgboost'"):
        CompiledBackend().prepare(artifact, tmp_path / "out", arch=HOST_ARCH)
    assert not (tmp_path / "out").exists()


def test_multi_target_regression_is_refused(tmp_path):
    require_toolchain()
    import numpy as np
    import xgboost

    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4)).astype(np.float32)
    booster = xgboost.train(
        {"multi_strategy": "one_output_per_tree"}, xgboost.DMatrix(features, label=features[:, :2]), num_boost_round=2
    )
    booster.save_model(str(tmp_path / "two.json"))
    with pytest.raises(CompileError, match=r"multi-target model \(objective 'reg:squarederror', num_target=2\)"):
        CompiledBackend().prepare(tmp_path / "two.json", tmp_path / "out", arch=HOST_ARCH)
    assert not (tmp_path / "out").exists()


def test_missing_compiler_names_the_debian_package(tmp_path, wine_spec, monkeypatch):
    require_toolchain()
    monkeypatch.setenv("CC", "/nonexistent/gcc")
    with pytest.raises(CompileError, match=r"CC='/nonexistent/gcc' is not found.*apt-get install gcc\b"):
        CompiledBackend().prepare(wine_spec.artifact_path, tmp_path, arch=HOST_ARCH, spec=wine_spec)
    cross_arch = "arm64" if HOST_ARCH == "x86_64" else "x86_64"
    cross = TARGETS[cross_arch]
    monkeypatch.setenv(f"CC_{cross.triple.replace('-', '_')}", "/nonexistent/cross-gcc")
    with pytest.raises(CompileError, match=rf"apt-get install {cross.cross_package}"):
        CompiledBackend().prepare(wine_spec.artifact_path, tmp_path, arch=cross_arch, spec=wine_spec)
    assert list(tmp_path.iterdir()) == []


def test_compiler_for_the_wrong_machine_is_refused(tmp_path, wine_spec, monkeypatch):
    require_toolchain()
    require(HOST_ARCH == "x86_64", "uses the arm64 cross compiler as a wrong x86_64 compiler")
    require(shutil.which("aarch64-linux-gnu-gcc") is not None, "apt-get install gcc-aarch64-linux-gnu")
    monkeypatch.setenv("CC", "aarch64-linux-gnu-gcc")
    artifact = shared_file(LEGACY_MODELS["1.5.2"])
    with pytest.raises(CompileError, match=r"is CC a C compiler for x86_64-linux-gnu\?\n.*x86-64. for .-march"):
        CompiledBackend().prepare(artifact, tmp_path, arch="x86_64", spec=wine_spec)
    assert list(tmp_path.iterdir()) == []


def test_missing_build_package_names_the_extra_in_both_forms(tmp_path, wine_spec, monkeypatch):
    require_toolchain()
    monkeypatch.setitem(sys.modules, "treelite", None)  # what an environment without it imports
    with pytest.raises(
        CompileError,
        match=r"needs treelite at build time: pip install 'lambda-ml-serve\[compiled\]' "
        r"\(in a checkout: pip install '\.\[compiled\]'\)$",
    ):
        CompiledBackend().prepare(wine_spec.artifact_path, tmp_path, arch="x86_64", spec=wine_spec)
    assert list(tmp_path.iterdir()) == []


def test_unknown_arch_is_refused(tmp_path, wine_spec):
    with pytest.raises(CompileError, match=r"unknown architecture 'riscv64'.*x86_64 or arm64"):
        CompiledBackend().prepare(wine_spec.artifact_path, tmp_path, arch="riscv64", spec=wine_spec)


@pytest.mark.slow
def test_parity_failure_says_by_how_much_and_writes_nothing(tmp_path, wine_spec, monkeypatch):
    require_toolchain()
    reference = parity.reference_predictions

    def off_by_a_hundredth_on_row_3(ensemble, matrix):
        predictions = reference(ensemble, matrix).copy()
        predictions[3] += 0.01
        return predictions

    monkeypatch.setattr(parity, "reference_predictions", off_by_a_hundredth_on_row_3)
    artifact = shared_file(LEGACY_MODELS["1.5.2"])
    with pytest.raises(ParityError, match=r"differs from xgboost by up to 0\.01 .* worst at generated row 1:"):
        CompiledBackend().prepare(artifact, tmp_path, arch=HOST_ARCH, spec=wine_spec)
    assert list(tmp_path.iterdir()) == []


def test_an_xgboost_artifact_is_not_a_library(wine_spec, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "compiled")
    with pytest.raises(ModelLoadError, match=r"backend 'compiled'.*not a compiled model library"):
        App.load("wine_quality", artifact=wine_spec.artifact_path)
