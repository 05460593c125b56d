"""The input schema: one wine sample. Field order is the model's feature order.

Each field accepts the original column name (``"fixed acidity"``) and snake_case (``fixed_acidity``);
colour is either the one-hot pair ``color_red``/``color_white`` or ``"color": "red" | "white"``.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

COLORS = ("red", "white")


def _measure(column: str, unit: str, *, ge: float = 0.0, le: float | None = None) -> Any:
    snake = column.replace(" ", "_")
    names = (column,) if snake == column else (column, snake)
    return Field(
        alias=column,
        validation_alias=AliasChoices(*names),
        ge=ge,
        le=le,
        description=unit,
    )


class WineSample(BaseModel):
    """One red or white wine, measured."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="WineSample")

    fixed_acidity: float = _measure("fixed acidity", "g(tartaric acid)/dm3")
    volatile_acidity: float = _measure("volatile acidity", "g(acetic acid)/dm3")
    citric_acid: float = _measure("citric acid", "g/dm3")
    residual_sugar: float = _measure("residual sugar", "g/dm3")
    chlorides: float = _measure("chlorides", "g(sodium chloride)/dm3")
    free_sulfur_dioxide: float = _measure("free sulfur dioxide", "mg/dm3")
    total_sulfur_dioxide: float = _measure("total sulfur dioxide", "mg/dm3")
    # Water is 1.0 g/cm3; wine sits close to it. Outside this range it is not a wine sample.
    density: float = _measure("density", "g/cm3", ge=0.9, le=1.1)
    pH: float = _measure("pH", "pH", ge=0.0, le=14.0)
    sulphates: float = _measure("sulphates", "g(potassium sulphate)/dm3")
    alcohol: float = _measure("alcohol", "% by volume", le=100.0)
    color_red: bool = Field(alias="color_red", description="1 for red wine, else 0")
    color_white: bool = Field(alias="color_white", description="1 for white wine, else 0")

    @model_validator(mode="before")
    @classmethod
    def _color_name(cls, data: Any) -> Any:
        """Turn ``"color": "red"`` into the one-hot pair the model was trained on."""
        if not isinstance(data, dict) or "color" not in data:
            return data
        data = dict(data)
        color = data.pop("color")
        # Messages name fields and allowed values only: the framework withholds any that repeats input.
        name = color.lower() if isinstance(color, str) else None
        if name not in COLORS:
            raise ValueError("color must be red or white")
        flags = {"color_red": name == "red", "color_white": name == "white"}
        for key, value in flags.items():
            if key in data and data[key] not in (value, int(value)):
                raise ValueError(f"color contradicts {key}; send one or the other")
            data[key] = value
        return data

    @model_validator(mode="after")
    def _one_color(self) -> WineSample:
        if self.color_red == self.color_white:
            raise ValueError("exactly one of color_red and color_white must be true")
        return self
