"""Explanations: exact SHAP values per row, asked for with ``POST /explain``, ``?explain=true``, or a v2
request's ``parameters.explain``.

Each row's explanation gives the model's margin (its output before the link function: a
regressor's prediction, a classifier's log-odds or class scores, a forest's probabilities), the
expected value (the margin's mean over the training data, as the trees' covers weigh it) and one
contribution per field, so that ``expected_value + sum(contributions) == margin``. A model with
several outputs (a multi-class classifier) has one of each per class. ``top=K`` keeps the K largest
contributions by magnitude and gives the rest's sum as ``rest``, so the sum still holds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from lambda_ml_serve.runtime.errors import ApiError
from lambda_ml_serve.spec import Batch, ExplainUnavailable, Explanation

#: Rows one explanation request may carry at most (a request with more is answered 413): an
#: explanation costs far more than a prediction and its answer is wider.
EXPLAIN_MAX_ROWS_ENV = "LAMBDA_ML_SERVE_EXPLAIN_MAX_ROWS"
DEFAULT_EXPLAIN_MAX_ROWS = 1_000
EXPLAIN_PATH = "/explain"
METHOD = "exact path-dependent TreeSHAP (Lundberg et al.)"
#: The backends that explain tree models (the onnx backend answers 501).
EXPLAINING_BACKENDS = ("compiled", "lightgbm", "sklearn", "xgboost")
_TRUE, _FALSE = frozenset({"true", "1", "yes", ""}), frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class ExplainOptions:
    """What a request asked for: explanations, and at most ``top`` contributions per row and output."""

    top: int | None = None


def max_rows(limit: int) -> int:
    """The explanation row limit: the environment's, else the default, never above the prediction limit."""
    configured = os.environ.get(EXPLAIN_MAX_ROWS_ENV)
    return min(limit, int(configured) if configured else DEFAULT_EXPLAIN_MAX_ROWS)


def requested(event: Any) -> bool:
    """Whether an event's query string may ask for explanations (cheap: read before the fast path, which
    answers predictions only; ``top`` alone is refused by the full path)."""
    if not isinstance(event, dict):
        return False
    raw = event.get("rawQueryString")
    if isinstance(raw, str) and raw:
        return "explain" in raw or "top" in raw
    params = event.get("queryStringParameters")
    return isinstance(params, dict) and ("explain" in params or "top" in params)


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ApiError("bad_request", f"{where} must be true or false")


def _top(value: Any, n_fields: int, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n_fields:
        raise ApiError("bad_request", f"{where} must be a whole number from 1 to {n_fields} (the number of fields)")
    return value


def options_from_query(query: dict[str, str], n_fields: int, explain_path: bool) -> ExplainOptions | None:
    """The options of ``?explain=true&top=K`` (or of ``POST /explain``, which needs no ``explain``)."""
    wanted = explain_path or ("explain" in query and _flag(query["explain"], "the query parameter 'explain'"))
    if not wanted:
        if "top" in query:
            raise ApiError("bad_request", "the query parameter 'top' goes with explanations: add explain=true")
        return None
    return ExplainOptions(_top(query.get("top"), n_fields, "the query parameter 'top'"))


def options_from_parameters(parameters: Any, n_fields: int) -> ExplainOptions | None:
    """The options of a v2 request's ``parameters``: ``explain`` (true/false) and ``top``."""
    if not isinstance(parameters, dict) or "explain" not in parameters:
        return None
    if not _flag(parameters["explain"], "parameters.explain"):
        return None
    return ExplainOptions(_top(parameters.get("top"), n_fields, "parameters.top"))


def check_rows(n_rows: int, limit: int) -> None:
    """413 past the explanation row limit."""
    if n_rows > limit:
        raise ApiError(
            "payload_too_large",
            f"{n_rows} rows is more than the maximum of {limit} per explanation request; split the rows over "
            "several requests",
        )


def explain_batch(predictor: Any, batch: Batch, backend: str) -> Explanation:
    """The predictor's explanation of ``batch``; 501 when the backend or model cannot explain."""
    explain = getattr(predictor, "explain", None)
    if explain is None:
        raise ApiError(
            "not_implemented",
            f"the {backend} backend does not explain predictions; serve the tree model with backend "
            f"{', '.join(EXPLAINING_BACKENDS)} to explain it",
        )
    try:
        return explain(batch)
    except ExplainUnavailable as exc:
        raise ApiError("not_implemented", str(exc)) from None


def _finite(value: float) -> float:
    # An answer is JSON: a contribution that overflowed is a fault, answered as such (no NaN in JSON).
    if not math.isfinite(value):
        raise ValueError("a contribution is not a finite number")
    return value


def _output(base: float, values: list[float], names: list[str], top: int | None) -> dict[str, Any]:
    margin = base + math.fsum(values)
    pairs = list(zip(names, values, strict=True))
    answer: dict[str, Any] = {"margin": _finite(margin), "expected_value": _finite(base)}
    if top is None:
        answer["contributions"] = {name: _finite(v) for name, v in pairs}
        return answer
    kept = sorted(pairs, key=lambda p: -abs(p[1]))[:top]
    answer["contributions"] = {name: _finite(v) for name, v in kept}
    answer["rest"] = _finite(math.fsum(values) - math.fsum(v for _, v in kept))
    return answer


def explanation_answer(
    explanation: Explanation,
    features: tuple[str, ...],
    classes: Any,
    options: ExplainOptions,
) -> dict[str, Any]:
    """``{"explanation": {...what the numbers are...}, "explanations": [one per row]}``."""
    names = list(explanation.fields or features)
    n_outputs = len(explanation.base_values[0]) if explanation.base_values else 1
    if any(len(values) != len(names) for row in explanation.contributions for values in row):
        raise ValueError(f"the backend explained another number of fields than the {len(names)} it names")
    outputs = explanation.outputs
    known = list(classes) if classes is not None else None
    if outputs is None and n_outputs > 1:
        outputs = known if known is not None and len(known) == n_outputs else list(range(n_outputs))
    elif outputs is None and known is not None and len(known) == 2:
        outputs = known[-1:]  # a binary classifier's one output explains its positive class
    top = options.top if options.top is None else min(options.top, len(names))
    rows = []
    for base, contributions in zip(explanation.base_values, explanation.contributions, strict=True):
        each = [_output(b, c, names, top) for b, c in zip(base, contributions, strict=True)]
        if n_outputs == 1:
            rows.append(each[0])
        else:
            rows.append({key: [e[key] for e in each] for key in each[0]})
    header: dict[str, Any] = {
        "method": METHOD,
        "space": "margin",
        "link": explanation.link,
        "fields": names,
        "additivity": "expected_value + sum(contributions) (+ rest) == margin, per output",
    }
    if outputs is not None:
        header["outputs"] = list(outputs)
    if top is not None:
        header["top"] = top
    if explanation.note:
        header["note"] = explanation.note
    return {"explanation": header, "explanations": rows}
