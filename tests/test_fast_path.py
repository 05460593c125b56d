"""The fast path's contract: for every event, the same answer as the full path, byte for byte.

Each event goes to two apps serving the same model with the same predictor: one with the fast path,
one with the full path only. Status, headers and body must be identical. Each model is also served by
a predictor that reads float64 (``input_type``), whose batches both paths pack in float64. Generated events cover valid
rows, edge-of-bound and out-of-bound values, other spellings of the field names, missing and extra
fields, NaN/infinity, wrong types, other body shapes, JSON formatting and base64 bodies.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from types import SimpleNamespace
from typing import Annotated

import pytest
from conftest import url_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lambda_ml_serve_wine_quality.schema import WineSample
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from lambda_ml_serve.fields import Category
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.spec import Batch, ModelSpec

settings_ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def full_only(app: App) -> App:
    """The same model and predictor, answering everything through the full path."""
    full = copy.copy(app)
    full.fast = None
    return full


#: Lambda's context: the request id an answer falls back to when the event carries none it may repeat.
CONTEXT = SimpleNamespace(aws_request_id="8f2b6c1e-0000-4000-8000-000000000000")


def assert_same_answer(fast: App, full: App, event: dict) -> dict:
    expected = full(copy.deepcopy(event), CONTEXT)
    assert fast(copy.deepcopy(event), CONTEXT) == expected
    return expected


def http_event(payload, *, dump=json.dumps, b64=False, path="/", method="POST") -> dict:
    text = payload if isinstance(payload, str) else dump(payload)
    if b64:
        encoded = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()
        return url_event(encoded, isBase64Encoded=True, path=path, method=method)
    return url_event(text, path=path, method=method)


# -- the wine model: aliases with two spellings, bounds, bools, validators stated as a batch check --


@pytest.fixture(scope="module", params=["float32", "float64"])
def wine(wine_app, request) -> tuple[App, App]:
    """The wine model (XGBoost, float32), and its schema served by a float64 predictor echoing its batch."""
    app = wine_app if request.param == "float32" else App(wine_app.spec, Echo64())
    assert app.fast is not None, app.request_path.reason
    return app, full_only(app)


WINE_FIELDS = list(WineSample.model_fields.items())
ORIGINAL = {name: info.alias for name, info in WINE_FIELDS}
SNAKE = {name: name for name, _ in WINE_FIELDS}
BOUNDS = {"density": (0.9, 1.1), "pH": (0.0, 14.0), "alcohol": (0.0, 100.0)}


def measure(name: str) -> st.SearchStrategy:
    low, high = BOUNDS.get(name, (0.0, None))
    inside = st.floats(low, high if high is not None else 1e6, allow_nan=False)
    edges = [low, math.nextafter(low, -math.inf)]
    if high is not None:
        edges += [high, math.nextafter(high, math.inf)]
    return st.one_of(inside, st.sampled_from(edges), st.integers(-2, 20))


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e400, -0.0]),
    st.integers(-(2**70), 2**70),
    st.lists(st.integers(), max_size=2),
    st.floats(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
flag = st.sampled_from([0, 1, True, False, 2, -1, 0.0, 1.0, "1", "true", None])


@st.composite
def valid_wine_rows(draw, names: dict[str, str]) -> dict:
    row = {names[name]: draw(st.floats(*BOUNDS.get(name, (0.0, 50.0)))) for name, _ in WINE_FIELDS[:-2]}
    red = draw(st.booleans())
    row["color_red"], row["color_white"] = draw(st.sampled_from([(int(red), int(not red)), (red, not red)]))
    return row


@st.composite
def valid_wine_requests(draw) -> list | dict:
    """A list, instances or one row, every row spelled the same way: what the fast path must answer."""
    rows = draw(st.lists(valid_wine_rows(draw(st.sampled_from([ORIGINAL, SNAKE]))), min_size=1, max_size=6))
    shape = draw(st.sampled_from(["list", "instances", "row"]))
    return rows if shape == "list" else {"instances": rows} if shape == "instances" else rows[0]


@st.composite
def wine_rows(draw) -> dict:
    """A valid row with a few changes: a value at or past a bound, junk, another spelling, a colour
    flag or name, a missing or unknown key. One change is often all that separates accepted from not.
    """
    names = draw(st.sampled_from([ORIGINAL, SNAKE]))
    row = draw(valid_wine_rows(names))
    features = [name for name, _ in WINE_FIELDS[:-2]]
    for change in draw(st.lists(st.sampled_from(CHANGES), min_size=1, max_size=2)):
        feature = draw(st.sampled_from(features))
        key = names[feature]
        if change == "edge":
            row[key] = draw(measure(feature))
        elif change == "junk":
            row[key] = draw(junk)
        elif change == "respell" and key in row:
            row[(SNAKE if names is ORIGINAL else ORIGINAL)[feature]] = row.pop(key)
        elif change == "flag":
            row[draw(st.sampled_from(["color_red", "color_white"]))] = draw(flag)
        elif change == "colour name":
            row["color"] = draw(st.sampled_from(["red", "white", "RED", "blue", 1]))
            if draw(st.booleans()):
                row.pop("color_red", None), row.pop("color_white", None)
        elif change == "drop":
            row.pop(draw(st.sampled_from(sorted(row))), None)
        elif change == "unknown":
            row[draw(st.sampled_from(["fixed acidty", "ph", "instances", "color_green", ""]))] = 1.0
    return row


CHANGES = ["edge", "edge", "edge", "junk", "respell", "flag", "flag", "colour name", "drop", "unknown"]


def shaped(rows: st.SearchStrategy) -> st.SearchStrategy:
    lists = st.lists(rows, max_size=6)
    extra_keys = st.dictionaries(st.sampled_from(["x", "rows"]), st.integers(), max_size=1)
    return st.one_of(
        lists,
        lists.map(lambda r: {"instances": r}),
        rows,
        st.builds(lambda r, extra: {"instances": r, **extra}, lists, extra_keys),
        st.sampled_from([[], {}, {"instances": []}, {"instances": {}}, None, 3, "rows", [[1, 2]], [None]]),
    )


dumpers = st.sampled_from(
    [
        json.dumps,
        lambda p: json.dumps(p, indent=2),
        lambda p: json.dumps(p, separators=(",", ":")),
        lambda p: "\n " + json.dumps(p, ensure_ascii=False) + "\t",
    ]
)


@settings_
@given(payload=valid_wine_requests(), dump=dumpers, b64=st.booleans())
def test_valid_requests_take_the_fast_path_and_agree(wine, payload, dump, b64):
    fast, full = wine
    event = http_event(payload, dump=dump, b64=b64)
    assert fast.fast.batch_of(event) is not None
    assert assert_same_answer(fast, full, event)["statusCode"] == 200


@settings_
@given(payload=shaped(wine_rows() | valid_wine_rows(ORIGINAL)), dump=dumpers, b64=st.booleans())
def test_any_wine_request_agrees(wine, payload, dump, b64):
    fast, full = wine
    assert_same_answer(fast, full, http_event(payload, dump=dump, b64=b64))


@settings_
@given(payload=shaped(wine_rows() | valid_wine_rows(ORIGINAL)))
def test_rows_from_other_formats_agree(wine, payload):
    """Rows read first (a direct invocation, MLflow's records, CSV, v2 tensors) take the rows converter."""
    fast, full = wine
    assert fast(copy.deepcopy(payload), CONTEXT) == full(copy.deepcopy(payload), CONTEXT)
    wrapped = {"dataframe_records": payload} if isinstance(payload, list) else payload
    assert_same_answer(fast, full, http_event(wrapped, path="/invocations"))


@settings_
@given(
    rows=st.lists(valid_wine_rows(ORIGINAL), min_size=1, max_size=4),
    value=st.sampled_from([math.nan, math.inf, -math.inf, 1.0, 0.0, 1, True, 3.4e39, -0.0]),
    where=st.integers(0, 12),
)
def test_values_json_cannot_carry_agree(wine, rows, value, where):
    """Binary tensors and CSV cells can be NaN or infinite, and flags floats: both paths answer alike."""
    fast, full = wine
    key = list(rows[0])[where]
    rows[0][key] = value
    assert fast(copy.deepcopy(rows), CONTEXT) == full(copy.deepcopy(rows), CONTEXT)


@settings_
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.sampled_from(["[", "[{}", '{"instances": [', "[1e400]", "NaN", '[{"pH": NaN}]', "\ufeff[]", '"\\ud800"']),
        st.builds(lambda p, cut: json.dumps(p)[:cut], valid_wine_requests(), st.integers(0, 400)),
    ),
    method=st.sampled_from(["POST", "post", "GET", "PUT"]),
    path=st.sampled_from(["/", "/predict", "/x", ""]),
    b64=st.booleans(),
)
def test_malformed_bodies_routes_and_methods_agree(wine, text, method, path, b64):
    fast, full = wine
    assert_same_answer(fast, full, http_event(text, b64=b64, path=path, method=method))


