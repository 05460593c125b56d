"""A Docker engine, the stand-in Lambda bases and qemu for the container tests.

Use with ``pytest_plugins = ["container_fixtures"]``. Without an engine (or, for arm64, without
qemu-aarch64 registered with the F flag) the tests skip locally and fail under CI.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

from lambda_ml_serve.bundling.context import BYTECODE_STAGE_LABEL, render_build_context
from lambda_ml_serve.bundling.docker import Engine, build_image, find_engine

STANDIN = os.environ.get("LMS_STANDIN_TAG", "lambda-ml-serve/standin-python:3.11")
STANDIN_ARM64 = os.environ.get("LMS_STANDIN_ARM64_TAG", "lambda-ml-serve/standin-python:3.11-arm64")
STANDIN_313 = os.environ.get("LMS_STANDIN_313_TAG", "lambda-ml-serve/standin-python:3.13")
QEMU_ENTRY = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
# One tag per run: engineers and CI runs sharing an engine must not see each other's containers.
WINE_TAG = f"lambda-ml-serve-test/wine_quality:run-{os.getpid()}"


def unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def build_standin(tag: str, arch: str | None = None, python: str | None = None) -> None:
    env = {**os.environ, "LMS_STANDIN_TAG": tag}
    env.update({"LMS_STANDIN_ARCH": arch} if arch else {})
    env.update({"LMS_STANDIN_PYTHON": python} if python else {})
    result = subprocess.run([str(REPO / "tests/container/standin/build.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="session")
def engine() -> Engine:
    found = find_engine()
    if found is None:
        unavailable('no Docker engine reachable (run `eval "$(.ci/docker-up)"`)')
    build_standin(STANDIN)
    return found


@pytest.fixture(scope="session")
def standin(engine: Engine) -> str:
    """The tag of the stand-in for the official base, for this host's platform."""
    return STANDIN


@pytest.fixture(scope="session")
def arm64_standin(engine: Engine) -> str:
    """The arm64 stand-in base, after checking that this host runs arm64 binaries in containers."""
    entry = QEMU_ENTRY.read_text() if QEMU_ENTRY.is_file() else ""
    flags = next((line.split(":", 1)[1] for line in entry.splitlines() if line.startswith("flags:")), "")
    if engine.platform != "linux/arm64" and not (entry.startswith("enabled") and "F" in flags):
        unavailable("qemu-aarch64 is not registered in binfmt_misc with the F flag (run .ci/qemu-binfmt)")
    build_standin(STANDIN_ARM64, "arm64")
    return STANDIN_ARM64


@pytest.fixture(scope="session")
def standin_313(engine: Engine) -> str:
    """A Python 3.13 stand-in (Debian trixie): the newest Python Debian packages, for a 3.12+ target."""
    build_standin(STANDIN_313, python="3.13")
    return STANDIN_313


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    #: What ``docker build`` printed.
    output: str
    #: Untagged images of the bytecode stage that the build added.
    dangling_stages_left: frozenset[str]


def dangling_bytecode_stages() -> set[str]:
    listing = ["docker", "images", "-q", "--filter", "dangling=true", "--filter", f"label={BYTECODE_STAGE_LABEL}"]
    return set(subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split())


@pytest.fixture(scope="session")
def wine_image_build(standin: str, tmp_path_factory) -> BuiltImage:
    """The wine model's image on the stand-in base, built once for every module that needs it."""
    context = render_build_context(
        "wine_quality", tmp_path_factory.mktemp("ctx") / "wine", python="3.11", base_image=standin
    )
    lines: list[str] = []
    before = dangling_bytecode_stages()
    build_image(context, WINE_TAG, progress=lines.append)
    yield BuiltImage(WINE_TAG, "\n".join(lines), frozenset(dangling_bytecode_stages() - before))
    subprocess.run(["docker", "rmi", "-f", WINE_TAG], capture_output=True)


@pytest.fixture(scope="session")
def wine_image(wine_image_build: BuiltImage) -> str:
    """The tag of the wine model's image."""
    return wine_image_build.tag
