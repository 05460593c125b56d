"""Resolve at build, not at init: with a serving manifest the handler imports only the fast path.

pydantic, pluggy and the plugin are imported on first need: a request the fast path does not answer,
or GET /. Each check runs in a fresh interpreter, as Lambda's init does.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import run_python, url_event

from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.manifest import MANIFEST_NAME, Manifest, find_manifest

pytest_plugins = ["build_fixtures"]

FULL_PATH_MODULES = ("pydantic", "pluggy", "lambda_ml_serve.plugins", "lambda_ml_serve_wine_quality")
INIT_AND_ANSWER = textwrap.dedent(
    """
    import json, sys
    events = json.loads(sys.stdin.read())
    loaded = lambda: [m for m in {modules!r} if m in sys.modules]
    from lambda_ml_serve.runtime.handler import handler
    steps = [["init", None, loaded()]]
    for name, event in events:
        response = handler(event, None)
        steps.append([name, response, loaded()])
    print(json.dumps(steps))
    """
).format(modules=FULL_PATH_MODULES)


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory) -> Path:
    """What build puts in the image's artifacts folder: the artifact and its serving manifest."""
    folder = tmp_path_factory.mktemp("artifacts")
    registry = get_registry()
    spec = registry.model("wine_quality").spec
    artifact = folder / "model.json"
    shutil.copy(spec.artifact_path, artifact)
    Manifest.of(spec, "xgboost", registry.backend("xgboost"), artifact).write(folder / MANIFEST_NAME)
    return folder


def run_handler(folder: Path, events: list[tuple[str, dict]]) -> dict[str, tuple[dict, list[str]]]:
    env = {
        "LAMBDA_ML_SERVE_MODEL": "wine_quality",
        "LAMBDA_ML_SERVE_ARTIFACT": str(folder / "model.json"),
        "LAMBDA_ML_SERVE_PLUGINS": "wine_quality",
        "LANG": "C.UTF-8",
    }
    answers = json.loads(run_python("-c", INIT_AND_ANSWER, stdin=events, env=env).stdout)
    return {name: (response, modules) for name, response, modules in answers}


def test_valid_requests_never_import_the_full_path(manifest_dir, samples_body, wine_app):
    steps = run_handler(
        manifest_dir,
        [
            ("valid", url_event(samples_body)),
            ("one row", url_event(json.dumps(json.loads(samples_body)[0]))),
            ("invalid", url_event('[{"pH": 3}]')),
            ("metadata", url_event(method="GET")),
        ],
    )
    assert steps["init"][1] == []
    response, modules = steps["valid"]
    assert modules == []
    assert response["body"] == wine_app(url_event(samples_body))["body"]
    assert steps["one row"][1] == []
    response, modules = steps["invalid"]
    assert response["statusCode"] == 422 and modules == list(FULL_PATH_MODULES)
    response, _ = steps["metadata"]
    assert json.loads(response["body"])["request_path"]["path"] == "fast"


def test_get_metadata_first_imports_the_plugin(manifest_dir):
    steps = run_handler(manifest_dir, [("metadata", url_event(method="GET"))])
    response, modules = steps["metadata"]
    assert response["statusCode"] == 200 and "pydantic" in modules
    assert json.loads(response["body"])["input_schema"]["title"] == "WineSample"


def test_the_manifest_is_used_only_for_what_it_describes(manifest_dir):
    artifact = str(manifest_dir / "model.json")
    assert find_manifest({"LAMBDA_ML_SERVE_ARTIFACT": artifact}).model == "wine_quality"
    assert find_manifest({"LAMBDA_ML_SERVE_ARTIFACT": artifact, "LAMBDA_ML_SERVE_MODEL": "other"}) is None
    assert find_manifest({"LAMBDA_ML_SERVE_ARTIFACT": artifact, "LAMBDA_ML_SERVE_BACKEND": "compiled"}) is None
    assert find_manifest({"LAMBDA_ML_SERVE_ARTIFACT": str(manifest_dir / "other.json")}) is None
    assert find_manifest({}) is None


@pytest.mark.slow
def test_build_writes_the_manifest_beside_the_artifact(serving_context):
    manifest = Manifest.read(serving_context.artifact.parent / MANIFEST_NAME)
    assert manifest.artifact == serving_context.artifact
    assert (manifest.model, manifest.backend_class) == (
        "wine_quality",
        "lambda_ml_serve.backends.xgboost:XGBoostBackend",
    )
    assert manifest.request_path.plan is not None
