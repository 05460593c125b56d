"""Property-based: whatever arrives, the handler answers well-formed and never blames itself."""

from __future__ import annotations

import base64
import json

from conftest import url_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lambda_ml_serve_wine_quality.plugin import EXAMPLE

CLIENT_STATUSES = {200, 400, 404, 405, 413, 422}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=20,
)
feature_names = st.sampled_from([*list(EXAMPLE[0]), "color", "fixed_acidity", "pH ", "Ph"])
rows = st.dictionaries(feature_names, json_values | st.floats(-10, 1000), max_size=15)
near_valid_rows = st.builds(lambda base, changes: {**base, **changes}, st.sampled_from(EXAMPLE), rows)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(json.dumps).map(str.encode),
    st.lists(near_valid_rows, max_size=5).map(json.dumps).map(str.encode),
    st.builds(lambda r: json.dumps({"instances": r}).encode(), st.lists(near_valid_rows, max_size=5)),
)
settings_ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_well_formed(payload: dict) -> None:
    if "predictions" in payload:
        assert set(payload) == {"model", "version", "predictions"}
        assert all(isinstance(p, float) for p in payload["predictions"])
    elif "error" in payload:
        error = payload["error"]
        assert set(error) == {"type", "message", "details"}
        assert error["type"] != "internal_error", error
        for item in error["details"]:
            assert set(item) == {"row", "field", "message"}
    else:
        assert payload["model"] == "wine_quality"  # GET metadata


@settings_
@given(
    body=bodies,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "PATCH"]),
    path=st.sampled_from(["/", "/predict", "/x", "", "//"]),
    b64=st.booleans(),
)
def test_function_url_events(wine_app, body, method, path, b64):
    raw = base64.b64encode(body).decode() if b64 else body.decode("utf-8", "replace")
    response = wine_app(url_event(raw, method=method, path=path, isBase64Encoded=b64))
    assert response["statusCode"] in CLIENT_STATUSES
    assert response["headers"]["x-request-id"]
    assert response["headers"]["content-type"] == "application/json"
    check_well_formed(json.loads(response["body"]))


@settings_
@given(event=json_values | st.lists(near_valid_rows, max_size=4).map(lambda r: {"instances": r}))
def test_direct_invocations(wine_app, event):
    payload = wine_app(event)
    assert isinstance(payload, dict)
    check_well_formed(payload)


envelope_values = json_values | st.fixed_dictionaries(
    {"http": st.dictionaries(st.sampled_from(["method", "path"]), json_values)},
    optional={"requestId": json_values},
)


@settings_
@given(
    event=st.dictionaries(
        st.sampled_from(["requestContext", "body", "isBase64Encoded", "rawPath", "headers"]),
        envelope_values,
    )
)
def test_malformed_event_envelopes(wine_app, event):
    response = wine_app(event)
    payload = json.loads(response["body"]) if "statusCode" in response else response
    assert response.get("statusCode", 200) in CLIENT_STATUSES
    check_well_formed(payload)
