"""Feature types beyond numbers for a model's pydantic schema: categories.

A category feature is sent as one of its category strings and reaches the model as its **code**, the
index of the string in the list the schema declares (for XGBoost and LightGBM the model's own category
order, so the code is the library's own). What an unknown string becomes is the model's choice::

    color: Annotated[str, Category(["red", "white"], unknown="missing")] | None = None

``unknown`` is ``"error"`` (a 422 naming the field and row), ``"missing"`` (NaN: XGBoost and LightGBM
read an unseen category as missing) or ``"minus_one"`` (code -1.0: a scikit-learn encoder that answers
unknown categories, ``handle_unknown="ignore"``/``"infrequent_if_exist"``/``"use_encoded_value"``).

The validated value is a :class:`CategoryValue`: the string itself (what ``model_dump`` writes) that
converts to its code with ``float()``, so a row packs into the float32 batch like any number.
Imports nothing at module level: the runtime reads the policy names from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: What an unknown category string becomes, and the code it packs to (None: refused with a 422).
UNKNOWN_CODES: dict[str, float | None] = {"error": None, "missing": math.nan, "minus_one": -1.0}
#: Where a category field's core schema keeps its description for the fast path and the documents.
METADATA_KEY = "lambda_ml_serve_category"


class CategoryValue(str):
    """A validated category: the string, with its code for the batch (``float(value)``)."""

    __slots__ = ("code",)

    code: float

    def __new__(cls, value: str, code: float) -> CategoryValue:
        self = super().__new__(cls, value)
        self.code = code
        return self

    def __float__(self) -> float:
        return self.code


class Category:
    """Marks a ``str`` field as a category with these values, in the model's order (see the module docs)."""

    def __init__(self, categories: Sequence[str], *, unknown: str = "error") -> None:
        values = list(categories)
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError("Category: give the category strings, at least one, in the model's order")
        if len(set(values)) != len(values):
            raise ValueError("Category: the category strings must be unique")
        if unknown not in UNKNOWN_CODES:
            raise ValueError(f"Category: unknown must be one of {', '.join(UNKNOWN_CODES)}")
        self.categories = tuple(values)
        self.unknown = unknown
        self._codes = {value: CategoryValue(value, float(i)) for i, value in enumerate(values)}

    def __repr__(self) -> str:
        return f"Category({list(self.categories)!r}, unknown={self.unknown!r})"

    def describe(self) -> dict[str, Any]:
        """The field as the fast plan and the documents carry it."""
        return {"categories": list(self.categories), "unknown": self.unknown}

    def _validate(self, value: str) -> CategoryValue:
        known = self._codes.get(value)
        if known is not None:
            return known
        # Only reached for the accepting policies: with "error" the literal schema refused it already.
        return CategoryValue(value, UNKNOWN_CODES[self.unknown])  # type: ignore[arg-type]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        # A literal refuses unknown strings with a message listing the allowed ones, never the input.
        inner = (
            core_schema.literal_schema(list(self.categories))
            if self.unknown == "error"
            else core_schema.str_schema(strict=True)
        )
        return core_schema.no_info_after_validator_function(
            self._validate,
            inner,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
            metadata={METADATA_KEY: self.describe()},
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        # "enum" only where other strings are refused; the categories are listed either way.
        described = {"type": "string", "x-categories": list(self.categories), "x-unknown-category": self.unknown}
        return {"enum": list(self.categories), **described} if self.unknown == "error" else described


def category_of(core_schema: dict[str, Any]) -> dict[str, Any] | None:
    """The category description of a field's core schema (``Category.describe``), or None."""
    metadata = core_schema.get("metadata") or {}
    return metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
