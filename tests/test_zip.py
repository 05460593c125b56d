"""`lambda-ml-serve build --package zip`: the image's content as a deployment zip for the managed runtime.

The zip is checked file by file, refused when over Lambda's 250 MB unzipped limit, and run unpacked
as /var/task on the stand-in base with the real Runtime Interface Emulator (handler from the zip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import url_event

from lambda_ml_serve.bundling import deployment_zip
from lambda_ml_serve.bundling.deployment_zip import HANDLER, HANDLER_MODULE, MAX_UNZIPPED_BYTES, build_zip
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.local.container import RieContainer

pytest_plugins = ["container_fixtures"]
#: The stand-in base runs Debian's Python 3.11.
PYTHON = "3.11"
NEVER_IN_ZIP = ("pandas/", "sklearn/", "boto3/", "botocore/", "pip/", "setuptools/", "click/", "jinja2/")


@pytest.fixture(scope="module")
def wine_zip(tmp_path_factory) -> tuple[Path, str]:
    """The zip, written by the command as a user runs it; and what the command printed."""
    out = tmp_path_factory.mktemp("zip") / "wine.zip"
    command = [
        sys.executable,
        "-m",
        "lambda_ml_serve.cli",
        "build",
        "wine_quality",
        "--package",
        "zip",
        "--python",
        PYTHON,
        "--output",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.mark.slow
def test_zip_holds_the_serving_content_and_its_own_handler(wine_zip):
    path, printed = wine_zip
    assert f"handler {HANDLER}" in printed and "runtime python3.11" in printed
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        unzipped = sum(info.file_size for info in archive.infolist())
        handler = archive.read(f"{HANDLER_MODULE}.py").decode()
    assert unzipped < MAX_UNZIPPED_BYTES
    assert names == sorted(names)
    assert "artifacts/model.ubj" in names
    assert {
        "xgboost/lib/libxgboost.so",  # the lean backend: libxgboost alone, not the xgboost package
        "lambda_ml_serve/runtime/handler.py",
        "lambda_ml_serve_wine_quality/__init__.py",
    } <= set(names)
    assert not [n for n in names if n.startswith(NEVER_IN_ZIP)]
    # The host runs the target's Python, so the bytecode is compiled into the zip.
    assert any(n.startswith("lambda_ml_serve/__pycache__/") and n.endswith(".cpython-311.pyc") for n in names)
    assert "'wine_quality'" in handler and "artifacts/model.ubj" in handler


@pytest.mark.slow
def test_zip_over_the_limit_is_refused_naming_the_largest_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(deployment_zip, "MAX_UNZIPPED_BYTES", 10 * 2**20)
    out = tmp_path / "out" / "wine.zip"
    with pytest.raises(
        BuildError,
        match=r"\d+ MB unzipped, over Lambda's 10 MB limit; largest packages: xgboost \d+ MB, \w+ \d+ MB",
    ):
        build_zip("wine_quality", out, python=PYTHON)
    assert list((tmp_path / "out").iterdir()) == []  # no zip, no staging folder


def test_zip_output_must_be_a_zip_file(tmp_path):
    with pytest.raises(BuildError, match=r"does not end in \.zip"):
        build_zip("wine_quality", tmp_path / "wine.tar")
    (tmp_path / "folder.zip").mkdir()
    with pytest.raises(BuildError, match="is a folder"):
        build_zip("wine_quality", tmp_path / "folder.zip")


def test_a_foreign_file_is_not_replaced_without_force(tmp_path):
    precious = tmp_path / "mine.zip"
    precious.write_bytes(b"not a deployment zip")
    with pytest.raises(BuildError, match=r"mine\.zip exists and was not written by lambda-ml-serve build; .*--force"):
        build_zip("wine_quality", precious)
    assert precious.read_bytes() == b"not a deployment zip"


def test_image_only_options_are_refused_with_zip(tmp_path):
    command = [
        sys.executable,
        "-m",
        "lambda_ml_serve.cli",
        "build",
        "wine_quality",
        "--package",
        "zip",
        "--tag",
        "x:1",
        "--output",
        str(tmp_path / "w.zip"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: --tag: applies only to --package image"
    assert not (tmp_path / "w.zip").exists()


def test_no_docker_is_accepted_with_zip(tmp_path):
    """A zip is built without Docker anyway, so --no-docker changes nothing."""
    output = tmp_path / "w.zip"
    command = [sys.executable, "-m", "lambda_ml_serve.cli", "build", "wine_quality", "--package", "zip"]
    result = subprocess.run([*command, "--no-docker", "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert output.is_file() and result.stdout.startswith("Wrote ")


@pytest.mark.container
@pytest.mark.slow
def test_unpacked_zip_runs_on_the_standin_with_the_real_rie(wine_zip, standin, tmp_path, wine_app, samples_body):
    path, _ = wine_zip
    task = tmp_path / "task"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(task)
    os.chmod(task, 0o755)
    # No environment: the zip's handler module names the model, plugin, backend and artifact itself.
    with RieContainer(standin, volumes={str(task): "/var/task"}, handler=HANDLER) as function:
        event = url_event(samples_body)
        response = function.invoke(event)
        assert response["statusCode"] == 200
        assert json.loads(response["body"]) == json.loads(wine_app(event)["body"])
        for bad, status in ((url_event("[]"), 422), (url_event("{nope"), 400), (url_event("{}", method="PUT"), 405)):
            answer = function.invoke(bad)
            assert answer["statusCode"] == status
            assert json.loads(answer["body"]) == json.loads(wine_app(bad)["body"])
