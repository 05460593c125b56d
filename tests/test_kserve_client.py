"""KServe's ``InferenceRESTClient`` (kserve 0.21) against ``serve``: its default v1 protocol and v2.

kserve pins pandas<3, protobuf<7 and psutil<6, below the versions this project runs with, so the client
runs in a virtual environment of its own that the tests build once and cache (tests/kserve_fixtures.py;
the first build downloads about 70 packages). With its defaults it speaks KServe's v1 protocol
(``/v1/models/NAME:predict``); over v2 its tensors go as binary by default and as JSON when told;
every way the predictions are the in-process handler's for the same rows.
"""

from __future__ import annotations

from served import serving

pytest_plugins = ["kserve_fixtures"]


def test_kserve_rest_client_gets_the_in_process_predictions(kserve_predictions, wine_rows, wine_expected) -> None:
    with serving() as url:
        answers = kserve_predictions(url, wine_rows)
    # v1 with every default, then v2: per-feature and matrix tensors, FP32 and FP64, binary and JSON
    assert len(answers) == 9 and "v1-default" in answers
    assert answers == dict.fromkeys(answers, wine_expected)
