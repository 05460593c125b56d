"""KServe's Python client (``kserve``) in a virtual environment of its own, built once and cached.

kserve 0.21 requires pandas<3, protobuf<7 and psutil<6, below what this project runs with, so it
cannot share the test interpreter's environment. Use with ``pytest_plugins = ["kserve_fixtures"]``;
``kserve_predictions(url, rows)`` runs tests/kserve_client.py in that environment. Without network
access to the package index the build fails and the tests that need it skip, except under ``CI``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

#: What is installed; the cached environment is keyed by it and by the interpreter's version.
KSERVE_REQUIREMENTS = ("kserve==0.21.0",)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lambda-ml-serve" / "kserve-venv"
SCRIPT = Path(__file__).with_name("kserve_client.py")


def kserve_python() -> Path:
    """The interpreter of the cached environment, built first when it is not there yet.

    It is built in a temporary folder beside its final place and renamed into it, so an interrupted
    build leaves nothing that looks finished. Only ``bin/python`` is used: a renamed venv keeps working
    through it (its console scripts' shebangs still name the temporary folder).
    """
    key = hashlib.sha256(f"{sys.version_info[:2]} {' '.join(KSERVE_REQUIREMENTS)}".encode()).hexdigest()[:16]
    final = CACHE / key
    if (final / "bin" / "python").exists():
        return final / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{key}.building-", dir=CACHE))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True)
        install = [str(building / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        result = subprocess.run([*install, *KSERVE_REQUIREMENTS], capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(KSERVE_REQUIREMENTS)} failed: {result.stderr[-2000:]}")
        try:
            building.rename(final)
        except OSError:  # another run finished first: use its environment
            if not (final / "bin" / "python").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final / "bin" / "python"


@pytest.fixture(scope="session")
def kserve_predictions() -> Callable[[str, list[dict]], dict[str, list[float]]]:
    """``(base_url, rows) -> {case: predictions}``: KServe's REST client, one request per case."""
    try:
        python = kserve_python()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        message = f"the kserve environment could not be built: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    def run(base_url: str, rows: list[dict]) -> dict[str, list[float]]:
        result = subprocess.run(
            [str(python), str(SCRIPT), base_url],
            input=json.dumps(rows),
            capture_output=True,
            text=True,
            timeout=300,
            # The project's PYTHONPATH would put its own environment's packages before kserve's.
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout)

    return run
