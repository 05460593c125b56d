"""`build` shows its steps on a terminal and prints only its result otherwise."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner

from lambda_ml_serve.bundling.deployment_zip import build_zip
from lambda_ml_serve.bundling.steps import showing_steps, step
from lambda_ml_serve.cli import main

ZIP_STEPS = [
    "checking the model",
    "preparing the artifact",
    "parity gate: the prepared artifact against the original",
    "resolving and installing wheels for x86_64, CPython 3.12",
    "installing lambda-ml-serve and the plugin",
    "writing the build context",
    "compiling bytecode (python3.12)",
    "writing wine.zip",
]


def test_steps_show_only_on_a_terminal():
    piped = io.StringIO()
    with showing_steps(piped):
        step("resolving wheels")
    assert piped.getvalue() == ""
    step("outside any build: nowhere to show")
    terminal = io.StringIO()
    with showing_steps(terminal, force_terminal=True):
        step("resolving wheels")
        step("installing")
    shown = terminal.getvalue()
    assert "resolving wheels" in shown and "installing" in shown and "✓" in shown


@pytest.mark.slow
def test_a_zip_build_shows_every_step_on_a_terminal(tmp_path):
    terminal = io.StringIO()
    with showing_steps(terminal, force_terminal=True):
        build_zip("wine_quality", tmp_path / "wine.zip", arch="x86_64", python="3.12")
    shown = terminal.getvalue()
    positions = [shown.find(name) for name in ZIP_STEPS]
    assert -1 not in positions, [name for name in ZIP_STEPS if name not in shown]
    assert positions == sorted(positions)


@pytest.mark.slow
def test_a_build_through_a_pipe_prints_its_result_only(tmp_path):
    result = CliRunner().invoke(
        main, ["build", "wine_quality", "--package", "zip", "--output", str(tmp_path / "w.zip")]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Wrote {tmp_path / 'w.zip'}")
    assert not any(name in result.output for name in ZIP_STEPS[:-1])
