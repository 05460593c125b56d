"""What a CSV file adds to a model's description: names, example rows, observed ranges and metrics.

Observed ranges are documented, not enforced: they go into each field's description and the README,
so a request outside what the training data held is still answered (trees extrapolate flat, and the
data may be a sample). A user who wants them enforced adds ``ge=``/``le=`` to the field in schema.py;
one who wants them wider has nothing to widen.
"""

from __future__ import annotations

import csv
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_ml_serve.fields import UNKNOWN_CODES
from lambda_ml_serve.from_model.describe import Description, Feature, lightgbm_name
from lambda_ml_serve.modelfiles import ModelFileError
from lambda_ml_serve.spec import Batch, input_typecode

#: Rows read from --data at most: enough for examples, ranges and metrics, bounded in time and memory.
MAX_ROWS = 1_000_000
#: Rows predicted per call when scoring.
CHUNK = 10_000


@dataclass
class Column:
    """How one model feature is read from the data: a column, or one value of a column (one-hot)."""

    column: str
    #: For a one-hot feature such as ``color_red``: the value of ``column`` that makes it 1.
    equals: str | None = None

    def describe(self) -> str:
        return (
            f"column {self.column!r}" if self.equals is None else f"1 where column {self.column!r} is {self.equals!r}"
        )


