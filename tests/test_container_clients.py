"""Clients nobody here wrote, with their default settings, against ``serve --image``: the built image
running under Lambda's Runtime Interface Emulator behind the local Function URL.

MLflow's ``ScoringServerClient``, tritonclient (binary and JSON tensors), KServe's ``InferenceRESTClient``,
curl with a gzip body and ``--compressed``, Chromium calling from another origin: each gets the
in-process handler's predictions for the same rows. One image and one server for the module.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import urllib.request
from urllib.parse import urlsplit

import numpy
import pandas
import pytest
from served import free_port, serving
from test_serve_http import ORIGIN_PAGE, page_server

from lambda_ml_serve.runtime.app import App

pytestmark = pytest.mark.container
pytest_plugins = ["container_fixtures", "kserve_fixtures", "browser_fixtures"]
MODEL = "wine_quality"
#: The browser test's page is served from here; ``serve --cors`` allows it.
PAGE_PORT = free_port()
ORIGIN = f"http://127.0.0.1:{PAGE_PORT}"


@pytest.fixture(scope="module")
def app() -> App:
    return App.load(MODEL, log_stream=io.StringIO())


@pytest.fixture(scope="module")
def served(wine_image: str) -> str:
    with serving(MODEL, "--image", wine_image, "--cors", ORIGIN, timeout=180) as url:
        yield url


def test_mlflow_scoring_client(served, wine_rows, wine_expected) -> None:
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    parts = urlsplit(served)
    client = ScoringServerClient(parts.hostname, parts.port)
    client.ping()
    response = client.invoke(pandas.DataFrame(wine_rows), params={"top_k": 3})
    assert response.get_predictions(predictions_format="ndarray").tolist() == wine_expected


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient(served, wine_rows, wine_expected, binary: bool) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served.removeprefix("http://"))
    try:
        assert client.is_server_ready() and "binary_tensor_data" in client.get_server_metadata()["extensions"]
        for dtype in (numpy.float32, numpy.float64):
            datatype = "FP32" if dtype is numpy.float32 else "FP64"
            values = numpy.asarray([list(row.values()) for row in wine_rows], dtype=dtype)
            matrix = httpclient.InferInput("input-0", list(values.shape), datatype)
            matrix.set_data_from_numpy(values, binary_data=binary)
            per_feature = []
            for name in wine_rows[0]:
                tensor = httpclient.InferInput(name, [len(wine_rows)], datatype)
                column = numpy.asarray([row[name] for row in wine_rows], dtype=dtype)
                tensor.set_data_from_numpy(column, binary_data=binary)
                per_feature.append(tensor)
            outputs = [httpclient.InferRequestedOutput("predictions", binary_data=binary)]
            for inputs in ([matrix], per_feature):
                assert client.infer(MODEL, inputs, outputs=outputs).as_numpy("predictions").tolist() == wine_expected
    finally:
        client.close()


def test_kserve_rest_client(served, kserve_predictions, wine_rows, wine_expected) -> None:
    answers = kserve_predictions(served, wine_rows)
    assert len(answers) == 9 and answers == dict.fromkeys(answers, wine_expected)  # v1 default + 8 v2 cases


@pytest.mark.skipif(subprocess.run(["which", "curl"], capture_output=True).returncode, reason="curl is not installed")
def test_curl_gzip_body_and_compressed_answer(served, app, samples, tmp_path) -> None:
    many = samples * 5_000
    body = tmp_path / "rows.json.gz"
    body.write_bytes(gzip.compress(json.dumps(many).encode()))
    headers = tmp_path / "headers.txt"
    command = ["curl", "-sS", "--max-time", "120", "--compressed", "-D", str(headers)]
    command += ["-H", "content-type: application/json", "-H", "content-encoding: gzip"]
    done = subprocess.run(
        [*command, "--data-binary", f"@{body}", f"{served}/invocations"], capture_output=True, check=True
    )
    assert json.loads(done.stdout) == {"predictions": app(many)["predictions"]}
    assert "content-encoding: gzip" in headers.read_text().lower()


def test_head_states_what_get_would_send(served) -> None:
    for path in ("/", "/openapi.json"):
        with urllib.request.urlopen(served + path, timeout=60) as response:
            got, body = dict(response.headers), response.read()
        request = urllib.request.Request(served + path, method="HEAD")
        with urllib.request.urlopen(request, timeout=60) as response:
            head, empty = dict(response.headers), response.read()
        assert empty == b"" and head["content-length"] == got["content-length"] == str(len(body))
        assert head["content-type"] == got["content-type"]


def test_cors_preflight_and_a_page_on_another_origin(served, browser, app, samples) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    preflight = {"origin": ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "x"}
    request = urllib.request.Request(served + "/invocations", method="OPTIONS", headers=preflight)
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["access-control-allow-origin"] == ORIGIN
    site = page_server(ORIGIN_PAGE.format(url=served, rows=json.dumps(samples)), PAGE_PORT)
    try:
        browser.get(ORIGIN + "/")
        out = WebDriverWait(browser, 60).until(
            lambda driver: (text := driver.find_element(By.ID, "out").text) != "waiting" and text
        )
    finally:
        site.shutdown()
        site.server_close()
    assert json.loads(out) == {"predictions": app(samples)["predictions"]}
