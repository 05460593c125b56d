"""``lambda-ml-serve tune``: limits really applied, sizes that do not fit reported, the cost arithmetic, the outputs.

Real processes run under real cgroups (root on Linux: skipped elsewhere, except in CI); no timing is
asserted, only what was applied, what was counted and what was written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lambda_ml_serve.cli import main
from lambda_ml_serve.tune import cost
from lambda_ml_serve.tune.cgroups import PERIOD_US, Cgroup, CgroupError, Limits, detect
from lambda_ml_serve.tune.measure import (
    ProcessTarget,
    SizeResult,
    docker_limits,
    dockerfile_env,
    measure_process,
    over_the_limit,
)
from lambda_ml_serve.tune.plot import plot
from lambda_ml_serve.tune.report import Settings, build_report, schema, summary, table

SUPPORT = Path(__file__).resolve().parent / "tune_support"
X86 = cost.US_EAST_1.gb_second["x86_64"]
ARM = cost.US_EAST_1.gb_second["arm64"]
REQUEST = 0.20 / 1e6


def _cgroups_usable() -> bool:
    if detect() is None:
        return False
    try:
        Cgroup(Limits(128)).create().remove()
    except CgroupError:
        return False
    return True


needs_cgroups = pytest.mark.skipif(
    not os.environ.get("CI") and not _cgroups_usable(), reason="needs cgroup v1/v2 cpu and memory controllers as root"
)


def ballast(mb: int) -> ProcessTarget:
    """A real child interpreter serving a small stdlib handler that holds ``mb`` MB from init."""
    return ProcessTarget(
        "ballast", (SUPPORT,), {"BALLAST_MB": str(mb)}, handler="ballast_handler", isolated=True, arch="x86_64"
    )


BODIES = {1: json.dumps([{"a": 1.0, "b": 2.0}]), 10: json.dumps([{"a": 1.0, "b": 2.0}] * 10)}


# ---------------------------------------------------------------------------------------------
# Cost arithmetic, against hand-computed figures


@pytest.mark.parametrize(
    ("duration", "billed"),
    [(0.0, 1), (0.01, 1), (1.0, 1), (0.1 + 0.2 + 0.7, 1), (1.0000001, 2), (1.001, 2), (12.5, 13), (100.0, 100)],
)
def test_duration_is_billed_rounded_up_to_the_millisecond(duration, billed):
    assert cost.billed_ms(duration) == billed


def test_one_invocation_is_the_request_price_plus_billed_gb_seconds():
    # 128 MB for 0.4 ms: billed 1 ms = 0.125 GB x 0.001 s.
    assert cost.invocation_cost(128, 0.4, "x86_64") == pytest.approx(REQUEST + 0.125 * 0.001 * X86, rel=1e-12)
    # 1,769 MB for 20.2 ms on arm64: billed 21 ms.
    assert cost.invocation_cost(1769, 20.2, "arm64") == pytest.approx(REQUEST + 1769 / 1024 * 0.021 * ARM, rel=1e-12)


def test_a_million_requests_with_and_without_cold_starts():
    # 1,024 MB: warm calls of 1.2 ms and 2.0 ms are both billed 2 ms; a cold start of 100.4 ms is billed 101 ms.
    result = cost.cost_of(1024, "x86_64", [1.2, 2.0], [100.4], rows=10, cold_start_rate=0.5)
    warm = REQUEST + 1.0 * 0.002 * X86
    cold = REQUEST + 1.0 * 0.101 * X86
    assert result.per_million_requests == pytest.approx(warm * 1e6, rel=1e-12)
    assert result.per_million_requests_with_cold_starts == pytest.approx((warm + cold) / 2 * 1e6, rel=1e-12)
    assert result.per_million_predictions == pytest.approx(warm * 1e6 / 10, rel=1e-12)
    assert result.per_million_predictions_with_cold_starts == pytest.approx((warm + cold) / 2 * 1e6 / 10, rel=1e-12)


def test_the_mean_of_billed_durations_is_priced_not_the_billed_mean():
    # 0.5 ms and 1.5 ms average 1 ms, but Lambda bills 1 ms and 2 ms: 1.5 ms on average.
    result = cost.cost_of(1024, "x86_64", [0.5, 1.5], [1.0], rows=1, cold_start_rate=0)
    assert result.per_million_requests == pytest.approx((REQUEST + 0.0015 * X86) * 1e6, rel=1e-12)


def test_no_tier_discount_however_many_requests():
    # A billion 1 ms requests at 10,240 MB would pass the first tier (6 billion GB-s); the price stays the first tier's.
    one = cost.cost_of(10_240, "x86_64", [1.0], [1.0], rows=1, cold_start_rate=0).per_million_requests
    assert one == pytest.approx(0.20 + 10 * 0.001 * X86 * 1e6, rel=1e-12)
    assert one * 1000 == pytest.approx(1000 * 0.20 + 1000 * 10 * 0.001 * X86 * 1e6, rel=1e-12)


def test_unbilled_init_prices_a_cold_start_as_a_warm_call():
    free_init = dataclasses.replace(cost.US_EAST_1, init_billed=False)
    result = cost.cost_of(512, "x86_64", [3.0], [900.0], rows=1, cold_start_rate=0.2, prices=free_init)
    assert result.per_million_requests_with_cold_starts == result.per_million_requests


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cost.billed_ms(-1), "non-negative"),
        (lambda: cost.billed_ms(math.nan), "non-negative"),
        (lambda: cost.invocation_cost(64, 1, "x86_64"), "outside Lambda's 128-10240 MB"),
        (lambda: cost.invocation_cost(128, 1, "ppc64"), "no price for architecture 'ppc64'"),
        (lambda: cost.cost_of(128, "x86_64", [1], [1], rows=1, cold_start_rate=1.5), "cold-start rate"),
        (lambda: cost.cost_of(128, "x86_64", [], [1], rows=1, cold_start_rate=0), "no measured durations"),
    ],
)
def test_cost_inputs_are_checked(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Limits


@pytest.mark.parametrize(("memory", "quota"), [(128, 7236), (1769, 100_000), (3008, 170_040), (10_240, 578_858)])
def test_the_quota_is_the_sizes_share_of_a_vcpu(memory, quota):
    assert Limits(memory).quota_us == quota
    assert Limits(memory).memory_bytes == memory * 2**20


def test_docker_gets_the_same_share_and_no_swap():
    assert docker_limits(Limits(128)) == ["--cpus=0.07236", "--memory=128m", "--memory-swap=128m"]
    assert docker_limits(Limits(3008)) == ["--cpus=1.7004", "--memory=3008m", "--memory-swap=3008m"]
    assert docker_limits(Limits(1769)) == ["--cpus=1", "--memory=1769m", "--memory-swap=1769m"]


@needs_cgroups
@pytest.mark.parametrize("memory", [128, 3008])
def test_the_child_runs_under_the_quota_and_limit(memory):
    limits = Limits(memory)
    with Cgroup(limits) as group:
        proc = subprocess.run(
            group.wrap([sys.executable, "-S", str(SUPPORT / "show_limits.py")]), capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)  # what the child itself reads from its own cgroup files
        assert seen["group"].endswith(group.name)
        assert (seen["quota_us"], seen["period_us"]) == (limits.quota_us, PERIOD_US)
        assert seen["memory_bytes"] == limits.memory_bytes
        assert group.applied() == {"quota_us": limits.quota_us, "period_us": PERIOD_US, "memory_bytes": memory * 2**20}
    assert not any(folder.exists() for folder in group.dirs), "the group was not removed"


@needs_cgroups
def test_processes_left_in_a_group_are_killed_and_the_group_removed():
    with Cgroup(Limits(256)) as group:
        sleeper = subprocess.Popen(group.wrap(["sleep", "300"]))
        for _ in range(100):
            if group.pids():
                break
            subprocess.run(["sleep", "0.05"])
        assert group.pids() == [sleeper.pid]
    assert sleeper.wait(timeout=10) == -9
    assert not any(folder.exists() for folder in group.dirs)


@needs_cgroups
def test_a_size_that_fits_is_measured_with_its_limits_read_back():
    result = measure_process(ballast(0), Limits(256), BODIES, cold_starts=2, requests=3)
    assert result.status == "ok", result.detail
    assert len(result.cold_ms) == 2
    assert {rows: len(times) for rows, times in result.warm_ms.items()} == {1: 3, 10: 3}
    assert result.applied["quota_us"] == Limits(256).quota_us
    assert result.applied["memory_bytes"] == 256 * 2**20
    assert 0 < result.peak_bytes <= 256 * 2**20
    assert result.rss_bytes > 0


@needs_cgroups
def test_a_size_too_small_for_the_model_is_reported_as_not_fitting():
    # The handler holds 200 MB from init: 128 MB cannot hold it, 512 MB can.
    small = measure_process(ballast(200), Limits(128), BODIES, cold_starts=1, requests=2)
    assert small.status == "oom"
    assert "exceeding 128 MB" in small.detail
    large = measure_process(ballast(200), Limits(512), BODIES, cold_starts=1, requests=2)
    assert large.status == "ok", large.detail
    assert large.rss_bytes > 200 * 2**20

    settings = Settings((128, 512), ("x86_64",), (1, 10), 2, 1, 0.01)
    report = report_of([small, large], settings)
    jsonschema.validate(report, schema())
    sizes = {s["memory_mb"]: s for s in report["sizes"]}
    assert sizes[128]["status"] == "oom" and sizes[128]["batches"] == []
    assert report["recommended"]["memory_mb"] == 512  # never the size that does not fit
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table(report))
    assert "does not fit" in console.export_text()


def test_a_resident_set_over_the_size_does_not_fit_even_unkilled():
    # Shared library pages charged to another cgroup let a process outgrow its limit without an OOM kill.
    grown = over_the_limit(SizeResult(128, "x86_64", cold_ms=[1.0], rss_bytes=162 * 2**20), Limits(128))
    assert (grown.status, grown.detail) == ("oom", "peak RSS 162 MB is over the 128 MB limit")
    fits = over_the_limit(SizeResult(256, "x86_64", cold_ms=[1.0], rss_bytes=162 * 2**20), Limits(256))
    assert fits.status == "ok"


INTERRUPTED = """
import json, sys
from pathlib import Path
from lambda_ml_serve.tune.cgroups import Limits
from lambda_ml_serve.tune.measure import ProcessTarget, measure_process
from lambda_ml_serve.tune.session import interrupted_cleanly