@dataclass
class DataSummary:
    path: Path
    rows: int
    columns: dict[str, Column]
    #: Feature values per feature name (NaN where missing), in data order.
    values: dict[str, list[float]]
    target: str | None = None
    targets: list[str] = field(default_factory=list)

    def observed(self, name: str) -> tuple[float, float] | None:
        present = [v for v in self.values[name] if not math.isnan(v)]
        return (min(present), max(present)) if present else None

    def example_rows(self) -> list[int]:
        """Two complete rows (no missing value): the first one, and the one half-way through."""
        complete = [i for i in range(self.rows) if not any(math.isnan(v[i]) for v in self.values.values())]
        if not complete:
            complete = list(range(self.rows))
        picked = [complete[0], complete[len(complete) // 2]]
        return list(dict.fromkeys(picked))


def read_data(path: Path, description: Description, target: str | None) -> DataSummary:
    """Read ``path`` for ``description``'s features (renaming f0..fN after the header when the model has none)."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ModelFileError(
            f"--data {path}: cannot read it ({exc.strerror}); give a CSV file with a header row"
        ) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
            rows = [row for _, row in zip(range(MAX_ROWS), reader, strict=False) if row]
        except (csv.Error, UnicodeDecodeError, StopIteration) as exc:
            raise ModelFileError(
                f"--data {path} is not a UTF-8 CSV file with a header row ({type(exc).__name__})"
            ) from None
    if not rows:
        raise ModelFileError(
            f"--data {path} has a header but no rows; give the data the model was trained or tested on"
        )
    index = {name: i for i, name in enumerate(header)}
    if target is not None and target not in index:
        raise ModelFileError(f"--target {target!r} is not a column of {path}; its columns are {header}")
    if description.names_from == "generated":
        _name_from_header(description, [c for c in header if c != target], path)
    columns = _columns(description, header, rows, index, path)
    if description.backend == "onnx":
        _onnx_categories(description, columns, rows, index)
    values = {}
    by_name = {f.name: f for f in description.features}
    for name, source in columns.items():
        values[name] = _read_column(rows, index, source, by_name[name], path)
    summary = DataSummary(path, len(rows), columns, values)
    if target is not None:
        summary.target = target
        summary.targets = [row[index[target]] for row in rows]
    for feature in description.features:
        feature.nullable = feature.nullable or any(math.isnan(v) for v in values[feature.name])
    return summary


def _onnx_categories(
    description: Description, columns: dict[str, Column], rows: list[list[str]], index: dict[str, int]
) -> None:
    """A string input no encoder in the graph lists: its categories are the column's values, sorted."""
    for feature in description.features:
        source = columns[feature.name]
        if feature.kind == "categorical" and not feature.category_strings and source.equals is None:
            j = index[source.column]
            found = sorted({row[j] for row in rows if j < len(row) and row[j] != ""})
            # Only what the data holds is known to be answered: another string gets a 422.
            feature.category_strings, feature.unknown = found, "error"


def _name_from_header(description: Description, columns: list[str], path: Path) -> None:
    if len(columns) != len(description.features):
        raise ModelFileError(
            f"the model stores no feature names and {path} has {len(columns)} feature columns for its "
            f"{len(description.features)} features; give a CSV file with exactly the model's columns (and --target)"
        )
    for feature, name in zip(description.features, columns, strict=True):
        feature.name = name
    description.names_from = "data"
    description.names_detail = f"the header of {path.name}, in column order (the model stores none)"
    description.warnings = [w for w in description.warnings if "stores no feature names" not in w]
    description.warnings.append(
        f"{description.path.name} stores no feature names: they are taken from the header of {path.name} in "
        "column order; check that the model was trained on the columns in this order"
    )


def _columns(
    description: Description, header: list[str], rows: list[list[str]], index: dict[str, int], path: Path
) -> dict[str, Column]:
    """Each feature's column: its own, else a one-hot value of another (``color_red`` from ``color``)."""
    found: dict[str, Column] = {}
    missing = []
    for feature in description.features:
        name = feature.name
        if name in index:
            found[name] = Column(name)
            continue
        renamed = [c for c in header if lightgbm_name(c) == name] if description.backend == "lightgbm" else []
        if renamed:
            # The DataFrame's own name, which LightGBM stored with underscores: requests may use it.
            found[name], feature.aliases = Column(renamed[0]), [renamed[0]]
            continue
        for column in header:
            prefix = column + "_"
            if name.startswith(prefix):
                value = name[len(prefix) :]
                if any(row[index[column]] == value for row in rows[:10_000]):
                    found[name] = Column(column, value)
                    break
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ModelFileError(
            f"--data {path} has no column for the model's feature(s) {shown}; give data with one column per "
            "feature, named as the model names them"
        )
    return found


def _read_column(
    rows: list[list[str]], index: dict[str, int], source: Column, feature: Feature, path: Path
) -> list[float]:
    j = index[source.column]
    name = feature.name
    if source.equals is not None:
        return [1.0 if row[j] == source.equals else 0.0 for row in rows]
    if feature.category_strings:
        return _read_categories(rows, j, source, feature, path)
    values = []
    for number, row in enumerate(rows, start=2):
        cell = row[j].strip() if j < len(row) else ""
        if cell == "" or cell.lower() in ("nan", "na", "null"):
            values.append(math.nan)
            continue
        if cell.lower() in ("true", "false"):
            values.append(1.0 if cell.lower() == "true" else 0.0)
            continue
        try:
            values.append(float(cell))
        except ValueError:
            raise ModelFileError(
                f"--data {path} line {number}: column {source.column!r} holds a non-number; the model takes numbers "
                f"for feature {name!r} (encode categories as integer codes)"
            ) from None
    return values


def _read_categories(rows: list[list[str]], j: int, source: Column, feature: Feature, path: Path) -> list[float]:
    """A category column's codes (index in the model's categories); empty cells are missing."""
    codes = {value: float(i) for i, value in enumerate(feature.category_strings)}
    unknown = UNKNOWN_CODES[feature.unknown]
    values = []
    for number, row in enumerate(rows, start=2):
        cell = row[j] if j < len(row) else ""
        if cell == "":
            values.append(math.nan)
        elif cell in codes:
            values.append(codes[cell])
        elif unknown is None:
            raise ModelFileError(
                f"--data {path} line {number}: column {source.column!r} holds a category the model does not know "
                f"(it knows {', '.join(feature.category_strings[:10])}); give data the model can answer"
            )
        else:
            values.append(unknown)
    return values


def batch_of(summary: DataSummary, names: list[str], rows: range | list[int], typecode: str = "f") -> Batch:
    """The given data rows as a batch in the model's feature order, of array type ``typecode`` ("f" or "d")."""
    values = array(typecode)
    for i in rows:
        values.extend(summary.values[name][i] for name in names)
    return Batch(values, len(rows), len(names))


def predict_all(predictor: Any, summary: DataSummary, names: list[str]) -> list[Any]:
    """The predictor's answers to every data row, packed in the precision it reads requests in."""
    typecode = input_typecode(predictor)
    out: list[Any] = []
    for start in range(0, summary.rows, CHUNK):
        out += predictor.predict(batch_of(summary, names, range(start, min(start + CHUNK, summary.rows)), typecode))
    return out


def metrics(description: Description, predictions: list[Any], targets: list[str]) -> dict[str, float]:
    """Scores of the predictions against the target column: RMSE/MAE/R² or accuracy (and log loss)."""
    if description.task == "regression":
        try:
            truth = [float(t) for t in targets]
        except ValueError:
            raise ModelFileError(
                "--target holds non-numbers, but the model is a regressor; pick the numeric target column"
            ) from None
        errors = [p - t for p, t in zip(predictions, truth, strict=True)]
        mean = sum(truth) / len(truth)
        total = sum((t - mean) ** 2 for t in truth)
        squared = sum(e * e for e in errors)
        return {
            "rmse": math.sqrt(squared / len(errors)),
            "mae": sum(abs(e) for e in errors) / len(errors),
            "r2": 1 - squared / total if total else 0.0,
        }
    labels = [_label(description, p) for p in predictions]
    if description.classes and isinstance(predictions[0], float) and len(description.classes) == 2:
        predictions = [[1.0 - p, p] for p in predictions]
    scores = {"accuracy": sum(_same_label(a, t) for a, t in zip(labels, targets, strict=True)) / len(labels)}
    classes = description.classes
    if classes and isinstance(predictions[0], list):
        position = {str(c): i for i, c in enumerate(classes)} | {_number(c): i for i, c in enumerate(classes)}
        picked = [position.get(t, position.get(_number(t))) for t in targets]
        if all(i is not None for i in picked):
            losses = [-math.log(min(max(p[i], 1e-15), 1.0)) for p, i in zip(predictions, picked, strict=True)]
            scores["log_loss"] = sum(losses) / len(losses)
    return scores


def target_classes(summary: DataSummary) -> list[Any]:
    """The labels in a target column, sorted as a label encoder sorts them (numbers as numbers)."""
    values = set(summary.targets)
    for kind in (int, float):
        try:
            return sorted({kind(v) for v in values})
        except ValueError:
            continue
    return sorted(values)


def _label(description: Description, prediction: Any) -> Any:
    if isinstance(prediction, list):
        best = max(range(len(prediction)), key=prediction.__getitem__)
        return description.classes[best] if description.classes else best
    if isinstance(prediction, float) and description.classes and len(description.classes) == 2:
        return description.classes[1] if prediction > 0.5 else description.classes[0]
    return prediction


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _same_label(predicted: Any, target: str) -> bool:
    return str(predicted) == target or _number(predicted) == _number(target)
