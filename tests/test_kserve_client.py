"""KServe's ``InferenceRESTClient`` (kserve 0.21) against ``serve``, over the Open Inference Protocol.

kserve pins pandas<3, protobuf<7 and psutil<6, below the versions this project runs with, so the client
runs in a virtual environment of its own that the tests build once and cache (tests/kserve_fixtures.py;
the first build downloads about 70 packages). Its tensors go as binary by default and as JSON when told;
either way the predictions are the in-process handler's for the same rows.
"""

from __future__ import annotations

import io

import pytest
from served import serving

from lambda_ml_serve.runtime.app import App

pytest_plugins = ["kserve_fixtures"]


@pytest.fixture(scope="module")
def app() -> App:
    return App.load("wine_quality", log_stream=io.StringIO())


def test_kserve_rest_client_gets_the_in_process_predictions(kserve_predictions, app, samples) -> None:
    rows = samples + list(app.spec.example)
    expected = app(rows)["predictions"]
    with serving() as url:
        answers = kserve_predictions(url, rows)
    assert len(answers) == 8  # per-feature and matrix tensors, FP32 and FP64, binary and JSON
    assert answers == dict.fromkeys(answers, expected)
