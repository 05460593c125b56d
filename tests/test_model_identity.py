"""Which model file answered: its sha256 in GET /, in every answer's header and in the log line; --artifact
serves another file through info, invoke, serve and build; train's mistakes are one line."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import LEGACY_MODELS, post_when_up, shared_file, url_event

from lambda_ml_serve.cli import main
from lambda_ml_serve.local.container import free_port
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.settings import SHA256_ENV

CLI = [sys.executable, "-m", "lambda_ml_serve.cli"]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def original():
    return shared_file(LEGACY_MODELS["1.6.2"])


def test_every_answer_and_the_metadata_name_the_model_file(wine_app, samples_body):
    digest = sha256(wine_app.spec.artifact_path)
    for event in (url_event(samples_body), url_event("{nope"), url_event(method="GET"), url_event(path="/x")):
        assert wine_app(event)["headers"]["x-model-sha256"] == digest
    metadata = json.loads(wine_app(url_event(method="GET"))["body"])
    assert (metadata["model_sha256"], metadata["backend"]) == (digest, "xgboost")


def test_the_log_line_records_the_model_file(samples_body):
    log = io.StringIO()
    app = App.load("wine_quality", log_stream=log)
    app(url_event(samples_body))
    assert json.loads(log.getvalue())["model_sha256"] == app.model_sha256


def test_the_image_recorded_digest_is_used_and_not_recomputed(monkeypatch, original):
    monkeypatch.setenv("LAMBDA_ML_SERVE_ARTIFACT", str(original))
    monkeypatch.setenv(SHA256_ENV, "ab" * 32)  # what build wrote into the image, for the file it was given
    assert App.load("wine_quality").model_sha256 == "ab" * 32
    monkeypatch.delenv(SHA256_ENV)
    assert App.load("wine_quality").model_sha256 == sha256(original)


def test_invoke_and_info_serve_another_model_file(original, samples_body):
    invoked = subprocess.run(
        [*CLI, "invoke", "wine_quality", "--data", "-", "--artifact", str(original), "--full"],
        input=samples_body,
        capture_output=True,
        timeout=120,
    )
    assert invoked.returncode == 0, invoked.stderr
    response = json.loads(invoked.stdout)
    assert json.loads(response["body"])["predictions"] == [6.573914051055908, 4.869720935821533]
    assert response["headers"]["x-model-sha256"] == sha256(original)
    shown = subprocess.run(
        [*CLI, "info", "wine_quality", "--artifact", str(original)], capture_output=True, timeout=120
    )
    info = json.loads(shown.stdout)
    assert (info["artifact"], info["model_sha256"]) == (str(original), sha256(original))


def test_serve_with_another_model_file(original, samples_body):
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "wine_quality", "--port", str(port), "--artifact", str(original)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        headers, body = post_when_up(proc, port, samples_body)
        assert json.loads(body)["predictions"] == [6.573914051055908, 4.869720935821533]
        assert headers["x-model-sha256"] == sha256(original)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_build_records_the_given_model_file(original, tmp_path):
    output = tmp_path / "context"
    result = CliRunner().invoke(
        main, ["build", "wine_quality", "--no-docker", "--artifact", str(original), "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((output / "build-info.json").read_text())
    assert info["artifact"]["source"] == str(original)
    assert info["artifact"]["source_sha256"] == sha256(original)
    assert f"LAMBDA_ML_SERVE_MODEL_SHA256={sha256(original)}" in (output / "Dockerfile").read_text()


@pytest.mark.parametrize("command", ["info", "invoke", "serve", "build"])
def test_a_missing_artifact_is_one_line(command, tmp_path):
    args = [command, "wine_quality", "--artifact", str(tmp_path / "absent.json")]
    if command == "invoke":
        args += ["--data", "-"]
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, input="[]")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: --artifact {tmp_path / 'absent.json'}: no such file; give the path of a model file"
    ]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--data {path}: no such file"),
        ("alcohol,quality\n9.4,5\n", "training 'wine_quality' on {path} failed: "),
        ("fixed acidity,volatile acidity\n", "training 'wine_quality' on {path} failed: "),
    ],
    ids=["missing-file", "missing-columns", "no-rows"],
)
def test_train_mistakes_are_one_line(tmp_path, content, message):
    pytest.importorskip("sklearn")
    path = tmp_path / "rows.csv"
    if content is not None:
        path.write_text(content)
    result = subprocess.run(
        [*CLI, "train", "wine_quality", "--data", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: " + message.format(path=path)), result.stderr
    assert not (tmp_path / "out").exists()
