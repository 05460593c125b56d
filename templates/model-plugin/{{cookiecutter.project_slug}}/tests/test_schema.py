"""The input schema accepts the example and rejects what the model must never see."""

import math

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.plugin import EXAMPLE
from {{ cookiecutter.package_name }}.schema import FEATURES, {{ cookiecutter.__schema_class }}

SCHEMA = {{ cookiecutter.__schema_class }}
PROPERTIES = SCHEMA.model_json_schema(by_alias=True)["properties"]


def errors_for(row: dict) -> list[tuple[str, str]]:
    """(field, error type) for each problem pydantic finds in ``row``."""
    with pytest.raises(ValidationError) as info:
        SCHEMA.model_validate(row)
    return [(".".join(map(str, e["loc"])), e["type"]) for e in info.value.errors()]


def test_example_rows_are_valid_and_complete():
    assert len(EXAMPLE) >= 1
    for row in EXAMPLE:
        parsed = SCHEMA.model_validate(row)
        assert tuple(parsed.model_dump(by_alias=True)) == FEATURES
        assert all(math.isfinite(value) for value in parsed.model_dump().values())


def test_every_feature_is_documented():
    assert all(PROPERTIES[name].get("description") for name in FEATURES)


def test_missing_feature_is_rejected():
    row = dict(EXAMPLE[0])
    del row[FEATURES[0]]
    assert errors_for(row) == [(FEATURES[0], "missing")]


def test_unknown_field_is_rejected():
    assert errors_for({**EXAMPLE[0], "not_a_feature": 1.0}) == [("not_a_feature", "extra_forbidden")]


@pytest.mark.parametrize("value", ["ten", None, float("nan"), float("inf")])
def test_non_numbers_are_rejected(value):
    field, _ = errors_for({**EXAMPLE[0], FEATURES[-1]: value})[0]
    assert field == FEATURES[-1]


@pytest.mark.parametrize("name", [n for n in FEATURES if "maximum" in PROPERTIES[n] or "minimum" in PROPERTIES[n]])
def test_values_outside_the_bounds_are_rejected(name):
    prop = PROPERTIES[name]
    if "maximum" in prop:
        assert errors_for({**EXAMPLE[0], name: prop["maximum"] + 1}) == [(name, "less_than_equal")]
    if "minimum" in prop:
        assert errors_for({**EXAMPLE[0], name: prop["minimum"] - 1}) == [(name, "greater_than_equal")]
