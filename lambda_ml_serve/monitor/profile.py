"""A reference profile of training data: what ``monitor`` compares captured traffic with.

Per feature: numeric features get their percentiles (the reference distribution, for KS), ten
quantile bins with each bin's share (for PSI), the mean and the missing rate; categorical features
(strings, booleans) get each category's share and the missing rate. The predictions get the same
treatment. The profile is JSON and lives in the model card under ``"profile"``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

PROFILE_KEY = "profile"
PROFILE_FORMAT = 1
NUMERIC, CATEGORICAL = "numeric", "categorical"
#: Percentiles kept for the reference distribution (0, 1, ..., 100).
PERCENTILES = tuple(range(101))
#: Quantile bins for PSI.
BINS = 10
#: Categories kept at most per feature; the rest are counted together as ``"__other__"``.
MAX_CATEGORIES = 100
OTHER = "__other__"


def feature_kinds(schema: type) -> dict[str, str]:
    """Each input field's kind, from the pydantic schema: numbers, integers and booleans (as 0/1) are
    numeric; strings and enums are categorical."""
    json_schema = schema.model_json_schema(by_alias=True)
    kinds = {}
    for name, prop in json_schema.get("properties", {}).items():
        types = _types(prop, json_schema.get("$defs", {}))
        kinds[name] = NUMERIC if types and types <= {"number", "integer", "boolean", "null"} else CATEGORICAL
    return kinds


def _types(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> set[str]:
    if "$ref" in prop:
        return _types(defs.get(prop["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "enum" in prop and "type" not in prop:
        return {"string"}
    found: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        for option in prop.get(key, []):
            found |= _types(option, defs)
    kind = prop.get("type")
    if isinstance(kind, str):
        found.add(kind)
    elif isinstance(kind, list):
        found.update(kind)
    return found


def is_missing(value: Any) -> bool:
    """None, NaN, or absent (the caller passes None for absent)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def numeric_values(values: Iterable[Any]) -> tuple[np.ndarray, int]:
    """(the present values as floats, how many were missing); booleans count as 0/1."""
    present, missing = [], 0
    for value in values:
        if is_missing(value):
            missing += 1
        elif isinstance(value, (int, float)):
            present.append(float(value))
        else:
            try:
                present.append(float(value))
            except (TypeError, ValueError):
                missing += 1  # not a number where a number is expected: counted as missing
    return np.asarray(present, dtype=float), missing


def category_of(value: Any) -> str:
    """A category's key: strings as they are, others (booleans, numbers) as JSON writes them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def numeric_profile(values: Iterable[Any]) -> dict[str, Any]:
    present, missing = numeric_values(values)
    total = len(present) + missing
    profile: dict[str, Any] = {"kind": NUMERIC, "count": total, "missing_rate": missing / total if total else 0.0}
    if len(present) == 0:
        return profile | {"percentiles": [], "edges": [], "shares": [], "mean": None, "std": None}
    percentiles = np.percentile(present, PERCENTILES)
    # Inner edges at the deciles, once each: a feature with few values (0/1) gets fewer bins. A
    # value equal to an edge falls in the bin above it: the bins are [edge, next edge).
    edges = np.unique(np.percentile(present, np.linspace(0, 100, BINS + 1)[1:-1]))
    edges = edges[edges > present.min()]  # a bin below the minimum would hold nothing
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return profile | {
        "percentiles": [float(v) for v in percentiles],
        "edges": [float(v) for v in edges],
        "shares": [float(c) / len(present) for c in counts],
        "mean": float(present.mean()),
        "std": float(present.std()),
    }


def count_categories(values: Iterable[Any]) -> tuple[Counter[str], int]:
    """(how often each category occurs, how many values are missing)."""
    counts: Counter[str] = Counter()
    missing = 0
    for value in values:
        if is_missing(value):
            missing += 1
        else:
            counts[category_of(value)] += 1
    return counts, missing


def categorical_profile(values: Iterable[Any]) -> dict[str, Any]:
    counts, missing = count_categories(values)
    total = sum(counts.values()) + missing
    present = sum(counts.values())
    kept = dict(counts.most_common(MAX_CATEGORIES))
    if len(counts) > MAX_CATEGORIES:
        kept[OTHER] = present - sum(kept.values())
    return {
        "kind": CATEGORICAL,
        "count": total,
        "missing_rate": missing / total if total else 0.0,
        "shares": {k: v / present for k, v in sorted(kept.items())} if present else {},
    }


def prediction_kind(predictions: Sequence[Any]) -> str:
    """Numbers are numeric predictions; labels (strings, booleans) categorical."""
    sample = [p for p in predictions[:1000] if not is_missing(p)]
    numeric = sample and all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in sample)
    return NUMERIC if numeric else CATEGORICAL


def prediction_values(predictions: Sequence[Any]) -> list[Any]:
    """One value per prediction: a classifier's ``{"label": ...}`` answer counts by its label."""
    return [p.get("label") if isinstance(p, Mapping) else p for p in predictions]


def profile_of(
    columns: Mapping[str, Sequence[Any]], kinds: Mapping[str, str], predictions: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The profile of training data given as columns (feature name -> values, None/NaN where missing)."""
    features = {}
    for name, kind in kinds.items():
        values = columns.get(name, [])
        features[name] = numeric_profile(values) if kind == NUMERIC else categorical_profile(values)
    profile: dict[str, Any] = {"format": PROFILE_FORMAT, "rows": max((len(v) for v in columns.values()), default=0)}
    profile["features"] = features
    if predictions is not None:
        values = prediction_values(list(predictions))
        kind = prediction_kind(values)
        profile["predictions"] = numeric_profile(values) if kind == NUMERIC else categorical_profile(values)
    return profile


def columns_of(rows: Iterable[Mapping[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """Rows (feature name -> value) as columns; an absent feature is a missing value."""
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for row in rows:
        for name in names:
            columns[name].append(row.get(name))
    return columns
