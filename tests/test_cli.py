"""The command line, run as a user runs it: a subprocess with real exit codes and output."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import post_when_up

from lambda_ml_serve.local.container import free_port

CLI = [sys.executable, "-m", "lambda_ml_serve.cli"]


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


def test_info_names_a_file_that_is_not_a_model():
    result = run("info", "wine_quality", "--artifact", "README.md")
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert err.count("\n") == 0 and "[bt]" not in err and "Stack trace" not in err
    assert err.endswith(
        "failed to load README.md with backend 'xgboost': README.md is not an XGBoost model (JSON or UBJ "
        "written by Booster.save_model); XGBoost says: Check failed: str[0] == '{' (# vs. {) : Invalid model "
        "format in: `README.md`."
    )


@pytest.mark.parametrize(
    ("backend", "what"),
    [
        ("xgboost", "is not an XGBoost model"),
        ("lightgbm", "is not a LightGBM model"),
        ("sklearn", "is not a scikit-learn model"),
        ("onnx", "is not an ONNX model"),
        ("compiled", "is not a compiled model library"),
    ],
)
def test_every_backend_names_a_file_it_cannot_read(backend, what, tmp_path, capfd):
    from pathlib import Path

    from lambda_ml_serve.errors import ModelLoadError
    from lambda_ml_serve.plugins import get_registry

    readme = Path(__file__).resolve().parents[1] / "README.md"
    with pytest.raises(ModelLoadError) as caught:
        get_registry().backend(backend).load(readme)
    message = str(caught.value)
    assert message.startswith(f"{readme} {what}") and "\n" not in message and len(message) < 500
    assert capfd.readouterr() == ("", "")  # nothing printed by the library itself


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
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "wine_quality", "--port", str(port)],
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        headers, body = post_when_up(proc, port, samples_body)
        assert json.loads(body) == wine_app({"instances": json.loads(samples_body)})
        assert headers["x-request-id"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def test_serve_refuses_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run("serve", "wine_quality", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; choose another --host or --port"
    )


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_serve_refuses_a_port_out_of_range_as_a_usage_error(port):
    result = run("serve", "wine_quality", "--port", port)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Error: Invalid value for '--port'")


def test_serve_refuses_an_unknown_host_in_one_line():
    result = run("serve", "wine_quality", "--host", "no-such-host.invalid", "--port", "0")
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert err.count("\n") == 0 and err.startswith("Error: cannot listen on no-such-host.invalid:0: ")


def test_serve_prints_an_access_line_per_request(samples_body):
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "wine_quality", "--port", str(port), "--log-format", "text"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        post_when_up(proc, port, samples_body)
        lines = []
        while not any(line.startswith("POST / ") for line in lines):
            lines.append(proc.stderr.readline().strip())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()
    method, path, status, rows, word, latency, unit = lines[-1].split()
    assert (method, path, status, rows, word, unit) == ("POST", "/", "200", "2", "rows", "ms")
    assert float(latency) > 0
    assert not any(line.startswith("{") for line in lines)  # the JSON records are not printed as well


def test_serve_log_format_follows_the_terminal():
    from lambda_ml_serve.local.server import AccessLog, access_log_for

    piped = io.StringIO()
    assert access_log_for("auto", piped) is None and access_log_for("json", piped) is None
    assert isinstance(access_log_for("text", piped), AccessLog)
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert isinstance(access_log_for("auto", terminal), AccessLog)
        assert access_log_for("json", terminal) is None
    os.close(leader)


def test_access_log_keeps_rows_and_errors_from_the_function_records():
    from lambda_ml_serve.local.server import AccessLog
    from lambda_ml_serve.runtime.telemetry import RequestLog

    out = io.StringIO()
    log = AccessLog(out)
    RequestLog("m", "1", log).write("r-1", 200, 3, 1.5)
    RequestLog("m", "1", log).write("r-2", 500, 1, 2.0, error="Traceback...\nValueError: boom " + "x" * 400)
    log.write("a library's warning\n")
    log.request("POST", "/", 200, "r-1", 1.5)
    log.request("POST", "/predict", 500, "r-2", 2.25)
    log.request("GET", "/", 200, "unknown", 0.5)
    lines = out.getvalue().splitlines()
    assert lines[:3] == ["a library's warning", "POST / 200 3 rows 1.5 ms", "POST /predict 500 1 row 2.2 ms"]
    assert lines[3].startswith("  Traceback... ValueError: boom x") and len(lines[3]) <= 302
    assert lines[4] == "GET / 200 - rows 0.5 ms"


@pytest.fixture
def local_url(wine_app):
    from lambda_ml_serve.local.server import FunctionUrlServer

    server = FunctionUrlServer(wine_app, port=0).start()
    yield server.url
    server.close()


def test_predict_against_the_local_function_url(local_url, samples_body, wine_app, tmp_path):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    expected = wine_app({"instances": json.loads(samples_body)})
    for flags in (["--no-sign"], ["--region", "eu-west-1"]):
        result = subprocess.run([*CLI, "predict", local_url, "--data", "-", *flags], input=samples_body,
                                capture_output=True, timeout=60, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == expected
    bad_row = json.dumps(dict(json.loads(samples_body)[0], pH=99)).encode()
    bad = subprocess.run([*CLI, "predict", local_url, "--data", "-", "--no-sign"], input=bad_row,
                         capture_output=True, timeout=60, env=env)  # fmt: skip
    assert bad.returncode == 1
    message = bad.stderr.decode().strip()
    assert message.startswith("Error: 422") and "field 'pH'" in message and "Traceback" not in message
