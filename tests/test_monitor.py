"""Data capture and drift: ``serve --capture`` writes capture records, ``monitor`` compares them with the profile.

The wine rows come from the shared wine file (the model's own data), sent through the real local
Function URL; the shifted rows have 2 more degrees of alcohol and are all red. The wine model refuses
missing values (its schema has no optional field), so refused rows are checked never to be captured,
and rows with missing values enter the capture file as a model with optional features would write
them: through the same ``Capture`` writer.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import DATA, post_when_up, shared_file
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_ml_serve.local.container import free_port
from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.monitor import compare, feature_kinds, profile_of
from lambda_ml_serve.monitor.capture import CaptureReadError, Source, read_captured
from lambda_ml_serve.monitor.command import DRIFT_EXIT
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.telemetry import CAPTURE_ENV, Capture, capture_rate

pd = pytest.importorskip("pandas")
CLI = [sys.executable, "-m", "lambda_ml_serve.cli"]
ROWS = 1500


@pytest.fixture(scope="module")
def wine_rows() -> list[dict]:
    from lambda_ml_serve_wine_quality.data import FEATURES, load_dataset

    X, _ = load_dataset(shared_file(DATA / "wine_concat.csv"))
    return X.sample(ROWS, random_state=7)[list(FEATURES)].to_dict(orient="records")


def shifted(rows: list[dict]) -> list[dict]:
    return [dict(row, alcohol=row["alcohol"] + 2, color_red=1, color_white=0) for row in rows]


def post(port: int, rows: list[dict]) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=json.dumps(rows).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def serve_and_capture(folder: Path, batches: list[list[dict]], refused: list[list[dict]] = ()) -> None:
    """Run ``serve --capture folder``, send ``batches`` (then ``refused``, which must be refused), stop it."""
    port = free_port()
    command = [*CLI, "serve", "wine_quality", "--port", str(port), "--capture", str(folder)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            post_when_up(proc, port, json.dumps(batches[0]).encode())
            assert all(post(port, batch) == 200 for batch in batches[1:])
            assert all(post(port, batch) == 422 for batch in refused)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def monitor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "monitor", "wine_quality", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_serve_capture_then_monitor_finds_no_drift_on_wine_rows(wine_rows, tmp_path):
    folder = tmp_path / "capture"
    batches = [wine_rows[i : i + 500] for i in range(0, ROWS, 500)]
    serve_and_capture(folder, batches)
    (file,) = folder.iterdir()
    assert file.name.startswith("capture-") and file.suffix == ".jsonl"
    records = [json.loads(line) for line in file.read_text().splitlines()]
    assert len(records) == 3
    first = records[0]
    assert set(first) == {"type", "request_id", "time", "model", "version", "model_sha256", "rows", "predictions"}
    assert first["type"] == "capture" and first["model"] == "wine_quality"
    assert first["rows"] == batches[0] and len(first["predictions"]) == 500
    assert len(first["model_sha256"]) == 64

    result = monitor(str(folder), "--json", str(tmp_path / "drift.json"))
    assert result.returncode == 0, result.stderr
    assert "no drift above threshold 0.2" in result.stdout
    figures = json.loads((tmp_path / "drift.json").read_text())
    assert figures["rows"] == ROWS and figures["records"] == 3 and figures["drifted"] == []
    psis = {name: f["psi"] for name, f in figures["features"].items()}
    assert set(psis) == set(get_registry().model("wine_quality").spec.feature_names)
    assert max(psis.values()) < 0.05, psis  # a sample of the training data itself
    assert figures["predictions"]["psi"] < 0.05


@pytest.mark.slow
def test_shifted_rows_and_missing_values_are_flagged(wine_rows, tmp_path):
    folder = tmp_path / "capture"
    moved = shifted(wine_rows)
    with_nulls = [dict(row, sulphates=None) for row in wine_rows[:3]]
    serve_and_capture(folder, [moved[i : i + 500] for i in range(0, ROWS, 500)], refused=[with_nulls])
    (file,) = folder.iterdir()
    captured_text = file.read_text()
    assert captured_text.count("\n") == 3  # the refused request wrote nothing
    assert '"sulphates":null' not in captured_text

    # What a model that accepts missing values captures: a third of the rows without sulphates.
    spec = get_registry().model("wine_quality").spec
    writer = Capture(1.0, "wine_quality", spec.version, stream=io.StringIO())
    missing = [dict(row, sulphates=None) if i % 3 == 0 else row for i, row in enumerate(moved[:600])]
    (folder / "capture-missing.jsonl").write_text(writer.record("r-missing", missing, [5.0] * 600) + "\n")

    report = tmp_path / "report.html"
    result = monitor(str(folder), "--json", str(tmp_path / "drift.json"), "--report", str(report))
    assert result.returncode == DRIFT_EXIT, result.stderr
    figures = json.loads((tmp_path / "drift.json").read_text())
    flagged = set(figures["drifted"])
    assert {"alcohol", "color_red", "color_white", "sulphates"} <= flagged
    assert figures["features"]["alcohol"]["psi"] > 1
    assert figures["features"]["sulphates"]["missing_rate"] > 0.05
    assert any(flag.startswith("missing") for flag in figures["features"]["sulphates"]["flags"])
    untouched = {"fixed acidity", "pH", "density"} & flagged
    assert not untouched
    assert "drift above threshold 0.2: " in result.stdout
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == len(figures["features"]) + 2
    assert "http://" not in html.replace("http://www.w3.org/", "") and "https://" not in html
    assert "<script" not in html and "<link" not in html

    shown = open_in_chromium(report, tmp_path / "report.png")
    assert shown["title"] == "Drift report: wine_quality"
    assert shown["resources"] == []  # nothing fetched: styles and plots are inline
    assert "Drift: " in shown["text"] and "alcohol" in shown["text"]
    if target := os.environ.get("LAMBDA_ML_SERVE_SCREENSHOT_MONITOR"):
        Path(target).write_bytes((tmp_path / "report.png").read_bytes())


def open_in_chromium(page: Path, screenshot: Path) -> dict:
    """Load ``page`` in headless Chromium; its title, text and fetched resources, and a screenshot."""
    import tempfile

    from browser_fixtures import CHROMEDRIVER, CHROMIUM, FLAGS

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        if os.environ.get("CI"):
            pytest.fail(f"needs {CHROMIUM} and {CHROMEDRIVER}")
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.get(page.as_uri())
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        driver.set_window_size(1200, 1600)
        driver.save_screenshot(str(screenshot))
        return {"title": driver.title, "text": driver.find_element(By.TAG_NAME, "body").text, "resources": resources}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Capture in the function: opt-in, sampled, bounded, never of refused bodies


def url_post(rows) -> dict:
    return to_event("POST", "/", [("content-type", "application/json")], json.dumps(rows).encode())


def test_capture_is_off_unless_asked(monkeypatch, wine_rows):
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    log = io.StringIO()
    app = App.load("wine_quality", log_stream=log)
    assert app(url_post(wine_rows[:5]))["statusCode"] == 200
    assert '"type":"capture"' not in log.getvalue() and "alcohol" not in log.getvalue()
    monkeypatch.setenv(CAPTURE_ENV, "1")
    captured = App.load("wine_quality", log_stream=log)
    captured(url_post(wine_rows[:5]))
    assert log.getvalue().count('"type":"capture"') == 1


def test_refused_and_non_prediction_requests_are_never_captured(wine_rows):
    sink = io.StringIO()
    app = App.load("wine_quality", log_stream=io.StringIO(), capture=1.0, capture_stream=sink)
    assert app(url_post([{"alcohol": "a secret value"}]))["statusCode"] == 422
    assert app(to_event("POST", "/", [], b"{not json"))["statusCode"] == 400
    assert app(to_event("GET", "/", [], b""))["statusCode"] == 200
    assert sink.getvalue() == ""
    assert app(wine_rows[:2]) is not None  # a direct invocation is a prediction too
    assert sink.getvalue().count("\n") == 1


def test_sampling_and_the_size_bound(wine_rows):
    draws = iter([0.5, 0.01, 0.2, 0.04])
    capture = Capture(0.05, "wine_quality", "1.0.0", stream=io.StringIO(), random=lambda: next(draws))
    assert [capture.sampled() for _ in range(4)] == [False, True, False, True]
    assert not Capture(0.0, "m", "1").sampled()
    record = json.loads(Capture(1.0, "m", "1", max_bytes=2_000).record("id", wine_rows[:50], [5.5] * 50))
    assert record["rows_total"] == 50 and record["truncated"] is True
    assert 0 < len(record["rows"]) == len(record["predictions"]) < 50
    for bad in ("-0.1", "1.5", "nan", "lots"):
        with pytest.raises(ValueError):
            capture_rate(bad)


def test_capture_never_changes_the_answer(wine_rows):
    plain = App.load("wine_quality", log_stream=io.StringIO())
    capturing = App.load("wine_quality", log_stream=io.StringIO(), capture=1.0, capture_stream=io.StringIO())
    event = url_post(wine_rows[:100])
    assert capturing(event)["body"] == plain(event)["body"]

    class Broken(io.StringIO):
        def write(self, text):
            raise OSError("disk full")

    broken = App.load("wine_quality", log_stream=io.StringIO(), capture=1.0, capture_stream=Broken())
    assert broken(event)["body"] == plain(event)["body"]


# ---------------------------------------------------------------------------------------------
# Profiles and drift, generic over numeric, categorical and missing values


def test_profile_and_drift_of_categories_and_missing_values():
    reference = {
        "size": [1.0, 2.0, 3.0, 4.0, None] * 200,
        "colour": ["red", "white", "white", "rose", None] * 200,
    }
    kinds = {"size": "numeric", "colour": "categorical"}
    profile = profile_of(reference, kinds, ["low", "high"] * 500)
    assert profile["features"]["size"]["missing_rate"] == pytest.approx(0.2)
    assert profile["features"]["colour"]["shares"] == {"red": 0.25, "rose": 0.25, "white": 0.5}
    assert profile["predictions"]["kind"] == "categorical"
    json.dumps(profile)  # it goes into the model card

    same = compare(profile, reference, ["low", "high"] * 500)
    assert same.drifted == []
    current = {"size": [1.0, 2.0, None, None] * 100, "colour": ["red", "orange", "orange", "white"] * 100}
    moved = compare(profile, current, ["low"] * 400)
    by_name = {f.name: f for f in moved.features}
    assert any(flag.startswith("missing") for flag in by_name["size"].flags)
    assert by_name["colour"].unknown_share == pytest.approx(0.5)
    assert by_name["colour"].unknown_categories == ["orange"]
    assert by_name["colour"].test == "chi-squared" and by_name["colour"].p_value < 1e-6
    assert set(moved.drifted) == {"size", "colour", "predictions"}


def test_feature_kinds_come_from_the_schema():
    spec = get_registry().model("wine_quality").spec
    kinds = feature_kinds(spec.schema)
    assert set(kinds.values()) == {"numeric"} and list(kinds) == list(spec.feature_names)
    from typing import Literal

    from pydantic import BaseModel

    class Mixed(BaseModel):
        size: float | None = None
        colour: Literal["red", "white"]
        label: str
        count: int

    assert feature_kinds(Mixed) == {
        "size": "numeric",
        "colour": "categorical",
        "label": "categorical",
        "count": "numeric",
    }


def test_the_wine_card_holds_the_training_profile():
    spec = get_registry().model("wine_quality").spec
    card = spec.load_card()
    profile = card["profile"]
    assert profile["rows"] == card["n_train"]
    assert list(profile["features"]) == list(spec.feature_names)
    # A 0/1 feature has two bins, the 0s and the 1s.
    assert profile["features"]["color_red"]["edges"] == [1.0]
    assert profile["features"]["color_red"]["shares"] == pytest.approx([0.75, 0.25], abs=0.02)
    assert profile["predictions"]["kind"] == "numeric"


def test_monitor_refuses_what_it_cannot_read(tmp_path):
    result = monitor(str(tmp_path / "nothing-here"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "no such file or folder" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "other.jsonl").write_text('{"type":"capture","model":"other","rows":[],"predictions":[]}\n')
    empty = monitor(str(tmp_path / "other.jsonl"))
    assert empty.returncode == 1 and "no capture records of model 'wine_quality'" in empty.stderr


def test_reads_gzip_and_cloudwatch_logs_envelopes():
    record = Capture(1.0, "wine_quality", "1").record("r1", [{"alcohol": 10.0}], [5.0])
    envelope = {"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "message": record}]}
    payloads = {
        "plain": (record + "\n").encode(),
        "gzip": gzip.compress((record + "\n" + record + "\n").encode()),
        "envelope": gzip.compress(json.dumps(envelope).encode()),
        "log line": f"2026-01-01T00:00:00Z abc INFO {record}\n".encode(),
    }
    sources = [Source(name, len(data), lambda data=data: io.BytesIO(data)) for name, data in payloads.items()]
    captured = read_captured(sources, "wine_quality")
    assert captured.records == 5 and captured.rows == [{"alcohol": 10.0}] * 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2_000) | st.text(max_size=500).map(str.encode))
def test_reading_hostile_files_never_crashes(data):
    source = Source("hostile", len(data), lambda: io.BytesIO(data))
    try:
        captured = read_captured([source], "wine_quality")
    except CaptureReadError as exc:
        assert "hostile" in str(exc) and len(str(exc)) < 300
        return
    assert len(captured.rows) == len(captured.predictions)
    assert captured.records <= max(1, data.count(b"capture"))


def test_ks_against_the_profiles_percentiles_agrees_with_scipy():
    import numpy as np
    from scipy import stats

    from lambda_ml_serve.monitor.drift import ks_against_percentiles

    rng = np.random.default_rng(3)
    percentiles = stats.norm.ppf(np.clip(np.arange(101) / 100, 1e-6, 1 - 1e-6))
    for shift in (0.0, 0.3, 1.0):
        sample = rng.normal(shift, 1.0, size=3000)
        statistic, p_value = ks_against_percentiles(sample, percentiles)
        exact = stats.kstest(sample, "norm")
        assert statistic == pytest.approx(exact.statistic, abs=0.01)
        assert (p_value < 0.01) == (exact.pvalue < 0.01)
    # A 0/1 feature: the CDF's jump is where the test measures.
    ones = [0.0] * 75 + [1.0] * 26
    assert ks_against_percentiles(np.ones(100), ones)[0] == pytest.approx(0.74, abs=0.01)
    assert ks_against_percentiles(np.array([0.0] * 74 + [1.0] * 26), ones)[0] < 0.01


values = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=300)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=20), values, max_size=8), max_size=60), st.integers(600, 20_000))
def test_a_capture_record_is_json_within_its_bound(rows, max_bytes):
    capture = Capture(1.0, "m", "1", model_sha256="0" * 64, max_bytes=max_bytes)
    line = capture.record("request-1", rows, list(range(len(rows))))
    assert "\n" not in line
    assert len(line.encode()) <= max_bytes or len(rows) == 0
    record = json.loads(line)
    kept = len(record["rows"])
    assert record["rows"] == rows[:kept] and record["predictions"] == list(range(kept))
    assert record.get("truncated", False) == (kept < len(rows))