envelope_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.sampled_from(["/", "/predict", "", "POST", '[{"pH": 3}]']),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event=st.fixed_dictionaries(
        {
            "requestContext": st.fixed_dictionaries(
                {"http": st.fixed_dictionaries({"method": st.just("POST")}, optional={"path": envelope_values})},
                optional={"requestId": envelope_values},
            )
        },
        optional={
            "rawPath": envelope_values,
            "body": envelope_values | valid_wine_requests().map(json.dumps),
            "isBase64Encoded": envelope_values,
        },
    )
)
def test_odd_post_envelopes_agree(wine, event):
    fast, full = wine
    if not isinstance(event["requestContext"].get("requestId"), str) or not event["requestContext"]["requestId"]:
        event["requestContext"]["requestId"] = "fixed"  # no generated id: both answers carry the same one
    assert_same_answer(fast, full, event)


def test_samples_and_the_example_take_the_fast_path(wine, samples_body):
    fast, full = wine
    example = fast.spec.example
    for body in (samples_body.decode(), json.dumps({"instances": list(example)}), json.dumps(example[0])):
        event = url_event(body)
        assert fast.fast.batch_of(event) is not None
        assert_same_answer(fast, full, event)


@pytest.mark.parametrize("flags", [(1, 1), (0, 0), (True, True), (False, 0)])
def test_the_colour_rule_runs_as_a_batch_check(wine, samples, flags):
    fast, full = wine
    rows = [dict(samples[0]), dict(samples[1], color_red=flags[0], color_white=flags[1])]
    event = url_event(json.dumps(rows))
    assert fast.fast.batch_of(event) is None
    error = json.loads(assert_same_answer(fast, full, event)["body"])["error"]
    assert (
        error["details"][0]["row"] == 1 and "exactly one of color_red and color_white" in error["details"][0]["message"]
    )


