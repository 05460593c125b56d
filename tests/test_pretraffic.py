"""The pre-traffic check against the real image: the stand-in base, run with the Runtime Interface Emulator.

RIE serves Lambda's Invoke API (``/2015-03-31/functions/function/invocations``), so the check's boto3
Lambda client reaches the container through ``endpoint_url`` exactly as it reaches a version in AWS.
Only the CodeDeploy report (``handler``) needs AWS; :func:`check_version` is the whole verdict.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import LEGACY_MODELS

from lambda_ml_serve.bundling.context import render_build_context
from lambda_ml_serve.bundling.docker import build_image
from lambda_ml_serve.local.container import RieContainer

boto3 = pytest.importorskip("boto3")
botocore_config = pytest.importorskip("botocore.config")
pretraffic = pytest.importorskip("lambda_ml_serve_cdk.pretraffic")

pytestmark = pytest.mark.container
pytest_plugins = ["container_fixtures"]
RUN = os.getpid()


def expected_of(context) -> dict:
    """What the construct writes into the hook's ``expected.json``, from the context's build-info.json."""
    info = json.loads((context.path / "build-info.json").read_text(encoding="utf-8"))
    return {
        **info["example"],
        "model": info["model"],
        "version": info["version"],
        "model_sha256": info["artifact"]["source_sha256"],
    }


def built(standin, folder, tag: str, artifact=None):
    context = render_build_context("wine_quality", folder, python="3.11", base_image=standin, artifact=artifact)
    build_image(context, tag, progress=lambda line: None)
    return context


@pytest.fixture(scope="module")
def images(standin, tmp_path_factory):
    """The wine image, and one built from another model file (an older XGBoost model of the same features)."""
    root = tmp_path_factory.mktemp("pretraffic")
    tags = {
        "right": f"lambda-ml-serve-test/pretraffic:right-{RUN}",
        "other": f"lambda-ml-serve-test/pretraffic:other-{RUN}",
    }
    contexts = {
        "right": built(standin, root / "right", tags["right"]),
        "other": built(standin, root / "other", tags["other"], artifact=LEGACY_MODELS["1.6.2"]),
    }
    yield tags, contexts
    subprocess.run(["docker", "rmi", "-f", *tags.values()], capture_output=True)


def lambda_client(container: RieContainer):
    """boto3's Lambda client pointed at the container's RIE (it signs with made-up keys, RIE ignores them)."""
    return boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{container.port}",
        region_name="eu-west-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=botocore_config.Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def test_build_records_the_example_answers(images):
    _, contexts = images
    expected = expected_of(contexts["right"])
    assert len(expected["rows"]) == len(expected["predictions"]) == 2
    assert all(isinstance(p, float) for p in expected["predictions"])
    other = expected_of(contexts["other"])
    assert other["model_sha256"] != expected["model_sha256"]
    assert other["predictions"] != expected["predictions"]


def test_the_right_image_passes(images):
    tags, contexts = images
    with RieContainer(tags["right"]) as container:
        result = pretraffic.check_version(lambda_client(container), "function", expected_of(contexts["right"]))
    assert result.passed, result.reason
    assert result.latency_ms is not None and result.latency_ms > 0
    assert "3 answers as recorded at build" in result.reason


def test_an_image_of_another_model_file_fails(images):
    tags, contexts = images
    expected = expected_of(contexts["right"])
    with RieContainer(tags["other"]) as container:
        client = lambda_client(container)
        result = pretraffic.check_version(client, "function", expected)
        assert not result.passed
        assert result.reason.startswith("the version serves model file ")
        # Without the file's identity to go by, its answers give it away.
        anonymous = pretraffic.check_version(client, "function", {**expected, "model_sha256": None})
    assert not anonymous.passed
    assert anonymous.reason.startswith("row 0 is ")
    assert "build recorded" in anonymous.reason


def test_a_wrong_recorded_answer_fails(images):
    tags, contexts = images
    expected = expected_of(contexts["right"])
    wrong = {**expected, "predictions": [expected["predictions"][0], expected["predictions"][1] + 0.5]}
    with RieContainer(tags["right"]) as container:
        client = lambda_client(container)
        result = pretraffic.check_version(client, "function", wrong)
        # A bound no real invocation meets: the verdict is "too slow", whatever the machine.
        slow = pretraffic.check_version(client, "function", expected, max_latency_ms=1e-6)
    assert not result.passed
    assert result.reason.startswith("row 1 is ")
    assert not slow.passed and slow.reason.startswith("too slow")


def test_errors_fail(images):
    tags, contexts = images
    expected = expected_of(contexts["right"])
    with RieContainer(tags["right"]) as container:
        client = lambda_client(container)
        # Rows the model refuses: an error answer, not the recorded one.
        refused = pretraffic.check_version(client, "function", {**expected, "rows": [{"alcohol": 11}] * 2})
        # A function that does not exist behind the endpoint: the Invoke call itself fails.
        missing = pretraffic.check_version(client, "no-such-function", expected)
    assert not refused.passed
    assert refused.reason == "the example rows were answered with HTTP 422 (validation_error)"
    assert not missing.passed and missing.reason.startswith("invoking no-such-function failed")
    # A function that fails to start (a setting its init refuses) answers nothing.
    with RieContainer(tags["right"], env={"LAMBDA_ML_SERVE_RESPONSE": "no-such-shape"}) as broken:
        crashed = pretraffic.check_version(lambda_client(broken), "function", expected)
    assert not crashed.passed
    # Lambda reports a failed init as a function error; RIE answers the Invoke call with a 502.
    assert crashed.reason.startswith(("the function failed", "invoking function failed")), crashed.reason
