"""The generated image in a real container: Lambda's Runtime Interface Emulator on loopback.

Needs a Docker engine and the stand-in Lambda base (tests/container/standin/build.sh; .ci/run makes
both). Skipped without an engine locally; with CI set, a missing engine fails the run.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import urllib.error
import urllib.request

import numpy
import pandas
import pytest
from conftest import DATA, cli, post_when_up, url_event
from test_event_sources import SOURCES, answer_of, http_event
from test_node_client import run_node

from lambda_ml_serve.bundling.context import render_build_context
from lambda_ml_serve.bundling.docker import build_image
from lambda_ml_serve.local.container import RieContainer, free_port

pytestmark = pytest.mark.container
pytest_plugins = ["container_fixtures"]


@pytest.fixture(scope="module")
def function(wine_image):
    with RieContainer(wine_image) as container:
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


@pytest.mark.parametrize("name", SOURCES)
def test_every_event_source_in_the_container(function, wine_app, name, samples):
    """MLflow's routes, CSV, binary v2, gzip bodies and answers, HEAD: the in-process answers, byte for byte."""
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("input-0", [len(samples), len(samples[0])], "FP64")
    tensor.set_data_from_numpy(numpy.asarray([list(row.values()) for row in samples]))
    binary, length = httpclient.InferenceServerClient.generate_request_body([tensor])
    json_type = {"content-type": "application/json"}
    compressed = gzip.compress(json.dumps(samples).encode())
    requests = [
        ("POST", "/invocations", json_type, json.dumps({"dataframe_records": samples}).encode()),
        ("POST", "/invocations", {"content-type": "text/csv"}, pandas.DataFrame(samples).to_csv(index=False).encode()),
        ("GET", "/ping", {}, None),
        ("HEAD", "/openapi.json", {"accept-encoding": "gzip"}, None),
        ("POST", "/v2/models/wine_quality/infer", {"inference-header-content-length": str(length)}, binary),
        ("POST", "/invocations", {**json_type, "content-encoding": "gzip"}, compressed),
        ("POST", "/", {**json_type, "accept-encoding": "gzip"}, json.dumps(samples * 200).encode()),
    ]
    for method, path, headers, body in requests:
        event = http_event(name, method, path, headers, body)
        response = function.invoke(event)
        assert response["statusCode"] == 200, (method, path, response["body"])
        got_headers, got_body = answer_of(response)
        in_process_headers, in_process_body = answer_of(wine_app(event))
        assert got_body == in_process_body, (method, path)
        # An ALB event carries no request id: each answer makes its own.
        assert got_headers.keys() == in_process_headers.keys() and got_headers.pop("x-request-id")
        assert got_headers == {k: v for k, v in in_process_headers.items() if k != "x-request-id"}, (method, path)


def test_direct_invocation(function, wine_app, samples):
    assert function.invoke({"instances": samples}) == wine_app({"instances": samples})


def test_image_is_lean(wine_image):
    probe = (
        "import importlib.util as u, json, sys, lambda_ml_serve.runtime.handler;"
        "print(json.dumps({'installed': [m for m in ('pandas', 'sklearn', 'boto3', 'pip') if u.find_spec(m)],"
        "'imported': [m for m in ('pandas', 'sklearn', 'boto3') if m in sys.modules]}))"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", wine_image, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"installed": [], "imported": []}


def test_serve_image_puts_the_local_function_url_in_front(wine_image, wine_app, samples_body):
    def running() -> set[str]:
        ps = ["docker", "ps", "-q", "--filter", f"ancestor={wine_image}"]
        return set(subprocess.run(ps, capture_output=True, text=True).stdout.split())

    before = running()
    port = free_port()
    command = cli("serve wine_quality --image", wine_image, "--port", port)
    proc = subprocess.Popen([*command, "--concurrency", "2"], stderr=subprocess.PIPE, text=True)
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
    command = cli(
        "build wine_quality --backend compiled --output",
        tmp_path / "ctx",
        "--tag",
        f"lambda-ml-serve-test/unbuilt:{os.getpid()}",
    )
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
