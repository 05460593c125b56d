"""The input schema: one row the model predicts for. Field order is the model's feature order.

Replace these example features with your model's. Each field needs a type, and bounds and a
description are worth their few characters: requests outside the bounds are answered with a 422
naming the row and field, and the descriptions appear in ``lambda-ml-serve schema {{ cookiecutter.model_name }}``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class {{ cookiecutter.__schema_class }}(BaseModel):
    """One object, measured."""

    # extra="forbid": a misspelt feature is an error, not a silently missing value.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="{{ cookiecutter.__schema_class }}")

    length_cm: float = Field(ge=0, le=200, description="length in centimetres")
    width_cm: float = Field(ge=0, le=100, description="width in centimetres")
    height_cm: float = Field(ge=0, le=100, description="height in centimetres")
    weight_kg: float = Field(gt=0, le=500, description="weight in kilograms")


#: Feature names in model order, as requests spell them (a field's alias, else its name).
FEATURES = tuple(field.alias or name for name, field in {{ cookiecutter.__schema_class }}.model_fields.items())
