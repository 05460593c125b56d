"""arm64 images, built on this host without emulation by `lambda-ml-serve build --arch arm64`, run under qemu.

The build goes through the command line, as a user's would: BuildKit runs the bytecode stage on the
host's platform and the final stage only copies. The images then run under qemu-user (binfmt_misc)
behind the real aarch64 Runtime Interface Emulator, and must answer like the in-process handler.
Needs .ci/qemu-binfmt and the stand-in bases (tests/container/standin/build.sh, LMS_STANDIN_ARCH=arm64).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import cli, url_event

from lambda_ml_serve.local.container import RieContainer

pytestmark = [pytest.mark.container, pytest.mark.slow]
pytest_plugins = ["container_fixtures"]
#: Emulated: the first invocation imports the serving stack under qemu.
INVOKE_TIMEOUT = 300
#: xgboost's own predictor on aarch64 may round differently from x86_64's; compiled code more so.
TOLERANCE = {"xgboost": 1e-5, "compiled": 1e-4}
STATUSES = [
    (url_event("{nope"), 400),
    (url_event("[]"), 422),
    (url_event('[{"pH": 99}]'), 422),
    (url_event("{}", method="PUT"), 405),
    (url_event("{}", path="/elsewhere"), 404),
    (url_event(method="GET"), 200),
]


@pytest.fixture(scope="module", params=["xgboost", "compiled"])
def arm64_function(request, standin, arm64_standin, tmp_path_factory):
    backend = request.param
    tag = f"lambda-ml-serve-test/wine_quality:arm64-{backend}"
    command = cli(
        "build wine_quality --arch arm64 --python 3.11 --backend",
        backend,
        "--base-image",
        arm64_standin,
        "--build-base-image",
        standin,
        "--tag",
        tag,
        "--output",
        tmp_path_factory.mktemp("arm64") / backend,
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Built {tag} for linux/arm64" in result.stdout
    try:
        inspect = ["docker", "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", tag]
        assert subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip() == "linux/arm64"
        with RieContainer(tag) as container:
            yield backend, container
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_arm64_image_predicts_like_the_handler(arm64_function, wine_app, samples_body, samples):
    backend, container = arm64_function
    event = url_event(samples_body)
    response = container.invoke(event, timeout=INVOKE_TIMEOUT)
    assert response["statusCode"] == 200
    got, expected = json.loads(response["body"]), json.loads(wine_app(event)["body"])
    assert got["predictions"] == pytest.approx(expected["predictions"], abs=TOLERANCE[backend])
    assert {k: v for k, v in got.items() if k != "predictions"} == {
        k: v for k, v in expected.items() if k != "predictions"
    }
    direct = container.invoke({"instances": samples}, timeout=INVOKE_TIMEOUT)
    assert direct["predictions"] == pytest.approx(expected["predictions"], abs=TOLERANCE[backend])


def test_arm64_image_answers_every_status_like_the_handler(arm64_function, wine_app):
    _, container = arm64_function
    for event, status in STATUSES:
        response = container.invoke(event, timeout=INVOKE_TIMEOUT)
        assert response["statusCode"] == status, event
        if status != 200:
            assert json.loads(response["body"]) == json.loads(wine_app(event)["body"])


def test_arm64_image_runs_aarch64_code(arm64_function):
    """The interpreter in the image is the arm64 one, and the compiled library (if any) is aarch64 code."""
    backend, container = arm64_function
    probe = (
        "import json, os, platform; a = os.environ['LAMBDA_ML_SERVE_ARTIFACT'];"
        "h = open(a, 'rb').read(20); print(json.dumps([platform.machine(), h[:4] == b'\\x7fELF' and h[18]]))"
    )
    run = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", container.image, "-c", probe]
    result = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    machine, artifact_elf_machine = json.loads(result.stdout.strip().splitlines()[-1])
    assert machine == "aarch64"
    # EM_AARCH64 is 183; the xgboost backend's artifact is a UBJ model, not code.
    assert artifact_elf_machine == (183 if backend == "compiled" else False)
