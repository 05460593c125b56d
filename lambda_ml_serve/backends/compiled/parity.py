"""Build time: the parity gate, the compiled library against the source library's own predictions.

The rows: the model's example rows, rows that put every feature on each split threshold and on the
float32 values beside it, and ``PARITY_ROWS`` rows drawn within the schema's bounds (uniform, on
thresholds, and missing where the schema allows it). A categorical feature takes every code the
model knows and the unknown ones (``UNKNOWN_CODES`` and codes past the model's list) instead.
A classifier is compared on its probabilities and on its labels.
"""

from __future__ import annotations

import math
import typing
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.errors import CompileError
from lambda_ml_serve.spec import Batch

if TYPE_CHECKING:
    from lambda_ml_serve.backends.compiled.ensemble import Ensemble
    from lambda_ml_serve.backends.compiled.runtime import CompiledPredictor
    from lambda_ml_serve.spec import ModelSpec

#: Largest absolute difference from the source library's prediction that the parity gate accepts.
PARITY_TOLERANCE = 1e-4
#: Generated rows the parity gate predicts, besides the model's example and threshold rows.
PARITY_ROWS = 10_000
#: Codes no model knows, besides those just past its list: missing (how XGBoost and LightGBM receive an
#: unknown category), -1 (how an encoder that ignores unknowns codes one), a large code, and
#: fractions and negatives that each library truncates its own way.
UNKNOWN_CODES = (math.nan, -1.0, 1e6, -0.5, -0.99, 1.5, -2.0)


class ParityError(CompileError):
    """The compiled library's predictions differ from the source library's by more than the tolerance."""


@dataclass(frozen=True)
class _Column:
    """Where a feature's generated values come from."""

    lo: float
    hi: float
    #: Integer-valued (an int or bool field): only whole numbers are generated.
    integral: bool
    #: The schema allows null (a missing value, NaN in the batch) and the source library predicts it.
    nullable: bool
    #: Split thresholds inside [lo, hi], float32, sorted.
    thresholds: Any
    #: A categorical feature: how many categories the model knows (codes 0..n-1); None otherwise.
    codes: int | None = None


def reference_predictions(ensemble: Ensemble, matrix: Any) -> Any:
    """The value the compiled library must reproduce: the source library's own prediction, as served."""
    return ensemble.reference(matrix)


def check_parity(predictor: CompiledPredictor, ensemble: Ensemble, spec: ModelSpec | None) -> float:
    """Predict the example and generated rows with both; raise ParityError past the tolerance.

    A classifier is also checked label for label, except on rows whose two likeliest classes are
    within the tolerance of a tie. Returns the largest absolute difference seen. A library that reads
    float64 rows is checked on them too, at the points where the source library's decisions change.
    """
    matrix, n_examples = parity_rows(ensemble, spec)
    worst = _compare(predictor, ensemble, spec, matrix, n_examples)
    if ensemble.boundaries is not None:
        wide = boundary_rows(ensemble, matrix, n_examples)
        worst = max(worst, _compare(predictor, ensemble, spec, wide, n_examples, " (float64, at its split points)"))
    return worst


def boundary_rows(ensemble: Ensemble, matrix: Any, n_examples: int) -> Any:
    """The parity rows in float64, every other generated row's numbers moved onto a point where the
    source library's decision changes or onto the double just below it (values float32 cannot hold)."""
    import numpy as np

    rng = np.random.default_rng(0)
    wide = np.array(matrix, dtype=np.float64)
    moved = np.zeros(len(wide), dtype=bool)
    moved[n_examples::2] = True
    for j, points in enumerate(ensemble.boundaries or []):
        finite = points[np.isfinite(points)]
        if not len(finite):
            continue
        chosen = rng.choice(finite, len(wide))
        values = np.where(rng.random(len(wide)) < 0.5, chosen, np.nextafter(chosen, -np.inf))
        wide[:, j] = np.where(moved & ~np.isnan(wide[:, j]), values, wide[:, j])
    return wide


