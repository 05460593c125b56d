"""Request bodies in the formats clients already speak -> one list of rows for validation.

Every format ends as the same list of rows (objects keyed by feature, or lists in feature order that
become such objects), so the schema's validation and its 422 details (row and field) are the same
whatever the client sent. Messages name positions and counts; a key or column the client sent
appears only as a detail's ``field`` (bounded by :class:`~lambda_ml_serve.runtime.errors.ApiError`),
never a submitted value.
"""

from __future__ import annotations

from typing import Any

from lambda_ml_serve.runtime.errors import ApiError, detail, field_name

#: The formats a POST to / or /predict may use, as the ambiguity message names them (error messages
#: are cut at 300 characters, so the names stay short).
FORMATS = (
    "[rows]",
    '{"instances": [rows or lists]}',
    "one row",
    '{"dataframe_split"}',
    '{"dataframe_records"}',
    '{"inputs"}',
    '{"column": {"0": value}}',
    '{"column": [values]}',
)
SHAPE_HINT = "send one of: " + ", ".join(FORMATS)
#: Top-level keys that name a format; each must come alone.
WRAPPERS = ("instances", "dataframe_split", "dataframe_records", "inputs")
MAX_ROW_DETAILS = 50
#: JSON nested deeper than this is refused (400); valid rows are 3 levels deep at most.
MAX_DEPTH = 64
_CONTAINERS = frozenset({list, dict})


def _keys(keys: list[Any], message: str) -> list[dict[str, Any]]:
    """Details naming client keys as fields (bounded there), never in a message."""
    return [detail(None, field_name((key,)), message) for key in keys[:MAX_ROW_DETAILS]]


def rows_of(payload: Any, features: tuple[str, ...]) -> list[Any]:
    """Normalise any accepted body to a non-empty list of rows (dicts, or lists in feature order)."""
    if isinstance(payload, list):
        rows = payload
    elif isinstance(payload, dict):
        rows = _rows_of_object(payload, features)
    else:
        raise ApiError("validation_error", f"the body is a JSON {json_type(payload)}; {SHAPE_HINT}")
    if not rows:
        raise ApiError("validation_error", f"no rows to predict; {SHAPE_HINT}")
    return by_feature(rows, features)


def _rows_of_object(payload: dict[str, Any], features: tuple[str, ...]) -> list[Any]:
    wrappers = [k for k in WRAPPERS if k in payload]
    if wrappers:
        extra = [k for k in payload if k != wrappers[0]]
        if extra:
            raise ApiError(
                "validation_error",
                f"{len(extra)} unexpected top-level key(s) beside {wrappers[0]!r}; send one format alone "
                f"({SHAPE_HINT})",
                _keys(extra, "unexpected top-level key"),
                total=len(extra),
            )
        key = wrappers[0]
        value = payload[key]
        if key == "dataframe_split":
            return _split(value)
        if key == "inputs" and isinstance(value, dict):
            return _columns(value, "'inputs'")
        if not isinstance(value, list):
            raise ApiError("validation_error", f"{key!r} must be a list; {SHAPE_HINT}")
        return value
    values = payload.values()
    if not any(type(v) in _CONTAINERS for v in values):
        return [payload]
    if all(type(v) is dict for v in values):
        return _column_orient(payload)
    if all(type(v) is list for v in values):
        return _columns(payload, "the body")
    raise ApiError(
        "validation_error",
        f"ambiguous body: some values are lists or objects, some single values; {SHAPE_HINT}",
    )


