"""Build targets: Python 3.10-3.14 with their official base names, and one output per model, backend and arch.

Python 3.13 also runs: on a stand-in from Debian trixie's python3 (Debian packages no 3.12).
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import cli, url_event

from lambda_ml_serve.bundling.context import DEFAULT_PYTHON, PYTHONS, check_target, default_output
from lambda_ml_serve.bundling.deployment_zip import HANDLER
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.local.container import RieContainer

pytest_plugins = ["container_fixtures"]


def test_every_lambda_python_is_a_target():
    assert PYTHONS == ("3.10", "3.11", "3.12", "3.13", "3.14")
    assert DEFAULT_PYTHON == "3.12"
    for python in PYTHONS:
        check_target("arm64", python)
    with pytest.raises(BuildError, match=r"Python '3\.9' has no Lambda base image; choose one of 3\.10, .*3\.14"):
        check_target("x86_64", "3.9")


def test_one_output_per_model_backend_and_arch():
    outputs = {
        default_output("wine_quality", arch, backend, package)
        for arch in ("x86_64", "arm64")
        for backend in ("xgboost", "compiled")
        for package in ("image", "zip")
    }
    assert len(outputs) == 8
    assert default_output("wine_quality", "arm64", "compiled") == Path(".lambda-ml-serve/wine_quality-compiled-arm64")
    assert default_output("wine_quality", "x86_64", "xgboost", "zip") == Path(
        ".lambda-ml-serve/wine_quality-xgboost-x86_64.zip"
    )


@pytest.mark.slow
def test_python_314_renders_with_its_base_and_wheels(tmp_path):
    command = cli("build wine_quality --python 3.14 --no-docker")
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    context = tmp_path / ".lambda-ml-serve" / "wine_quality-xgboost-x86_64"
    assert f"Rendered the build context in {context}" in result.stdout
    dockerfile = (context / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.14" in dockerfile
    assert "RUN python3.14 -m compileall" in dockerfile
    assert json.loads((context / "build-info.json").read_text())["python"] == "3.14"
    # Compiled extensions are the target's: pydantic's core and msgspec built for CPython 3.14.
    for package in ("pydantic_core", "msgspec"):
        assert list((context / "site-packages" / package).rglob("*.cpython-314-x86_64-linux-gnu.so")), package


@pytest.mark.container
@pytest.mark.slow
def test_python_313_image_and_zip_answer_on_the_313_standin(standin_313, tmp_path, wine_app, samples_body):
    tag = f"lambda-ml-serve-test/wine_quality:py313-{os.getpid()}"
    command = cli("build wine_quality --python 3.13 --backend compiled")
    image = subprocess.run(
        [*command, "--base-image", standin_313, "--tag", tag, "--output", str(tmp_path / "ctx")],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert image.returncode == 0, image.stderr[-3000:]
    archive = tmp_path / "wine.zip"
    packaged = subprocess.run(
        [*command, "--package", "zip", "--output", str(archive)], capture_output=True, text=True, timeout=1200
    )
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "task")
    event = url_event(samples_body)
    expected = json.loads(wine_app(event)["body"])
    try:
        for function in (
            RieContainer(tag),
            RieContainer(standin_313, volumes={str(tmp_path / "task"): "/var/task"}, handler=HANDLER),
        ):
            with function:
                answer = function.invoke(event)
                assert answer["statusCode"] == 200
                assert json.loads(answer["body"])["predictions"] == pytest.approx(expected["predictions"], abs=1e-4)
                assert function.invoke(url_event("[]"))["statusCode"] == 422
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