def test_too_many_rows_falls_back_to_the_413(wine_app, samples):
    fast = App(wine_app.spec, wine_app.predictor, max_rows=1)
    event = url_event(json.dumps(samples))
    assert fast.fast.batch_of(event) is None
    assert assert_same_answer(fast, full_only(fast), event)["statusCode"] == 413


# -- a schema with what wine lacks: ints, optional and nullable features, unknown keys ignored --------


class Reading(BaseModel):
    """Extra keys ignored (pydantic's default); a name and an alias both accepted for one feature."""

    temperature: float = Field(gt=-50, lt=60)
    count: int = Field(ge=0, le=999)
    pressure: float | None = Field(default=None, ge=0)
    humidity: float | None = Field(le=100)
    calibrated: bool = True
    wind: float = Field(default=3.5, alias="Wind")


class Echo:
    """A model that predicts each row's packed values (NaN as null): any difference in packing shows."""

    feature_names = None

    def predict(self, batch: Batch) -> list:
        n = batch.n_features
        values = [None if math.isnan(v) else v for v in batch.values]
        return [values[i * n : (i + 1) * n] for i in range(batch.n_rows)]


class Echo64(Echo):
    """The same, reading float64 batches: every value it answers is the client's, as JSON wrote it."""

    input_type = "float64"

    def predict(self, batch: Batch) -> list:
        assert batch.values.typecode == "d"
        return super().predict(batch)