def _split(value: Any) -> list[Any]:
    """MLflow's ``dataframe_split`` (pandas' split orient): ``columns``, ``data`` and optional ``index``."""
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise ApiError("validation_error", "'dataframe_split' must be an object with a 'data' list (and 'columns')")
    unknown = [k for k in value if k not in ("columns", "data", "index")]
    if unknown:
        raise ApiError(
            "validation_error",
            f"'dataframe_split' has {len(unknown)} unknown key(s); use columns, data, index",
            _keys(unknown, "unknown key of 'dataframe_split'"),
            total=len(unknown),
        )
    data, columns = value["data"], value.get("columns")
    if columns is None:
        return data  # no columns: each row lists values in feature order
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise ApiError("validation_error", "'dataframe_split.columns' must be a list of column names")
    if len(set(columns)) != len(columns):
        raise ApiError("validation_error", "'dataframe_split.columns' names a column twice")
    bad = [i for i, row in enumerate(data) if not isinstance(row, list) or len(row) != len(columns)]
    if bad:
        raise ApiError(
            "validation_error",
            f"{len(bad)} row(s) of 'dataframe_split.data' are not lists of {len(columns)} values (one per column)",
            [detail(i, None, f"expected a list of {len(columns)} values") for i in bad[:MAX_ROW_DETAILS]],
        )
    return [dict(zip(columns, row, strict=True)) for row in data]


def _columns(value: dict[str, Any], where: str) -> list[Any]:
    """A dict of equally long lists, one per column (``{"col": [v1, v2]}``)."""
    lengths = {k: len(v) if isinstance(v, list) else None for k, v in value.items()}
    if None in lengths.values():
        columns = [k for k, n in lengths.items() if n is None]
        raise ApiError(
            "validation_error",
            f"{len(columns)} column(s) of {where} are not lists of values",
            _keys(columns, "must be a list of values"),
            total=len(columns),
        )
    if len(set(lengths.values())) > 1:
        raise ApiError(
            "validation_error",
            f"the columns of {where} have different lengths",
            [detail(None, field_name((k,)), f"{n} values") for k, n in list(lengths.items())[:MAX_ROW_DETAILS]],
        )
    n = next(iter(lengths.values()), 0)
    return [{k: v[i] for k, v in value.items()} for i in range(n)]


def _column_orient(value: dict[str, dict[str, Any]]) -> list[Any]:
    """pandas' default ``DataFrame.to_json()``: ``{"col": {"<index>": value}}``, rows in index order."""
    index = list(next(iter(value.values())))
    for column, cells in value.items():
        if cells.keys() != set(index):
            raise ApiError(
                "validation_error",
                "a column has other index labels than the first column; every column of pandas' column "
                "orient must have the same index",
                _keys([column], "other index labels than the first column"),
            )
    return [{column: cells[i] for column, cells in value.items()} for i in index]


def by_feature(rows: list[Any], features: tuple[str, ...]) -> list[Any]:
    """Rows given as lists become objects keyed by feature, in the model's feature order."""
    # json.loads makes exact lists and dicts, so an exact type test is enough, and the fastest one.
    if not any(type(row) is list for row in rows):
        return rows
    bad = [i for i, row in enumerate(rows) if isinstance(row, list) and len(row) != len(features)]
    if bad:
        raise ApiError(
            "validation_error",
            f"{len(bad)} row(s) are lists of the wrong length: a row given as a list holds {len(features)} "
            f"values in feature order ({', '.join(features)})",
            [detail(i, None, f"expected {len(features)} values") for i in bad[:MAX_ROW_DETAILS]],
        )
    return [dict(zip(features, row, strict=True)) if isinstance(row, list) else row for row in rows]


def json_type(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def examples(rows: list[dict[str, Any]], features: tuple[str, ...]) -> dict[str, Any]:
    """The example rows written in every request format (for OpenAPI and the docs page)."""
    lists = [[row.get(f) for f in features] for row in rows]
    return {
        "rows": rows,
        "instances": {"instances": rows},
        "instances_lists": {"instances": lists},
        "one_row": rows[0],
        "dataframe_split": {"dataframe_split": {"columns": list(features), "data": lists}},
        "dataframe_records": {"dataframe_records": rows},
        "inputs": {"inputs": {f: [row.get(f) for row in rows] for f in features}},
        "pandas_columns": {f: {str(i): row.get(f) for i, row in enumerate(rows)} for f in features},
        "columns": {f: [row.get(f) for row in rows] for f in features},
    }


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests lists/objects more than ``limit`` levels deep.

    Level by level, without recursion (the value may be nested as deep as the parser allowed).
    """
    level = [value] if value.__class__ is dict or value.__class__ is list else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for item in level
            for child in (item.values() if item.__class__ is dict else item)
            if child.__class__ is dict or child.__class__ is list
        ]
    return bool(level)
