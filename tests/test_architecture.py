"""The architecture as code: the import contracts in pyproject.toml hold, and no source module copies another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def run_in_repo(*command: str) -> subprocess.CompletedProcess:
    # The checks read the source of this checkout, whatever copy of the package is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_import_contracts_are_kept():
    """Layers, a runtime without build-time code, backends' run-time modules without their build, no cycles."""
    result = run_in_repo(str(Path(sys.executable).with_name("lint-imports")), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_copied_blocks_between_source_modules():
    result = run_in_repo(
        sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code", "--score=n", "lambda_ml_serve"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
