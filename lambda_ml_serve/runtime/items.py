"""Scoring many rows where a bad row fails only itself: batch files and Step Functions' Distributed Map.

A request answers 422 for the whole body when one row is invalid. Batch scoring instead keeps every
valid row's prediction and reports each invalid row on its own. Both the ``batch`` command and a
Distributed Map child execution (a direct invocation ``{"Items": [...], "BatchInput": {...}}``) go
through :func:`score_rows`: predict the rows in one call, and only when that is refused, split the
rows in halves until each invalid row stands alone. A few bad rows in a large chunk cost a few extra
calls, never one call per row.

Rows read from CSV (a file, or an ``S3CsvItemReader``) arrive as strings; the schema's own lax
coercion turns ``"7.4"`` into a float, and an empty cell is a missing value (:func:`clean_row`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lambda_ml_serve.runtime.errors import ApiError

#: The keys of a Distributed Map batch (an ``ItemBatcher``'s output); both must be there.
ITEMS_KEY, BATCH_INPUT_KEY = "Items", "BatchInput"
#: BatchInput options: the item key carried into each result instead of being a feature.
ID_KEY = "id_column"


@dataclass
class ScoredRows:
    """One prediction or one error list per input row, in input order."""

    predictions: list[Any] = field(default_factory=list)
    #: Row index -> the 422 details of that row alone: ``{"field", "message"}`` each.
    errors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return len(self.predictions) - len(self.errors)


def clean_row(row: Mapping[str, Any], drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A row without empty cells (a missing value, as in CSV) and without the ``drop`` keys."""
    return {k: v for k, v in row.items() if k not in drop and v != "" and v is not None}


def score_rows(predict: Callable[[list[Any]], list[Any]], rows: Sequence[Any]) -> ScoredRows:
    """Predict ``rows`` with ``predict`` (all rows or none, raising ``ApiError``), isolating bad rows.

    Only a ``validation_error`` is split further; any other error (a fault of the service) propagates,
    since retrying it row by row would hide it and multiply its cost.
    """
    result = ScoredRows(predictions=[None] * len(rows))
    pending = [(0, len(rows))] if rows else []
    while pending:
        start, stop = pending.pop()
        try:
            predictions = predict(list(rows[start:stop]))
        except ApiError as exc:
            if exc.type != "validation_error":
                raise
            if stop - start == 1:
                details = exc.details or [{"field": None, "message": exc.message}]
                result.errors[start] = [{"field": d.get("field"), "message": d.get("message")} for d in details]
                continue
            middle = (start + stop) // 2
            pending += [(middle, stop), (start, middle)]
            continue
        result.predictions[start:stop] = predictions
    return result


def is_batch_event(payload: Any) -> bool:
    """A Distributed Map batch: a direct invocation carrying ``Items`` (a list) and ``BatchInput``."""
    return isinstance(payload, dict) and isinstance(payload.get(ITEMS_KEY), list) and BATCH_INPUT_KEY in payload


def answer_batch(
    predict: Callable[[list[Any]], list[Any]], payload: Mapping[str, Any], max_rows: int
) -> dict[str, Any]:
    """Score a Distributed Map batch; each item gets ``{"item", "prediction"}`` or ``{"item", "error"}``.

    ``BatchInput`` may name an ``id_column``: that key is taken out of each item's features and
    copied into its result, so results can be joined back to the input.
    """
    items, options = payload[ITEMS_KEY], payload[BATCH_INPUT_KEY]
    if not isinstance(options, dict):
        raise ApiError("validation_error", f"{BATCH_INPUT_KEY} must be an object")
    id_column = options.get(ID_KEY)
    if id_column is not None and not isinstance(id_column, str):
        raise ApiError("validation_error", f"{BATCH_INPUT_KEY}.{ID_KEY} must be a string")
    if len(items) > max_rows:
        raise ApiError(
            "payload_too_large",
            f"{len(items)} items is more than the maximum of {max_rows} per batch; "
            "lower the ItemBatcher's MaxItemsPerBatch",
        )
    drop = frozenset({id_column}) if id_column else frozenset()
    rows = [clean_row(item, drop) if isinstance(item, dict) else item for item in items]
    scored = score_rows(predict, rows)
    results = []
    for index, item in enumerate(items):
        result: dict[str, Any] = {"item": index}
        if id_column and isinstance(item, dict) and id_column in item:
            result["id"] = item[id_column]
        if index in scored.errors:
            result["error"] = scored.errors[index]
        else:
            result["prediction"] = scored.predictions[index]
        results.append(result)
    return {"scored": scored.scored, "rejected": len(scored.errors), "results": results}
