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
#: MLflow's inference parameters, accepted beside a wrapper and ignored.
PARAMS = "params"
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
        # MLflow's clients may send inference parameters beside the data; no model here takes any.
        if PARAMS in payload and not isinstance(payload[PARAMS], dict):
            raise ApiError("validation_error", f"{PARAMS!r} must be an object of parameter names to values")
        extra = [k for k in payload if k != wrappers[0] and k != PARAMS]
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


#: The media types read as CSV (MLflow's scoring server reads ``text/csv``).
CSV_TYPES = frozenset({"text/csv", "application/csv"})
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


def column_types(input_schema: dict[str, Any]) -> dict[str, str]:
    """Each field's JSON type (``number``, ``integer``, ``boolean``, ``string``) from the rows' JSON schema."""
    types: dict[str, str] = {}
    for name, prop in input_schema.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        kinds = [o.get("type") for o in options if isinstance(o, dict) and o.get("type") not in (None, "null")]
        if not kinds and isinstance(prop.get("enum"), list):
            kinds = ["string"]
        types[name] = kinds[0] if len(kinds) == 1 else "string"
    return types


def _typed(cell: str, kind: str | None) -> Any:
    """A CSV cell as the schema's type; a cell that does not parse stays text, for validation to name."""
    try:
        if kind == "number":
            return float(cell)
        if kind == "integer":
            return int(cell)
    except ValueError:
        return cell
    if kind == "boolean":
        folded = cell.strip().lower()
        return True if folded in _TRUE else False if folded in _FALSE else cell
    return cell


def rows_of_csv(text: str, types: dict[str, str]) -> list[Any]:
    """A CSV body with a header row -> rows keyed by column, each cell typed by the schema.

    An empty cell is a missing value (the key is left out), as in batch files. A row with another
    number of cells than the header is a 422 naming the row; a body csv cannot read, a 400.
    """
    import csv
    import io

    try:
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise ApiError("bad_request", "the CSV body has no header row; its first line names the columns")
        columns = [h.strip() for h in header]
        if len(set(columns)) != len(columns):
            raise ApiError("validation_error", "the CSV header names a column twice")
        kinds = [types.get(c) for c in columns]
        rows: list[Any] = []
        bad: list[int] = []
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) != len(columns):
                bad.append(len(rows))
                rows.append(None)
                continue
            rows.append(
                {c: _typed(cell, kind) for c, kind, cell in zip(columns, kinds, cells, strict=True) if cell != ""}
            )
    except csv.Error as exc:
        # csv's messages name the line and the problem, never the cells.
        raise ApiError("bad_request", f"the body is not valid CSV: {exc}") from None
    if bad:
        raise ApiError(
            "validation_error",
            f"{len(bad)} CSV row(s) have another number of cells than the header's {len(columns)} columns",
            [detail(i, None, f"expected {len(columns)} cells") for i in bad[:MAX_ROW_DETAILS]],
            total=len(bad),
        )
    if not rows:
        raise ApiError("validation_error", "the CSV body has a header but no rows to predict")
    return rows
