"""The generated image in a real container: Lambda's Runtime Interface Emulator on loopback.

Needs a Docker engine and the stand-in Lambda base (tests/container/standin/build.sh; .ci/run makes
both). Skipped without an engine locally; with CI set, a missing engine fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from conftest import DATA, post_when_up, url_event
from test_node_client import run_node

from lambda_ml_serve.bundling.context import BYTECODE_STAGE_LABEL, render_build_context
from lambda_ml_serve.bundling.docker import build_image
from lambda_ml_serve.local.container import RieContainer, free_port

pytestmark = pytest.mark.container
pytest_plugins = ["container_fixtures"]
# One tag per run: engineers and CI runs sharing an engine must not see each other's containers.
TAG = f"lambda-ml-serve-test/wine_quality:run-{os.getpid()}"


def dangling_bytecode_stages() -> set[str]:
    listing = ["docker", "images", "-q", "--filter", "dangling=true", "--filter", f"label={BYTECODE_STAGE_LABEL}"]
    return set(subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split())


@pytest.fixture(scope="module")
def image(standin, tmp_path_factory):
    context = render_build_context(
        "wine_quality", tmp_path_factory.mktemp("ctx") / "wine", python="3.11", base_image=standin
    )
    lines: list[str] = []
    before = dangling_bytecode_stages()
    build_image(context, TAG, progress=lines.append)
    output = "\n".join(lines)
    # What a newcomer saw on every build: a builder choice they never made, a warning per RUN step,
    # and one untagged image of the bytecode stage left behind.
    assert "DOCKER_BUILDKIT" not in output and "DEPRECATED" not in output
    assert "IPv4 forwarding is disabled" not in output
    assert dangling_bytecode_stages() <= before
    yield TAG
    subprocess.run(["docker", "rmi", "-f", TAG], capture_output=True)


@pytest.fixture(scope="module")
def function(image):
    with RieContainer(image) as container:
        yield container


def test_function_url_events_match_in_process(function, wine_app, samples_body):
    event = url_event(samples_body)
    response = function.invoke(event)
    assert response["statusCode"] == 200
    assert response == wine_app(event)  # same body, and the event's request id in x-request-id


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (url_event("{nope"), 400),
        (url_event("[]"), 422),
        (url_event('[{"pH": 99}]'), 422),
        (url_event("{}", method="PUT"), 405),
        (url_event("{}", path="/elsewhere"), 404),
        (url_event(method="GET"), 200),
    ],
)
def test_statuses_in_the_container(function, wine_app, event, status):
    response = function.invoke(event)
    assert response["statusCode"] == status
    assert json.loads(response["body"]) == json.loads(wine_app(event)["body"])


def test_direct_invocation(function, wine_app, samples):
    assert function.invoke({"instances": samples}) == wine_app({"instances": samples})


def test_image_is_lean(image):
    probe = (
        "import importlib.util as u, json, sys, lambda_ml_serve.runtime.handler;"
        "print(json.dumps({'installed': [m for m in ('pandas', 'sklearn', 'boto3', 'pip') if u.find_spec(m)],"
        "'imported': [m for m in ('pandas', 'sklearn', 'boto3') if m in sys.modules]}))"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"installed": [], "imported": []}


def test_serve_image_puts_the_local_function_url_in_front(image, wine_app, samples_body):
    def running() -> set[str]:
        ps = ["docker", "ps", "-q", "--filter", f"ancestor={image}"]
        return set(subprocess.run(ps, capture_output=True, text=True).stdout.split())

    before = running()
    port = free_port()
    cli = [sys.executable, "-m", "lambda_ml_serve.cli", "serve", "wine_quality", "--image", image, "--port", str(port)]
    proc = subprocess.Popen([*cli, "--concurrency", "2"], stderr=subprocess.PIPE, text=True)
    try:
        headers, body = post_when_up(proc, port, samples_body)
        assert len(running() - before) == 2  # two execution environments, one container each
        assert headers["x-request-id"]
        assert json.loads(body) == json.loads(wine_app(url_event(samples_body))["body"])
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"[]", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=30)
        assert info.value.code == 422
        # The Node.js client: SigV4-signed, its body chunked, through the front server into the container.
        node = run_node(f"http://127.0.0.1:{port}/", DATA / "samples.json")
        assert node.returncode == 0, node.stderr
        assert json.loads(node.stdout)["predictions"] == json.loads(body)["predictions"]
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=60)
    # The function's own JSON log lines reach the console: one per request, the 422 included, each
    # counting the rows it carried.
    records = [json.loads(line) for line in log.splitlines() if line.startswith('{"_aws"')]
    assert sorted((r["status"], r["rows"]) for r in records) == [(200, 2), (200, 2), (422, 0)]
    assert not running() - before, "serve --image left its container running"


def test_compiled_image_answers_like_xgboost(standin, tmp_path, wine_app, samples_body):
    context = render_build_context(
        "wine_quality", tmp_path / "compiled", python="3.11", base_image=standin, backend="compiled"
    )
    tag = "lambda-ml-serve-test/wine_quality:compiled"
    build_image(context, tag, progress=lambda line: None)
    try:
        with RieContainer(tag) as container:
            event = url_event(samples_body)
            response = container.invoke(event)
            expected = json.loads(wine_app(event)["body"])
            assert response["statusCode"] == 200
            got = json.loads(response["body"])
            assert got["predictions"] == pytest.approx(expected["predictions"], abs=1e-4)
            assert container.invoke(url_event("[]"))["statusCode"] == 422
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_unreachable_default_base_names_base_image(engine, tmp_path):
    """README command 1 with an engine but no registry: the error says how to name a base that is there."""
    command = [
        sys.executable,
        "-m",
        "lambda_ml_serve.cli",
        "build",
        "wine_quality",
        "--backend",
        "compiled",
        "--output",
        str(tmp_path / "ctx"),
        "--tag",
        f"lambda-ml-serve-test/unbuilt:{os.getpid()}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: docker build of lambda-ml-serve-test/unbuilt:")
    assert (
        "the base image public.ecr.aws/lambda/python:3.12 for linux/amd64 is not in the engine's image store" in error
    )
    assert error.endswith("docker pull or docker load it, or pass --base-image IMAGE")
    # Docker's own reason is quoted (here: the registry's name does not resolve), never "no error".
    assert "Docker printed no error" not in error
    assert "could not be pulled (" in error and "public.ecr.aws" in error.split("could not be pulled (")[1]
