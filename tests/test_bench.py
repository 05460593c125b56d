"""The benchmark harness end to end on a small scale: real worker processes, real handler, its report's shape.

Only structure is asserted, never a timing. The framework serves from this environment here (not a
rendered context) and stands in as the baseline, so the test needs neither renders nor the original's venv.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

import pytest
from conftest import DATA, REPO, shared_file

sys.path.insert(0, str(REPO / "bench"))

import run
import variants


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) pins the benchmark's processes")
def test_harness_measures_and_reports_every_variant():
    shared_file(DATA / "wine_concat.csv")
    command = variants.worker_command(sys.executable, [], isolated=False)
    env = {"LAMBDA_ML_SERVE_MODEL": "wine_quality"}
    measured = [
        variants.Variant(
            "framework", command, env, variants.RUNTIME, ("lambda_ml_serve.runtime.app",), 1.0, baseline=True
        ),
        variants.Variant("framework again", command, env, variants.RUNTIME, (), 1.0, goals={"1": 1e-9, "cold": 1e9}),
    ]
    args = argparse.Namespace(cold=2, rounds=2, sizes=[1, 10], repeats={1: 4, 10: 2}, cpu=0)
    bodies = {str(n): json.dumps(run.rows_from(DATA / "wine_concat.csv", n)) for n in args.sizes}
    results = run.measure(measured, bodies, args)

    for label in ("framework", "framework again"):
        result = results[label]
        assert len(result["cold"]) == 2
        assert all(set(cold) == {*run.STAGES, "total"} and min(cold.values()) >= 0 for cold in result["cold"])
        assert {size: len(times) for size, times in result["warm"].items()} == {1: 4, 10: 2}
        assert len(result["predictions"]) == 10 and result["rss_kb"] > 0
        assert "pandas" not in result["modules"]

    report = run.render("the project's model", measured, results, args)
    lines = report.splitlines()
    assert lines[0] == "#### the project's model"
    assert sum(line.startswith("| framework again |") for line in lines) == 4  # cold, median, p99, memory
    assert "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" in lines  # the cold-start stages
    assert any(
        line.startswith("| framework again: 1 row (median) >= 1e-09x |") and line.endswith("| met |") for line in lines
    )
    assert any(
        line.startswith("| framework again: cold start >= 1e+09x |") and line.endswith("| **missed** |")
        for line in lines
    )
