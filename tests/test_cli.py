"""The command line, run as a user runs it: a subprocess with real exit codes and output."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
from conftest import CLI, cli
from served import post, serving


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120)


def test_help_everywhere():
    for command in ["", "list", "info", "schema", "invoke", "serve", "train", "build", "new", "predict"]:
        result = run(*command.split(), "--help")
        assert result.returncode == 0, result.stderr
        assert b"Usage:" in result.stdout


def test_list_shows_the_plugin():
    result = run("list")
    assert result.returncode == 0
    header, *rows = result.stdout.decode().splitlines()
    assert header.split() == ["MODEL", "VERSION", "BACKEND", "PLUGIN", "DISTRIBUTION", "STATUS"]
    wine = next(r for r in rows if r.startswith("wine_quality"))
    assert "xgboost" in wine and "lambda-ml-serve-wine-quality" in wine and wine.endswith("ok")
    as_json = json.loads(run("list", "--json").stdout)
    assert {"model": "wine_quality", "status": "ok"}.items() <= next(
        r for r in as_json if r["model"] == "wine_quality"
    ).items()


def test_info_and_schema():
    info = json.loads(run("info", "wine_quality").stdout)
    assert info["distribution"].startswith("lambda-ml-serve-wine-quality")
    assert info["metrics"]["rmse"] <= 0.69
    assert any(r.startswith("xgboost-cpu") for r in info["requirements"])
    schema = json.loads(run("schema", "wine_quality").stdout)
    assert schema["additionalProperties"] is False
    assert list(schema["properties"])[:2] == ["fixed acidity", "volatile acidity"]


def test_invoke_file_and_stdin(samples_body, wine_app, tmp_path):
    path = tmp_path / "body.json"
    path.write_bytes(samples_body)
    from_file = run("invoke", "wine_quality", "--data", str(path))
    assert from_file.returncode == 0, from_file.stderr
    expected = wine_app({"instances": json.loads(samples_body)})
    assert json.loads(from_file.stdout) == expected
    from_stdin = run("invoke", "wine_quality", "--data", "-", stdin=samples_body)
    assert json.loads(from_stdin.stdout) == expected


def test_invoke_error_exits_non_zero_with_one_line():
    result = run("invoke", "wine_quality", "--data", "-", stdin=b'[{"pH": 3}]')
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["type"] == "validation_error"
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("Error: 422 validation_error:")


@pytest.mark.parametrize("command", ["info", "schema", "invoke", "serve"])
def test_unknown_model_lists_known_ones(command, tmp_path):
    extra = ["--data", "-"] if command == "invoke" else []
    result = run(command, "nope", *extra, stdin=b"[]")
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "no model named 'nope'; installed models:" in err and "wine_quality" in err


def test_missing_data_file_is_one_line():
    result = run("invoke", "wine_quality", "--data", "/nonexistent.json")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "Error: cannot read --data /nonexistent.json: No such file or directory"


def test_serve_answers_like_a_function_url(samples_body, wine_app):
    with serving() as url:
        headers, body = post(f"{url}/", samples_body)
    assert json.loads(body) == wine_app({"instances": json.loads(samples_body)})
    assert headers["x-request-id"]


def test_serve_refuses_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run("serve", "wine_quality", "--port", str(s.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr.decode()


@pytest.fixture
def local_url(wine_app):
    from lambda_ml_serve.local.server import FunctionUrlServer

    server = FunctionUrlServer(wine_app, port=0).start()
    yield server.url
    server.close()


def test_predict_against_the_local_function_url(local_url, samples_body, wine_app, tmp_path):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    expected = wine_app({"instances": json.loads(samples_body)})
    for flags in (["--no-sign"], ["--region", "eu-west-1"]):
        result = subprocess.run(
            cli("predict", local_url, "--data", "-", *flags),
            input=samples_body,
            capture_output=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == expected
    bad_row = json.dumps(dict(json.loads(samples_body)[0], pH=99)).encode()
    bad = subprocess.run(
        cli("predict", local_url, "--data", "-", "--no-sign"),
        input=bad_row,
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode == 1
    message = bad.stderr.decode().strip()
    assert message.startswith("Error: 422") and "field 'pH'" in message and "Traceback" not in message