def _compare(
    predictor: CompiledPredictor,
    ensemble: Ensemble,
    spec: ModelSpec | None,
    matrix: Any,
    n_examples: int,
    rows: str = "",
) -> float:
    """Predict ``matrix`` with both (in its own precision); raise ParityError past the tolerance."""
    import numpy as np

    library = next(iter(ensemble.library))
    num_feature = ensemble.num_feature
    batch = Batch(array(matrix.dtype.char, matrix.tobytes()), len(matrix), num_feature)
    got = np.asarray(predictor.raw(batch), dtype=np.float64).reshape(len(matrix), -1)
    want = np.asarray(reference_predictions(ensemble, matrix), dtype=np.float64).reshape(len(matrix), -1)
    if got.shape != want.shape:
        raise ParityError(
            f"the compiled model answers {got.shape[1]} values per row, {library} {want.shape[1]}: "
            "the model was not understood"
        )
    diff = np.abs(got - want)
    diff[np.isnan(got) & np.isnan(want)] = 0.0  # both missing agrees; one NaN does not
    diff[np.isnan(diff)] = np.inf
    per_row = diff.max(axis=1)
    worst = int(np.argmax(per_row))
    if per_row[worst] > PARITY_TOLERANCE:
        raise ParityError(
            f"the compiled model differs from {library} by up to {per_row[worst]:.3g} (tolerance "
            f"{PARITY_TOLERANCE:g}) on {len(matrix)} rows; worst at {_where(worst, n_examples)}: compiled "
            f"{_values(got[worst])}, {library} {_values(want[worst])}, "
            f"input{rows} {_row(matrix[worst], ensemble, spec)}"
        )
    if ensemble.label_reference is not None:
        probabilities = np.column_stack([1.0 - got[:, 0], got[:, 0]]) if got.shape[1] == 1 else got
        labels = np.argmax(probabilities, axis=1)  # the first class wins a tie, as numpy's argmax
        served = np.asarray(ensemble.label_reference(matrix))
        top_two = np.sort(probabilities, axis=1)[:, -2:]
        clear = top_two[:, 1] - top_two[:, 0] > PARITY_TOLERANCE
        wrong = np.flatnonzero((labels != served) & clear)
        if len(wrong):
            first = int(wrong[0])
            raise ParityError(
                f"the compiled model answers another class than {library} on {len(wrong)} of {len(matrix)} rows; "
                f"first at {_where(first, n_examples)}: input{rows} {_row(matrix[first], ensemble, spec)}"
            )
    return float(per_row.max())


def _values(row: Any) -> Any:
    return float(row[0]) if len(row) == 1 else [float(v) for v in row]


def _where(row: int, n_examples: int) -> str:
    return f"example row {row}" if row < n_examples else f"generated row {row - n_examples}"


def _row(values: Any, ensemble: Ensemble, spec: ModelSpec | None) -> dict[str, float | None]:
    import numpy as np

    names = (spec.feature_names if spec is not None else ensemble.feature_names) or [
        f"f{j}" for j in range(ensemble.num_feature)
    ]
    return {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, values, strict=True)}


def parity_rows(ensemble: Ensemble, spec: ModelSpec | None) -> tuple[Any, int]:
    """The float32 matrix the parity gate predicts, and how many of its first rows are examples."""
    import numpy as np

    examples = _example_matrix(spec, ensemble.num_feature)
    columns = _columns(ensemble, spec)
    matrix = np.vstack([examples, _threshold_rows(columns), _random_rows(columns, PARITY_ROWS)])
    return np.ascontiguousarray(matrix, dtype=np.float32), len(examples)


def _example_matrix(spec: ModelSpec | None, num_feature: int) -> Any:
    """The spec's example rows, validated and packed exactly as a request's rows are."""
    import numpy as np

    if spec is None or not spec.example:
        return np.empty((0, num_feature), dtype=np.float32)
    from lambda_ml_serve.runtime.errors import ApiError
    from lambda_ml_serve.runtime.validation import RowValidator

    try:
        batch = RowValidator(spec, len(spec.example)).to_batch(list(spec.example))
    except ApiError as exc:
        raise CompileError(f"model {spec.name!r}: its example rows are invalid: {exc.message}") from None
    return np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)


def _columns(ensemble: Ensemble, spec: ModelSpec | None) -> list[_Column]:
    """Value ranges per feature: the thresholds' span, padded by a tenth, within the schema's bounds."""
    import numpy as np

    fields = list(spec.schema.model_fields.values()) if spec is not None else [None] * ensemble.num_feature
    columns = []
    for j, (field, raw) in enumerate(zip(fields, ensemble.raw_thresholds, strict=True)):
        if j in ensemble.categories:
            n = ensemble.categories[j]
            columns.append(_Column(-1.0, float(n), True, ensemble.accepts_missing, np.empty(0, np.float32), n))
            continue
        thresholds = np.unique(raw.astype(np.float32))
        thresholds = thresholds[np.isfinite(thresholds)]  # "everything goes left" splits, past float32
        lo, hi = _schema_bounds(field)
        integral, nullable = _field_kind(field)
        # Rows the source library refuses (scikit-learn trained without missing values) prove nothing.
        nullable = nullable and ensemble.accepts_missing
        if len(thresholds):
            span = float(thresholds[-1] - thresholds[0])
            pad = span / 10 or abs(float(thresholds[0])) / 10 or 1.0  # a single threshold: around it
            t_lo, t_hi = float(thresholds[0]) - pad, float(thresholds[-1]) + pad
        else:  # an unused feature: any value will do
            t_lo, t_hi = 0.0, 1.0
        lo, hi = (max(lo, t_lo), min(hi, t_hi)) if max(lo, t_lo) <= min(hi, t_hi) else _finite(lo, hi)
        inside = thresholds[(thresholds >= lo) & (thresholds <= hi)]
        if integral:
            inside = inside[inside == np.round(inside)]
        columns.append(_Column(lo, hi, integral, nullable, inside))
    return columns