target = ProcessTarget("slow", (Path(sys.argv[1]),), {"SLEEP_S": "60"}, handler="ballast_handler")
with interrupted_cleanly():
    measure_process(target, Limits(333), {1: json.dumps([{"a": 1}])}, cold_starts=1, requests=1)
"""


@needs_cgroups
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_an_interrupted_measurement_leaves_no_cgroup_and_no_process(signal_name):
    import signal
    import time

    # 333 MB names this test's groups apart from any other measurement running on the machine.
    def groups() -> list[Path]:
        roots = [Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")] if detect() == "v1" else [Path("/sys/fs/cgroup")]
        return [g for root in roots for g in root.glob("lambda-ml-serve-tune-333mb-*")]

    assert groups() == []
    # A shell without job control starts background jobs with SIGINT ignored: give the runner the
    # default disposition, as a terminal's Ctrl-C would find it.
    runner = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(SUPPORT)],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = [int(p) for g in groups() for p in (g / "cgroup.procs").read_text().split()]
        time.sleep(0.05)
    assert children, "the measured process never started"
    runner.send_signal(getattr(signal, signal_name))
    assert runner.wait(timeout=30) != 0
    assert groups() == []
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


# ---------------------------------------------------------------------------------------------
# Report, recommendation, JSON schema and plot (from measured figures given as data)


def sized(
    memory: int, warm: dict[int, list[float]], *, cold: float = 500.0, arch: str = "x86_64", **kwargs
) -> SizeResult:
    return SizeResult(memory, arch, cold_ms=[cold, cold], warm_ms=warm, peak_bytes=40 * 2**20, **kwargs)


def report_of(results: list[SizeResult], settings: Settings) -> dict:
    return build_report(
        model="wine_quality",
        backend="compiled",
        label="wine_quality (compiled)",
        target={"kind": "process", "image": None, "context": "/tmp/ctx"},
        settings=settings,
        results=results,
        limiter="cgroup v1",
        host_info={"cpu": "Test CPU", "cpus": 2, "arch": "x86_64", "kernel": "6", "python": "3.11"},
    )


# Durations (ms) that halve up to one vCPU and stop improving after, as a single-threaded handler does;
# cold starts likewise (3,500 ms at 256 MB ... 500 ms from 1,769 MB).
RESULTS = [
    sized(128, {1: [14.0] * 10, 100: [80.0] * 9 + [400.0]}, cold=7000.0),
    sized(256, {1: [7.0] * 10, 100: [40.0] * 10}, cold=3500.0),
    sized(512, {1: [3.6] * 10, 100: [19.0] * 10}, cold=1750.0),
    sized(1024, {1: [1.9] * 10, 100: [10.0] * 10}, cold=875.0),
    sized(1769, {1: [1.0] * 10, 100: [6.0] * 10}, cold=500.0),
    sized(3008, {1: [1.0] * 10, 100: [6.0] * 10}, cold=500.0),
    SizeResult(1024, "arm64", status="not-measured", detail="arm64 is measured on an arm64 host only"),
    sized(1769, {1: [0.5] * 10, 100: [3.0] * 10}, arch="arm64", emulated=True),
]
SETTINGS = Settings((128, 256, 512, 1024, 1769, 3008), ("x86_64", "arm64"), (1, 100), 10, 2, 0.01)


def test_the_cheapest_size_and_the_fastest_within_ten_percent():
    report = report_of(RESULTS, SETTINGS)
    jsonschema.validate(report, schema())
    one, hundred = report["recommendations"]
    # 100 rows, in GB-s per request (the $0.20 per million requests is 0.012 GB-s at x86_64's price):
    # warm 0.99 x (0.125 x 0.112 | 0.25 x 0.040 | 0.5 x 0.019 | 1 x 0.010 | 1.7275 x 0.006 | 2.9375 x 0.006)
    # + 1 % cold (0.875, 0.875, 0.875, 0.875, 0.864, 1.469) + 0.012: 512 MB is the cheapest (0.0299);
    # 256, 1,024 (0.0307) and 1,769 MB (0.0309) are within 10 % of it, and 1,769 MB is the fastest of them.
    assert hundred["cheapest"]["memory_mb"] == 512
    assert hundred["fastest_within_10_percent"]["memory_mb"] == 1769
    assert hundred["recommended"] == hundred["fastest_within_10_percent"]
    cheapest = hundred["cheapest"]["per_million_requests"]
    expected = (0.99 * 0.5 * 0.019 + 0.01 * 0.5 * 1.75) * X86 * 1e6 + 0.20
    assert cheapest == pytest.approx(expected, rel=1e-9)
    assert hundred["cheapest"]["per_million_predictions"] == pytest.approx(expected / 100, rel=1e-9)
    # 1 row: 1,769 MB is both the cheapest and the fastest within 10 %.
    assert (one["cheapest"]["memory_mb"], one["recommended"]["memory_mb"]) == (1769, 1769)
    assert report["recommended"] == {"memory_mb": 1769, "arch": "x86_64", "rows": 1}
    # The emulated arm64 size is faster and never chosen; the unmeasured one is listed with its reason.
    assert all(r["recommended"]["arch"] == "x86_64" for r in (one, hundred))
    unmeasured = [s for s in report["sizes"] if s["status"] == "not-measured"]
    assert [(s["memory_mb"], s["arch"], s["detail"]) for s in unmeasured] == [
        (1024, "arm64", "arm64 is measured on an arm64 host only")
    ]


def test_a_p99_target_excludes_the_sizes_that_miss_it():
    settings = dataclasses.replace(SETTINGS, target_p99_ms=25.0, rows=(100,))
    report = report_of(RESULTS, settings)
    (rec,) = report["recommendations"]
    # 128 MB (p99 400 ms) and 256 MB (40 ms) miss 25 ms; of the rest, 512 MB is the cheapest.
    assert rec["cheapest"]["memory_mb"] == 512
    assert rec["cheapest"]["p99_ms"] <= 25.0
    assert "p99 <= 25 ms" in rec["note"]
    impossible = report_of(RESULTS, dataclasses.replace(settings, target_p99_ms=0.1))
    assert impossible["recommended"] is None
    assert impossible["recommendations"][0]["note"] == "no size meets the p99 target of 0.1 ms"
    jsonschema.validate(impossible, schema())
    assert "no size meets" in summary(impossible)[0]


def test_the_schema_rejects_a_report_without_its_fields():
    report = report_of(RESULTS, SETTINGS)
    del report["sizes"][0]["status"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, schema())
    jsonschema.Draft202012Validator.check_schema(schema())


def test_the_plot_is_a_valid_png_and_svg(tmp_path):
    report = report_of(RESULTS, SETTINGS)
    png, svg = plot([report], tmp_path / "tune")
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG"
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    # Several reports (backends beside the original handler) draw into one figure.
    other = {**report, "label": "original handler"}
    png2, _ = plot([report, other], tmp_path / "both")
    with Image.open(png2) as image:
        assert image.size[0] > 500


def test_a_plot_of_emulated_or_unmeasured_sizes_only_is_still_drawn(tmp_path):
    # An arm64 image on an x86_64 host: the host's architecture not measured, the image's emulated.
    emulated = [
        SizeResult(512, "x86_64", status="not-measured", detail="the image is arm64"),
        sized(512, {1: [0.9] * 3}, arch="arm64", emulated=True),
    ]
    settings = Settings((512,), ("x86_64", "arm64"), (1,), 3, 2, 0.01)
    report = report_of(emulated, settings)
    assert report["recommended"] is None
    assert report["recommendations"][0]["note"] == (
        "no size was measured natively (emulated figures are never recommended)"
    )
    nothing = report_of([SizeResult(128, "x86_64", status="oom", detail="killed")], dataclasses.replace(settings))
    for name, each in (("emulated", report), ("nothing", nothing)):
        png, svg = plot([each], tmp_path / name)
        with Image.open(png) as image:
            image.verify()
        assert "emulated" in svg.read_text() or name == "nothing"


def test_a_context_whose_runtime_or_plugin_changed_is_stale(tmp_path):
    import shutil

    import lambda_ml_serve_wine_quality

    import lambda_ml_serve
    from lambda_ml_serve.tune.session import stale_sources

    site = tmp_path / "site-packages"
    for package in (lambda_ml_serve, lambda_ml_serve_wine_quality):
        source = Path(package.__file__).parent
        shutil.copytree(source, site / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    assert stale_sources(site, "wine_quality") is None
    (site / "lambda_ml_serve" / "cli.py").write_text("# not what the function runs\n")
    assert stale_sources(site, "wine_quality") is None
    handler = site / "lambda_ml_serve" / "runtime" / "handler.py"
    handler.write_text(handler.read_text() + "\n# older\n")
    assert stale_sources(site, "wine_quality").endswith("lambda_ml_serve/runtime/handler.py")
    handler.write_text((Path(lambda_ml_serve.__file__).parent / "runtime" / "handler.py").read_text())
    plugin = site / "lambda_ml_serve_wine_quality" / "plugin.py"
    plugin.write_text(plugin.read_text() + "\n# older\n")
    assert stale_sources(site, "wine_quality").endswith("lambda_ml_serve_wine_quality/plugin.py")


def test_the_image_environment_is_read_from_the_dockerfile(tmp_path):
    text = (
        "FROM base\nENV LAMBDA_ML_SERVE_MODEL=wine_quality \\\n"
        "    LAMBDA_ML_SERVE_ARTIFACT=${LAMBDA_TASK_ROOT}/artifacts/model.so \\\n"
        '    LAMBDA_ML_SERVE_BACKEND="compiled"\nCMD ["x"]\n'
    )
    assert dockerfile_env(text, tmp_path) == {
        "LAMBDA_ML_SERVE_MODEL": "wine_quality",
        "LAMBDA_ML_SERVE_ARTIFACT": f"{tmp_path}/artifacts/model.so",
        "LAMBDA_ML_SERVE_BACKEND": "compiled",
    }


# ---------------------------------------------------------------------------------------------
# The command's input errors: one line, exit 1, before anything is rendered


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", "64,256"], "--memory: each value must be a whole number from 128 to 10,240"),
        (["--memory", "abc"], "--memory: each value must be a whole number"),
        (["--rows", "0"], "--rows: each value must be a whole number from 1"),
        (["--arch", "sparc"], "--arch: Lambda runs x86_64 and arm64"),
        (["--cold-start-rate", "2"], "--cold-start-rate must be from 0 to 1"),
        (["--backend", "nope"], "--backend nope: not installed"),
    ],
)
def test_bad_options_are_one_line(args, message):
    result = CliRunner().invoke(main, ["tune", "wine_quality", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_size_lists_parse_or_fail_in_one_line_without_echoing(text):
    from lambda_ml_serve.tune.measure import TuneError
    from lambda_ml_serve.tune.session import parse_ints

    try:
        values = parse_ints("--memory", text, 128, 10_240)
    except TuneError as exc:
        message = str(exc)
        # Never an echo: the message is one of the option's fixed ones, whatever the text was.
        assert message in {
            "--memory: each value must be a whole number from 128 to 10,240, comma-separated",
            "--memory: give at least one value",
        }
        return
    assert values and all(isinstance(v, int) and 128 <= v <= 10_240 for v in values)
    assert len(set(values)) == len(values)