ECHOES = {"float32": Echo, "float64": Echo64}


@pytest.fixture(scope="module", params=list(ECHOES))
def readings(request) -> tuple[App, App]:
    spec = ModelSpec(
        name="readings", version="1", backend="echo", package="lambda_ml_serve", artifact="py.typed", schema=Reading
    )
    app = App(spec, ECHOES[request.param]())
    assert app.fast is not None, app.request_path.reason
    return app, full_only(app)


reading_value = st.one_of(
    st.floats(-60, 120),
    st.integers(-5, 1200),
    st.sampled_from([-50, 60, 0, 999, 1000, 100, -0.0, 1e400]),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.floats(),
)
reading_rows = st.dictionaries(
    st.sampled_from(
        ["temperature", "count", "pressure", "humidity", "calibrated", "Wind", "wind", "other", "instances"]
    ),
    reading_value,
    max_size=8,
)


@settings_
@given(payload=shaped(reading_rows), dump=dumpers)
def test_optional_int_and_ignored_fields_agree(readings, payload, dump):
    fast, full = readings
    assert_same_answer(fast, full, http_event(payload, dump=dump))


def test_missing_optional_features_are_nan_on_both_paths(readings):
    fast, full = readings
    event = url_event(json.dumps([{"temperature": 1, "count": 2, "humidity": None, "junk": "x"}]))
    assert fast.fast.batch_of(event) is not None
    answer = json.loads(assert_same_answer(fast, full, event)["body"])
    assert answer["predictions"] == [[1.0, 2.0, None, None, 1.0, 3.5]]


def test_float64_batches_hold_the_values_as_written(readings):
    """7.4 reaches a float64 predictor as 7.4 on both paths (float32: 7.400000095367432), and a
    finite value past float32's range stays finite (float32: infinite)."""
    fast, full = readings
    row = {"temperature": 7.4, "count": 2, "humidity": 0.1, "pressure": 1e300, "Wind": 3.4e39}
    for rows in ([row], {"instances": [row]}, row):
        event = url_event(json.dumps(rows))
        assert fast.fast.batch_of(event) is not None
        assert fast.fast.batch_of(event).values.typecode == fast.typecode
        if fast.typecode == "d":
            answer = json.loads(assert_same_answer(fast, full, event)["body"])
            assert answer["predictions"] == [[7.4, 2.0, 1e300, 0.1, 1.0, 3.4e39]]
    assert fast(copy.deepcopy([row]), CONTEXT) == full(copy.deepcopy([row]), CONTEXT)
    if fast.typecode == "f":
        assert fast.fast.batch_of(url_event(json.dumps([row]))).values[0] == 7.400000095367432


def test_an_input_type_other_than_float32_or_float64_is_refused():
    class Half(Echo):
        input_type = "float16"

    spec = ModelSpec(
        name="readings", version="1", backend="echo", package="lambda_ml_serve", artifact="py.typed", schema=Reading
    )
    with pytest.raises(ValueError, match=r"Half\.input_type is 'float16'; it must be one of float32, float64"):
        App(spec, Half())


# -- categories (each rule for unknown strings), nullable and optional ones, beside numbers ----------


class Tasting(BaseModel):
    """Category features: strings in, codes (index in the declared list) out; null and absent -> NaN."""

    model_config = ConfigDict(extra="forbid")

    color: Annotated[str, Category(["red", "white"])]
    region: Annotated[str, Category(["north", "south", "east"], unknown="missing")] | None
    grape: Annotated[str, Category(["syrah", "merlot"], unknown="minus_one")] | None = None
    alcohol: float | None = Field(
        default=None, ge=0, le=100, alias="Alcohol", validation_alias=AliasChoices("Alcohol", "alcohol")
    )


