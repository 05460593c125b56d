"""Deriving the fast decoder from a pydantic schema: what it expresses, and what it refuses in words."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, Field, field_validator, model_validator

from lambda_ml_serve.checks import ExactlyOne
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.fast import FastPlan, FieldPlan, RequestPath, Unsupported, derive, plan_for
from lambda_ml_serve.spec import ModelSpec


def spec_of(schema: type[BaseModel], **kwargs) -> ModelSpec:
    return ModelSpec(
        name="m",
        version="1",
        backend="xgboost",
        package="lambda_ml_serve",
        artifact="py.typed",
        schema=schema,
        **kwargs,
    )


def test_bounds_kinds_and_defaults():
    class Row(BaseModel):
        a: float = Field(ge=0, le=14)
        b: int = Field(gt=-1, lt=10)
        c: Annotated[float, Field(gt=0.5)] = 2
        d: float | None = None
        e: bool = Field(default=False, strict=True)

    plan = plan_for(spec_of(Row))
    assert plan.fields == (
        FieldPlan(keys=("a",), kind="float", bounds=(("ge", 0), ("le", 14))),
        FieldPlan(keys=("b",), kind="int", bounds=(("gt", -1), ("lt", 10))),
        FieldPlan(keys=("c",), kind="float", bounds=(("gt", 0.5),), required=False, default=2.0),
        FieldPlan(keys=("d",), kind="float", nullable=True, required=False, default=None),
        FieldPlan(keys=("e",), kind="bool", strict=True, required=False, default=0.0),
    )
    assert plan.forbid_unknown is False and plan.spellings == 1


def test_aliases_validation_aliases_and_names():
    class Row(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        fixed_acidity: float = Field(alias="fixed acidity", validation_alias=AliasChoices("fixed acidity", "fa"))
        ph: float = Field(alias="pH")
        density: float

    plan = plan_for(spec_of(Row))
    assert [f.keys for f in plan.fields] == [("fixed acidity", "fa", "fixed_acidity"), ("pH", "ph"), ("density",)]
    assert plan.forbid_unknown and plan.spellings == 3
    assert [f.key(1) for f in plan.fields] == ["fa", "ph", "density"]


def test_the_wine_schema_with_its_batch_check(wine_app):
    path = wine_app.request_path
    assert path.describe()["path"] == "fast"
    assert path.plan.checks == (("exactly_one", (11, 12)),)
    assert path.plan.fields[0].keys == ("fixed acidity", "fixed_acidity")
    assert wine_app.metadata["request_path"] == path.describe()


def test_validators_need_declared_batch_checks():
    class Row(BaseModel):
        a: float

        @model_validator(mode="after")
        def _positive(self):
            return self

    reason = derive(spec_of(Row)).reason
    assert reason.startswith("full path only: Row has validators (_positive)") and "batch_checks" in reason
    assert derive(spec_of(Row, batch_checks=())).plan is not None


class Nested(BaseModel):
    x: float


@pytest.mark.parametrize(
    ("annotation", "field", "message"),
    [
        (str, Field(), "Row.a is a 'str'"),
        (Literal[1, 2], Field(), "Row.a is a 'literal'"),
        (float | str, Field(), "Row.a is a 'union'"),
        (Nested, Field(), "Row.a is a 'model'"),
        (list[float], Field(), "Row.a is a 'list'"),
        (float, Field(multiple_of=0.5), "Row.a has multiple_of"),
        (float, Field(default_factory=float), "default factory"),
        (float, Field(validation_alias=AliasPath("a", 0)), "nested path (AliasPath)"),
        (int, Field(ge=1.0), "non-integer bound"),
        (float, Field(alias="instances"), "'instances' is read as the {'instances': [rows]} shape"),
    ],
)
def test_what_it_cannot_express_is_refused_by_name(annotation, field, message):
    Row = type("Row", (BaseModel,), {"__annotations__": {"a": annotation}, "a": field})
    with pytest.raises(Unsupported, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        plan_for(spec_of(Row))


def test_field_validators_and_ignored_extras_with_spellings_are_refused():
    class Checked(BaseModel):
        a: float

        @field_validator("a")
        @classmethod
        def _round(cls, value):
            return round(value)

    assert derive(spec_of(Checked, batch_checks=())).reason.startswith(
        "full path only: Checked.a has a validator (_round)"
    )

    class Loose(BaseModel):
        a: float = Field(validation_alias=AliasChoices("a", "A"))

    assert "several accepted keys need extra='forbid'" in derive(spec_of(Loose)).reason


def test_batch_checks_must_name_bool_features():
    class Row(BaseModel):
        red: bool
        level: float

    assert derive(spec_of(Row, batch_checks=(ExactlyOne(("red", "level")),))).reason.endswith(
        "'level' is not a bool feature of Row"
    )
    with pytest.raises(ValueError, match="two or more"):
        ExactlyOne(("red",))


def test_the_plan_round_trips_through_json(wine_app):
    path = wine_app.request_path
    assert RequestPath.from_json(json.loads(json.dumps(path.to_json()))) == path
    assert FastPlan.from_json(path.plan.to_json()) == path.plan


class Total:
    feature_names = None

    def predict(self, batch):
        n = batch.n_features
        return [sum(batch.values[i * n : (i + 1) * n]) for i in range(batch.n_rows)]


def test_a_model_on_the_full_path_answers_as_before():
    class Counted(BaseModel):
        a: float = Field(ge=0)
        b: float = 1.0

        @field_validator("b")
        @classmethod
        def _whole(cls, value):
            return float(round(value))

    app = App(spec_of(Counted), Total())
    assert app.fast is None
    reason = "full path only: Counted.b has a validator (_whole) the fast decoder cannot run"
    assert app.metadata["request_path"] == {"path": "full", "reason": reason}
    assert app({"instances": [{"a": 2, "b": 1.4}]})["predictions"] == [3.0]
    assert app([{"a": -1}])["error"]["details"][0]["field"] == "a"
