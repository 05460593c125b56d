"""Plugin discovery through real entry points, and how broken plugins are contained."""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from tests_support import LEGACY_MODEL

from lambda_ml_serve.errors import ModelLoadError, ModelNotFoundError, PluginError
from lambda_ml_serve.plugins import build_registry
from lambda_ml_serve.runtime.app import App, choose_model


def make_plugin(root: Path, name: str, code: str, *, artifact: Path | None = None) -> None:
    """Install a plugin distribution the way pip would: a package plus a dist-info with entry points."""
    package = root / f"lms_test_{name}"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(code))
    if artifact is not None:
        shutil.copy(artifact, package / "model.json")
    dist_info = root / f"lms_test_{name}-0.3.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: lms-test-{name.replace('_', '-')}\nVersion: 0.3.0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[lambda_ml_serve]\n{name} = lms_test_{name}\n")


MODEL = """
from pydantic import BaseModel, Field
from lambda_ml_serve import hookimpl
from lambda_ml_serve.spec import ModelSpec

FEATURES = ['fixed acidity', 'volatile acidity', 'citric acid', 'residual sugar', 'chlorides',
            'free sulfur dioxide', 'total sulfur dioxide', 'density', 'pH', 'sulphates',
            'alcohol', 'color_red', 'color_white']
Row = type("Row", (BaseModel,), {
    "__annotations__": {f"f{i}": float for i in range(len(FEATURES))},
    **{f"f{i}": Field(alias=name) for i, name in enumerate(FEATURES)},
})

@hookimpl
def register_models(register):
    register(ModelSpec(name=NAME, version="0.3.0", backend=BACKEND, package=__name__,
                       artifact="model.json", schema=SCHEMA))
"""


def model_plugin(name: str, *, model: str | None = None, backend: str = "xgboost", schema: str = "Row") -> str:
    return f"NAME = {model or name!r}\nBACKEND = {backend!r}\n" + MODEL.replace("schema=SCHEMA", f"schema={schema}")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path for this test's distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("lms_test_")]:
        del sys.modules[name]


def test_third_party_plugin_is_found_by_entry_point(site):
    make_plugin(site, "good", model_plugin("good"), artifact=LEGACY_MODEL)
    registry = build_registry()
    model = registry.model("good")
    assert model.plugin.name == "good"
    assert model.plugin.distribution == "lms-test-good"
    assert model.plugin.version == "0.3.0"
    assert registry.backends["xgboost"].plugin.distribution == "lambda-ml-serve"


def test_broken_plugins_are_contained_and_named(site):
    make_plugin(site, "good", model_plugin("good"), artifact=LEGACY_MODEL)
    make_plugin(site, "importfails", "raise ImportError('needs libfoo')\n")
    make_plugin(
        site,
        "hookraises",
        textwrap.dedent("""
        from lambda_ml_serve import hookimpl
        @hookimpl
        def register_models(register):
            raise ValueError('bad config')
        """),
    )
    make_plugin(site, "dupe", model_plugin("dupe", model="twin"), artifact=LEGACY_MODEL)
    make_plugin(site, "dupe2", model_plugin("dupe2", model="twin"), artifact=LEGACY_MODEL)
    make_plugin(site, "nobackend", model_plugin("nobackend", backend="tensorflow"), artifact=LEGACY_MODEL)
    make_plugin(site, "noartifact", model_plugin("noartifact"))
    registry = build_registry()

    assert registry.model("good").plugin.name == "good"
    failures = {f.plugin.name: f for f in registry.failures}
    assert "needs libfoo" in failures["importfails"].message
    assert failures["importfails"].plugin.distribution == "lms-test-importfails"
    assert "register_models raised ValueError: bad config" in failures["hookraises"].message
    both = "plugin 'dupe' (distribution lms-test-dupe 0.3.0) and plugin 'dupe2'"
    assert both in failures["dupe"].message and both in failures["dupe2"].message
    assert "twin" not in registry.models
    assert "unknown backend 'tensorflow' (installed backends: " in failures["nobackend"].message
    assert "xgboost" in failures["nobackend"].message
    assert "artifact 'model.json' not found" in failures["noartifact"].message
    with pytest.raises(PluginError, match="model 'noartifact' is broken: plugin 'noartifact'"):
        registry.model("noartifact")


def test_allow_list_limits_loading(site, monkeypatch):
    make_plugin(site, "good", model_plugin("good"), artifact=LEGACY_MODEL)
    make_plugin(site, "importfails", "raise ImportError('needs libfoo')\n")
    monkeypatch.setenv("LAMBDA_ML_SERVE_PLUGINS", "good")
    registry = build_registry()
    assert list(registry.models) == ["good"]
    assert registry.failures == []


def test_schema_not_matching_the_model_fails_at_load_naming_the_plugin(site):
    swapped = "Row2 = type('Row2', (BaseModel,), {'__annotations__': {'a': float, 'b': float}})\n"
    code = model_plugin("swapped", schema="Row2").replace("@hookimpl", swapped + "@hookimpl")
    make_plugin(site, "swapped", code, artifact=LEGACY_MODEL)
    registry = build_registry()
    with pytest.raises(ModelLoadError) as info:
        App.load("swapped", registry=registry)
    message = str(info.value)
    assert "plugin 'swapped' (distribution lms-test-swapped 0.3.0)" in message
    assert "schema fields do not match" in message and "'fixed acidity'" in message


def test_unknown_model_lists_the_known_ones(site):
    make_plugin(site, "good", model_plugin("good"), artifact=LEGACY_MODEL)
    registry = build_registry()
    with pytest.raises(ModelNotFoundError, match=r"no model named 'nope'; installed models: .*good"):
        registry.model("nope")
    with pytest.raises(ModelNotFoundError, match="set LAMBDA_ML_SERVE_MODEL"):
        choose_model(registry, None)


def test_invalid_model_names_are_refused():
    from pydantic import BaseModel

    from lambda_ml_serve.spec import ModelSpec

    with pytest.raises(ValueError, match="not valid"):
        ModelSpec(name="Wine Quality", version="1", backend="xgboost", package="x", artifact="m.json", schema=BaseModel)
