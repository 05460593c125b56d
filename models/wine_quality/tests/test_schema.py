"""The wine input schema: names, colour forms, and physically impossible values."""

from __future__ import annotations

import math

import pytest
from lambda_ml_serve_wine_quality.plugin import EXAMPLE
from lambda_ml_serve_wine_quality.schema import WineSample
from pydantic import ValidationError

RED = EXAMPLE[1]


def features(sample: WineSample) -> list[float]:
    return [float(v) for v in sample.__dict__.values()]


def test_original_and_snake_case_names_are_the_same_sample():
    snake = {k.replace(" ", "_"): v for k, v in RED.items()}
    assert features(WineSample.model_validate(snake)) == features(WineSample.model_validate(RED))


def test_feature_order_is_the_models():
    aliases = [f.alias for f in WineSample.model_fields.values()]
    assert aliases == list(RED)


@pytest.mark.parametrize(
    "colour",
    [
        {"color": "red"},
        {"color": "RED"},
        {"color_red": True, "color_white": False},
        {"color_red": 1, "color_white": 0},
        {"color": "red", "color_red": 1},
    ],
)
def test_colour_forms(colour):
    base = {k: v for k, v in RED.items() if not k.startswith("color")}
    sample = WineSample.model_validate({**base, **colour})
    assert (sample.color_red, sample.color_white) == (True, False)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"color": "rose"}, "color must be red or white"),
        ({"color": "white"}, "color contradicts color_red; send one or the other"),
        ({"color_white": 1}, "exactly one of color_red and color_white"),
        ({"color_red": 0}, "exactly one of color_red and color_white"),
        ({"pH": 14.5}, "less than or equal to 14"),
        ({"pH": -1}, "greater than or equal to 0"),
        ({"density": 2.0}, "less than or equal to 1.1"),
        ({"chlorides": -0.1}, "greater than or equal to 0"),
        ({"alcohol": math.inf}, "finite number"),
        ({"sulphates": math.nan}, "finite number"),
        ({"citric acid": "lots"}, "valid number"),
        ({"vintage": 2019}, "Extra inputs are not permitted"),
    ],
)
def test_rejects_impossible_samples(change, needle):
    with pytest.raises(ValidationError) as info:
        WineSample.model_validate({**RED, **change})
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "change",
    [
        {"color": "SECRET-colour"},
        {"color": "red", "color_red": "SECRET-flag"},
        {"color": "white", "color_red": 12345678},
        {"color_red": 1, "color_white": 1},
    ],
)
def test_validator_messages_never_repeat_the_values(change):
    with pytest.raises(ValidationError) as info:
        WineSample.model_validate({**RED, **change})
    messages = " ".join(e["msg"] for e in info.value.errors())
    assert "SECRET" not in messages and "12345678" not in messages
    assert "'" not in messages and '"' not in messages  # the framework elides quoted spans anyway