def _schema_bounds(field: Any) -> tuple[float, float]:
    """A pydantic field's numeric bounds (ge/gt/le/lt constraints); booleans are 0..1."""
    if field is None:
        return -math.inf, math.inf
    lo, hi = (0.0, 1.0) if _base_type(field.annotation) is bool else (-math.inf, math.inf)
    for constraint in field.metadata:
        for name in ("ge", "gt"):
            if getattr(constraint, name, None) is not None:
                lo = max(lo, float(getattr(constraint, name)))
        for name in ("le", "lt"):
            if getattr(constraint, name, None) is not None:
                hi = min(hi, float(getattr(constraint, name)))
    return lo, hi


def _base_type(annotation: Any) -> Any:
    """``float`` for ``float | None``; the annotation itself otherwise."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def _field_kind(field: Any) -> tuple[bool, bool]:
    """(integral, nullable) for a schema field; a feature without a schema may be missing."""
    if field is None:
        return False, True
    nullable = type(None) in typing.get_args(field.annotation)
    return _base_type(field.annotation) in (int, bool), nullable


def _finite(lo: float, hi: float) -> tuple[float, float]:
    """A finite range within [lo, hi] to sample from when the thresholds lie outside the schema's."""
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    if math.isfinite(lo):
        return lo, lo + 1.0
    if math.isfinite(hi):
        return hi - 1.0, hi
    return 0.0, 1.0


def _edges(column: _Column) -> Any:
    """Every threshold (rounded to float32) and, for real-valued features, the float32 on each side.

    Between two of them lies the split's boundary, whichever way the source library compares (``<``
    or ``<=``, float or double), so a threshold rounded differently anywhere on the way to C sends
    one of them the wrong way.
    """
    import numpy as np

    if column.codes is not None:
        return _category_codes(column)
    t = column.thresholds
    if column.integral or not len(t):
        return t
    below, above = np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf))
    return np.concatenate([t, below[below >= column.lo], above[above <= column.hi]])


def _category_codes(column: _Column) -> Any:
    """Every code the model knows, the unknown ones, and those past the list or a bitset's 32-bit word."""
    import numpy as np

    n = column.codes or 0
    unknown = [c for c in UNKNOWN_CODES if column.nullable or not math.isnan(c)]
    past = [n, n + 1, 31, 32, 33, 63, 64, 65]
    return np.array([*range(n), *unknown, *past], dtype=np.float32)


def _threshold_rows(columns: Sequence[_Column]) -> Any:
    """Rows that put every feature on each of its edges at least once (cycling the shorter lists)."""
    import numpy as np

    edges = [_edges(c) for c in columns]
    n = max((len(e) for e in edges), default=0)
    rng = np.random.default_rng(1)
    matrix = _random_rows(columns, n, rng=rng, edge_share=0.0, missing_share=0.0)
    for j, e in enumerate(edges):
        if len(e):
            matrix[:, j] = e[np.arange(n) % len(e)]
    return matrix


def _random_rows(
    columns: Sequence[_Column], n: int, *, rng: Any = None, edge_share: float = 0.3, missing_share: float = 0.1
) -> Any:
    """``n`` rows, each value uniform in its column's range, or an edge, or missing where allowed."""
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng(0)
    matrix = np.empty((n, len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        if column.codes is not None:  # mostly known categories, a fifth unknown ones
            known = rng.integers(0, max(column.codes, 1), n).astype(np.float32)
            matrix[:, j] = np.where(rng.random(n) < 0.2, rng.choice(_category_codes(column), n), known)
            continue
        values = rng.uniform(column.lo, column.hi, n)
        if column.integral:
            values = np.clip(np.round(values), np.ceil(column.lo), np.floor(column.hi))
        draw = rng.random(n)
        edges = _edges(column)
        if len(edges):
            on_edge = draw < edge_share
            values[on_edge] = rng.choice(edges, int(on_edge.sum()))
        if column.nullable:
            values[draw >= 1.0 - missing_share] = np.nan
        matrix[:, j] = values
    return matrix