@pytest.fixture(scope="module", params=list(ECHOES))
def tastings(request) -> tuple[App, App]:
    spec = ModelSpec(
        name="tastings", version="1", backend="echo", package="lambda_ml_serve", artifact="py.typed", schema=Tasting
    )
    app = App(spec, ECHOES[request.param]())
    assert app.fast is not None, app.request_path.reason
    return app, full_only(app)


category_value = st.one_of(
    st.sampled_from(["red", "white", "north", "south", "east", "syrah", "merlot"]),
    st.sampled_from(["RED", "blue", "", "west", "red ", 1, 0, True, None, 1.5, ["red"], {"a": 1}]),
    st.text(max_size=4),
)
tasting_rows = st.dictionaries(
    st.sampled_from(["color", "region", "grape", "alcohol", "Alcohol", "other"]),
    category_value | reading_value,
    max_size=6,
)


@st.composite
def valid_tastings(draw) -> dict:
    row = {
        "color": draw(st.sampled_from(["red", "white"])),
        "region": draw(st.sampled_from(["north", "south", "east", None])),
    }
    if draw(st.booleans()):
        row["grape"] = draw(st.sampled_from(["syrah", "merlot", None]))
    if draw(st.booleans()):
        row["Alcohol"] = draw(st.floats(0, 100) | st.none())
    return row


@settings_
@given(payload=shaped(tasting_rows | valid_tastings()), dump=dumpers, b64=st.booleans())
def test_categories_unknowns_and_nulls_agree(tastings, payload, dump, b64):
    fast, full = tastings
    assert_same_answer(fast, full, http_event(payload, dump=dump, b64=b64))


@settings_
@given(rows=st.lists(valid_tastings(), min_size=1, max_size=5))
def test_known_categories_take_the_fast_path(tastings, rows):
    fast, full = tastings
    event = url_event(json.dumps(rows))
    assert fast.fast.batch_of(event) is not None
    assert assert_same_answer(fast, full, event)["statusCode"] == 200


def test_categories_pack_as_their_codes(tastings):
    fast, full = tastings
    rows = [
        {"color": "white", "region": "east", "grape": "merlot", "alcohol": 12.5},
        {"color": "red", "region": None},
        {"color": "red", "region": "west", "grape": "gamay"},
    ]
    answer = json.loads(assert_same_answer(fast, full, url_event(json.dumps(rows)))["body"])
    assert answer["predictions"] == [[1.0, 2.0, 1.0, 12.5], [0.0, None, None, None], [0.0, None, -1.0, None]]


def test_an_unknown_category_is_a_422_without_the_value(tastings):
    fast, full = tastings
    answer = assert_same_answer(fast, full, url_event(json.dumps([{"color": "red"}, {"color": "rosé-secret"}])))
    assert answer["statusCode"] == 422
    assert "rosé-secret" not in answer["body"]
    details = json.loads(answer["body"])["error"]["details"]
    assert [(d["row"], d["field"]) for d in details] == [(0, "region"), (1, "color"), (1, "region")]
    assert "'red' or 'white'" in details[1]["message"]


def test_the_plan_and_the_documents_carry_the_categories(tastings):
    fast, _ = tastings
    plan = fast.request_path.plan
    assert [(f.kind, f.categories, f.unknown, f.nullable) for f in plan.fields[:3]] == [
        ("category", ("red", "white"), "error", False),
        ("category", ("north", "south", "east"), "missing", True),
        ("category", ("syrah", "merlot"), "minus_one", True),
    ]
    assert type(plan).from_json(json.loads(json.dumps(plan.to_json()))) == plan
    schema = fast.metadata["input_schema"]["properties"]
    assert schema["color"]["enum"] == ["red", "white"]
    assert schema["region"]["anyOf"][0]["x-categories"] == ["north", "south", "east"]
    assert "enum" not in schema["region"]["anyOf"][0]
