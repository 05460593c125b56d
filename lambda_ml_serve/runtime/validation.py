"""Request body -> validated rows -> a batch in the model's feature order, in the predictor's precision.

Validation is bounded whatever arrives: rows go to pydantic in chunks of at most :data:`CHUNK_KEYS`
keys, so a failing call builds a bounded number of errors; the first failing chunk is then checked row
by row, and checking stops once :data:`MAX_DETAILS` errors are found. Messages come from the error
type and the field name (see :mod:`lambda_ml_serve.runtime.errors`), never from the submitted values.
"""

from __future__ import annotations

import math
from array import array
from difflib import get_close_matches
from typing import Any

from pydantic import AliasChoices, BaseModel, TypeAdapter, ValidationError

from lambda_ml_serve.runtime.errors import MAX_FIELD_CHARS, ApiError, detail, field_name, plugin_message
from lambda_ml_serve.spec import Batch, ModelSpec

#: Validation stops after this many errors, and an answer lists at most this many.
MAX_DETAILS = 50
#: A row with more keys than this is refused as a whole (one error), without validating its fields.
MAX_ROW_KEYS = 1024
#: Keys handed to pydantic per call: bounds the errors (time, memory) one failing call can build.
CHUNK_KEYS = 4096
#: pydantic error types whose messages are written from the schema alone (bounds, expected types,
#: allowed literals), never from the input; any other message is a plugin's and is filtered.
SCHEMA_MESSAGES = frozenset(
    {
        "bool_parsing",
        "bool_type",
        "bytes_type",
        "decimal_max_digits",
        "decimal_max_places",
        "decimal_parsing",
        "decimal_type",
        "decimal_whole_digits",
        "dict_type",
        "enum",
        "finite_number",
        "float_parsing",
        "float_type",
        "greater_than",
        "greater_than_equal",
        "int_from_float",
        "int_parsing",
        "int_parsing_size",
        "int_type",
        "less_than",
        "less_than_equal",
        "list_type",
        "literal_error",
        "multiple_of",
        "none_required",
        "string_pattern_mismatch",
        "string_too_long",
        "string_too_short",
        "string_type",
        "too_long",
        "too_short",
    }
)


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

    def __init__(self, spec: ModelSpec, max_rows: int, typecode: str = "f") -> None:
        """``typecode`` is the batch's array type: ``"f"`` (float32) or ``"d"`` (float64), see ``input_typecode``."""
        self._schema = spec.schema
        self._typecode = typecode
        self._adapter = TypeAdapter(list[spec.schema])
        self._n_features = len(spec.schema.model_fields)
        self._names = accepted_names(spec)
        self.max_rows = max_rows

    def to_batch(self, rows: list[Any]) -> Batch:
        """Validate the rows (one 422 listing the first errors) and pack them in feature order."""
        return self.pack(self.validate(rows))

    def validate(self, rows: list[Any]) -> list[BaseModel]:
        """The rows as schema instances; raises ApiError (413 too many rows, 422 invalid rows)."""
        if len(rows) > self.max_rows:
            raise ApiError(
                "payload_too_large",
                f"{len(rows)} rows is more than the maximum of {self.max_rows} per request; "
                "split the rows over several requests",
            )
        widest = max(len(row) if isinstance(row, dict) else 1 for row in rows) or 1
        if widest > MAX_ROW_KEYS:
            raise self._validation_error(rows, 0)
        step = max(1, CHUNK_KEYS // widest)
        models: list[BaseModel] = []
        for start in range(0, len(rows), step):
            try:
                models += self._adapter.validate_python(rows[start : start + step])
            except ValidationError:
                raise self._validation_error(rows, start) from None
        return models

    def pack(self, models: list[BaseModel]) -> Batch:
        """The validated rows' values in feature order; past float32's range a float32 value is infinite."""
        values = array(self._typecode)
        for model in models:
            row = list(model.__dict__.values())
            try:
                values.fromlist(row)  # all or nothing: extend() would keep the values before a None
            except TypeError:  # an optional feature left empty: XGBoost's missing value is NaN
                values.fromlist([math.nan if v is None else v for v in row])
        return Batch(values, len(models), self._n_features)

    def _validation_error(self, rows: list[Any], start: int) -> ApiError:
        """Check rows one by one from ``start`` (the first failing chunk) until MAX_DETAILS errors."""
        details: list[dict[str, Any]] = []
        count = bad_rows = 0
        index = start
        for index in range(start, len(rows)):
            if len(details) >= MAX_DETAILS:
                break
            row = rows[index]
            if isinstance(row, dict) and len(row) > MAX_ROW_KEYS:
                message = f"a row may have at most {MAX_ROW_KEYS} keys; this one has {len(row)}"
                details.append(detail(index, None, message))
                count, bad_rows = count + 1, bad_rows + 1
                continue
            try:
                self._schema.model_validate(row)
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False)
                details += [self._detail(index, e) for e in errors[: MAX_DETAILS - len(details)]]
                count, bad_rows = count + len(errors), bad_rows + 1
        else:
            index = len(rows)
        if index < len(rows):
            message = (
                f"at least {count} invalid value(s) in {bad_rows} row(s); validation stops after "
                f"{MAX_DETAILS} errors, so rows from {index} on were not checked"
            )
        else:
            message = f"{count} invalid value(s) in {bad_rows} row(s)"
        return ApiError("validation_error", message, details, total=count)

    def _detail(self, row: int, error: Any) -> dict[str, Any]:
        loc, kind = error["loc"], error["type"]
        field = field_name(loc)
        if kind == "extra_forbidden" and loc:
            key = str(loc[-1])
            close = get_close_matches(key, self._names, n=1, cutoff=0.6) if len(key) <= MAX_FIELD_CHARS else []
            message = f"unknown field; did you mean {close[0]!r}?" if close else "unknown field; remove it"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "model_type" and not loc:
            message = "each row must be a JSON object of feature names to values"
        elif kind in SCHEMA_MESSAGES:
            message = error["msg"]
        else:  # a plugin's validator wrote it (value_error, assertion_error, custom errors)
            text = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            message = plugin_message(text, error.get("input"))
        return detail(row, field, message)
