"""Request body -> validated rows -> a float32 batch in the model's feature order."""

from __future__ import annotations

import math
from array import array
from difflib import get_close_matches
from typing import Any

from pydantic import AliasChoices, BaseModel, TypeAdapter, ValidationError

from lambda_ml_serve.runtime.errors import ApiError, detail
from lambda_ml_serve.spec import Batch, ModelSpec

#: More detail lines than this help nobody; the message says how many were left out.
MAX_DETAILS = 50


def accepted_names(spec: ModelSpec) -> list[str]:
    """Every key a row may use for a field: its name, alias and validation aliases."""
    names: list[str] = []
    for name, info in spec.schema.model_fields.items():
        names += [name, info.alias or name]
        choices = info.validation_alias
        if isinstance(choices, str):
            names.append(choices)
        elif isinstance(choices, AliasChoices):
            names += [c for c in choices.choices if isinstance(c, str)]
    return list(dict.fromkeys(names))


class RowValidator:
    """Validates rows against the model's pydantic schema and packs them for the backend."""

    def __init__(self, spec: ModelSpec, max_rows: int) -> None:
        self._adapter = TypeAdapter(list[spec.schema])
        self._n_features = len(spec.schema.model_fields)
        self._names = accepted_names(spec)
        self.max_rows = max_rows

    def to_batch(self, rows: list[Any]) -> Batch:
        """Validate every row (all errors at once, as one 422) and pack them in feature order."""
        return self.pack(self.validate(rows))

    def validate(self, rows: list[Any]) -> list[BaseModel]:
        if len(rows) > self.max_rows:
            raise ApiError(
                "payload_too_large",
                f"{len(rows)} rows is more than the maximum of {self.max_rows} per request; "
                "split the rows over several requests",
            )
        try:
            return self._adapter.validate_python(rows)
        except ValidationError as exc:
            raise self._validation_error(exc) from None

    def pack(self, models: list[BaseModel]) -> Batch:
        values = array("f")
        for model in models:
            row = list(model.__dict__.values())
            try:
                values.fromlist(row)  # all or nothing: extend() would keep the values before a None
            except TypeError:  # an optional feature left empty: XGBoost's missing value is NaN
                values.fromlist([math.nan if v is None else v for v in row])
        return Batch(values, len(models), self._n_features)

    def _validation_error(self, exc: ValidationError) -> ApiError:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        details = [self._detail(e) for e in errors[:MAX_DETAILS]]
        rows = sorted({d["row"] for d in details if d["row"] is not None})
        message = f"{exc.error_count()} invalid value(s) in {len(rows)} row(s)"
        if exc.error_count() > MAX_DETAILS:
            message += f"; showing the first {MAX_DETAILS}"
        return ApiError("validation_error", message, details)

    def _detail(self, error: Any) -> dict[str, Any]:
        loc = error["loc"]
        row = loc[0] if loc and isinstance(loc[0], int) else None
        field_path = [str(p) for p in loc[1:]] if row is not None else [str(p) for p in loc]
        field = ".".join(field_path) or None
        message = error["msg"]
        if error["type"] == "extra_forbidden" and field is not None:
            close = get_close_matches(field, self._names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "remove it"
            message = f"unknown field; {hint}"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "model_type" and field is None:
            message = "each row must be a JSON object of feature names to values"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        return detail(row, field, message)
