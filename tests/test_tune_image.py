"""`tune --image`: the built image behind RIE under Docker's --cpus and --memory, read back with docker inspect.

Needs a Docker engine and the stand-in Lambda base (as tests/test_container.py). No timing is asserted.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from lambda_ml_serve.bundling.context import render_build_context
from lambda_ml_serve.bundling.docker import build_image
from lambda_ml_serve.tune.cgroups import Limits
from lambda_ml_serve.tune.measure import ImageTarget, image_arch, measure_image
from lambda_ml_serve.tune.report import Settings, build_report, schema
from lambda_ml_serve.tune.session import request_bodies

pytestmark = pytest.mark.container
pytest_plugins = ["container_fixtures"]
TAG = f"lambda-ml-serve-test/tune-compiled:run-{os.getpid()}"


@pytest.fixture(scope="module")
def image(standin, tmp_path_factory):
    context = render_build_context(
        "wine_quality", tmp_path_factory.mktemp("ctx") / "wine", python="3.11", base_image=standin, backend="compiled"
    )
    build_image(context, TAG, progress=lambda line: None)
    yield TAG
    subprocess.run(["docker", "rmi", "-f", TAG], capture_output=True)


def containers_of(image: str) -> list[str]:
    listing = ["docker", "ps", "-aq", "--filter", f"ancestor={image}"]
    return subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()


def test_the_image_runs_under_the_sizes_cpus_and_memory(image):
    from jsonschema import validate

    from lambda_ml_serve.plugins import get_registry

    example = list(get_registry().model("wine_quality").spec.example)
    bodies = request_bodies(example, (1, 20))
    target = ImageTarget("wine_quality (compiled, image)", image, image_arch(image))
    assert target.arch == "x86_64"
    results = [measure_image(target, Limits(m), bodies, cold_starts=1, requests=3) for m in (128, 1769)]
    for result, memory in zip(results, (128, 1769), strict=True):
        assert result.status == "ok", result.detail
        # What Docker applied, from docker inspect: the size's share of a vCPU and the size itself.
        assert result.applied == {"cpus": Limits(memory).quota_us / 100_000, "memory_bytes": memory * 2**20}
        assert len(result.cold_ms) == 1
        assert {rows: len(times) for rows, times in result.warm_ms.items()} == {1: 3, 20: 3}
    assert containers_of(image) == [], "a container was left behind"
    settings = Settings((128, 1769), ("x86_64",), (1, 20), 3, 1, 0.01)
    report = build_report(
        model="wine_quality",
        backend="compiled",
        label=target.label,
        target={"kind": "image", "image": image, "context": None},
        settings=settings,
        results=results,
        limiter="docker",
    )
    validate(report, schema())
    assert report["recommended"]["memory_mb"] in (128, 1769)
