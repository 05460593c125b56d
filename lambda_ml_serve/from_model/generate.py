"""Write the plugin project for a model file: describe it, add the data's view, render the template.

Everything is checked and computed before the first file is written; the project is rendered into
a hidden folder beside the target and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import math
import re
import shutil
import tempfile
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import lambda_ml_serve
from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.fields import UNKNOWN_CODES
from lambda_ml_serve.from_model.data import DataSummary, metrics, predict_all, read_data, target_classes
from lambda_ml_serve.from_model.describe import Description, Feature, describe, typical_values
from lambda_ml_serve.modelfiles import ModelFileError
from lambda_ml_serve.spec import input_typecode

TEMPLATE = "plugin-from-model"
#: The framework extra each backend's plugin depends on (the serving library and numpy).
EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm", "onnx": "onnx", "sklearn": None}
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED = set(dir(BaseModel)) | {"field"}


def suggested_name(path: Path) -> str:
    """A model name from the file name: ``xgboost_wine_quality__lambda-with-ML-container.json`` ->
    ``xgboost_wine_quality_lambda_with_ml_container``."""
    name = re.sub(r"[^a-z0-9]+", "_", Path(path).stem.lower()).strip("_")
    return name if name[:1].isalpha() else f"model_{name}".rstrip("_")


def field_names(names: list[str]) -> list[str]:
    """A Python identifier per feature name, unique, usable as a pydantic field."""
    out: list[str] = []
    for name in names:
        field = re.sub(r"\W+", "_", name, flags=re.ASCII).strip("_") or "feature"
        if field[0].isdigit():
            field = f"f_{field}"
        if keyword.iskeyword(field) or field in _RESERVED or field.startswith("model_"):
            field += "_"
        candidate, n = field, 2
        while candidate in out:
            candidate, n = f"{field}_{n}", n + 1
        out.append(candidate)
    return out


def _onnx_string_inputs(info: Description, model_file: Path) -> None:
    """An ONNX model's string inputs are served with their categories (``extra["categories"]``), or refused."""
    if info.backend != "onnx":
        return
    from lambda_ml_serve.backends.onnx.runtime import CATEGORIES

    strings = [f for f in info.features if f.kind == "categorical"]
    unknown = [f.name for f in strings if not f.category_strings]
    if unknown:
        raise ModelFileError(
            f"{model_file}: string input {unknown[0]!r} has categories that neither the graph lists (no "
            "OneHotEncoder or LabelEncoder reads it) nor --data gives; pass --data with a column "
            f"{unknown[0]!r} holding every category the model knows"
        )
    if strings:
        info.extra = {**info.extra, CATEGORIES: {f.name: list(f.category_strings) for f in strings}}


def create_from_model(
    model_file: Path,
    *,
    data: Path | None = None,
    target: str | None = None,
    classes: list[str] | None = None,
    model_name: str | None = None,
    description: str | None = None,
    version: str = "0.1.0",
    output_dir: Path = Path("."),
    force: bool = False,
    taken: Collection[str] | None = None,
) -> tuple[Path, list[str]]:
    """Generate a plugin project serving ``model_file``; return its folder and the warnings to show.

    Raises :class:`~lambda_ml_serve.modelfiles.ModelFileError` for a file it cannot read and the
    scaffold's errors for names; in every error case nothing is written.
    """
    from lambda_ml_serve.plugins import get_registry
    from lambda_ml_serve.scaffold import TargetExistsError, check_answers, installed_models, template_dir

    model_file = Path(model_file)
    if target is not None and data is None:
        raise ModelFileError("--target names a column of --data: give --data CSV too")
    mlflow = None
    if model_file.is_dir():
        from lambda_ml_serve.from_model.mlmodel import read_mlmodel

        mlflow = read_mlmodel(model_file)
        model_file = mlflow.artifact
    info = describe(model_file)
    if mlflow is not None:
        _apply_signature(info, mlflow)
    summary = read_data(data, info, target) if data is not None else None
    _onnx_string_inputs(info, model_file)
    _resolve_classes(info, summary, classes, model_file)
    name = model_name or suggested_name(model_file)
    answers = _answers(name, info, model_file, description, version)
    check_answers(answers, installed_models() if taken is None else taken)
    project = Path(output_dir).absolute() / answers["project_slug"]
    if project.exists() and not force:
        raise TargetExistsError(f"{project} already exists; choose another --output-dir, or pass --force to replace it")

    backend = get_registry().backend(info.backend)
    predictor = backend.load(model_file, info.extra)
    stored = getattr(predictor, "feature_names", None)
    if stored is not None and list(stored) != info.feature_names:
        raise ModelFileError(f"{model_file}: the backend reads features {list(stored)}, not {info.feature_names}")
    if getattr(predictor, "classes", None) is not None and info.classes is None:
        info.classes = list(predictor.classes)
    fields = field_names(info.feature_names)
    example = _example(info, summary, fields)
    example_batch = _batch(info, example, input_typecode(predictor))
    expected = predictor.predict(example_batch)
    _check_finite(expected, model_file)
    scored = predict_all(predictor, summary, info.feature_names) if summary is not None else None
    probabilities = None
    if info.classes is not None:
        from lambda_ml_serve.runtime.classifier import answer

        try:
            answered = answer(expected, info.classes)
        except ValueError:
            raise ModelFileError(
                f"{model_file} answers {len(expected[0]) if isinstance(expected[0], list) else 1} value(s) per row "
                f"for {len(info.classes)} classes; give its labels with --classes"
            ) from None
        expected, probabilities = answered["predictions"], answered["probabilities"]
    card_metrics = (
        metrics(info, scored, summary.targets) if (summary is not None and summary.target is not None) else {}
    )
    sha256 = hashlib.sha256(model_file.read_bytes()).hexdigest()
    context = _context(answers, info, summary, fields, card_metrics, sha256)
    card = _card(answers, info, summary, card_metrics, sha256)
    if summary is not None:
        card["profile"] = _profile(info, summary, scored)

    project.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{project.name}.", suffix=".partial", dir=project.parent))
    try:
        from cookiecutter.generate import generate_files

        rendered = Path(generate_files(template_dir(TEMPLATE), {"cookiecutter": context}, output_dir=staging))
        package = rendered / answers["package_name"]
        shutil.copyfile(model_file, package / answers["artifact"])
        _write_json(package / "example.json", {"instances": example})
        _write_json(package / "model_card.json", card)
        _write_json(rendered / "tests" / "expected_predictions.json", expected)
        if probabilities is not None:
            _write_json(rendered / "tests" / "expected_probabilities.json", probabilities)
        if project.exists():
            # --force, as for `new`: the generated files are written again, the user's own are kept.
            shutil.copytree(rendered, project, dirs_exist_ok=True)
        else:
            rendered.rename(project)
    except LambdaMLServeError:
        raise
    except Exception as exc:
        raise ModelFileError(f"could not write {project}: {type(exc).__name__}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return project, info.warnings


def _answers(name: str, info: Description, model_file: Path, description: str | None, version: str) -> dict[str, Any]:
    suffix = model_file.suffix.lower() or {"pickle": ".joblib"}.get(info.backend, "")
    artifact = model_file.name if _SAFE_FILE.match(model_file.name) else f"model{suffix}"
    if artifact in ("model_card.json", "example.json", "__init__.py"):
        artifact = f"model{suffix}"
    return {
        "model_name": name,
        "project_slug": f"lambda-ml-serve-{name.replace('_', '-')}",
        "package_name": f"lambda_ml_serve_{name}",
        "description": description or f"{info.estimator} served from {model_file.name}.",
        "version": version,
        "backend": info.backend,
        "artifact": artifact,
        "__schema_class": name.replace("_", " ").title().replace(" ", "") + "Input",
    }


def _apply_signature(info: Description, mlflow: Any) -> None:
    """An MLflow signature names the columns (the DataFrame's own), types them and says which may be missing."""
    from lambda_ml_serve.from_model.describe import lightgbm_name

    where = f"{mlflow.directory.name}/MLmodel"
    columns = mlflow.columns
    if columns:
        if len(columns) != len(info.features):
            raise ModelFileError(
                f"{where}: the signature has {len(columns)} columns but {info.path.name} takes "
                f"{len(info.features)} features; log the model again with its own input example"
            )
        if info.names_from == "generated":
            for feature, column in zip(info.features, columns, strict=True):
                feature.name = column.name
            info.names_from, info.names_detail = "model", "the MLflow signature"
            info.warnings = [w for w in info.warnings if "stores no feature names" not in w]
        for feature, column in zip(info.features, columns, strict=True):
            if column.name != feature.name:
                if lightgbm_name(column.name) != feature.name:
                    raise ModelFileError(
                        f"{where}: signature column {column.name!r} is feature {feature.name!r} in "
                        f"{info.path.name}; log the model again with its own input example"
                    )
                feature.aliases = [column.name]
            if column.kind != "categorical" and not feature.category_strings and feature.kind == "float":
                feature.kind = column.kind
            feature.nullable = feature.nullable or not column.required
    by_key = {key: f for f in info.features for key in (f.name, *f.aliases)}
    rows = []
    for row in mlflow.example:
        rows.append(
            {
                by_key[k].name: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in row.items()
                if k in by_key
            }
        )
    if rows and all(len(r) == len(info.features) for r in rows):
        info.example_rows = rows[:2]


def _resolve_classes(info: Description, summary: DataSummary | None, given: list[str] | None, model_file: Path) -> None:
    """A classifier's labels: ``--classes``, else the target column's (a file that holds only class indices)."""
    indices_only = info.backend in ("xgboost", "lightgbm")
    if given is not None:
        if info.classes is None:
            raise ModelFileError(f"--classes: {model_file} is not a classifier that answers class probabilities")
        labels = _labels(given)
        if len(labels) != len(info.classes):
            raise ModelFileError(
                f"--classes lists {len(labels)} labels but {model_file} has {len(info.classes)} classes; list them all"
            )
        if not indices_only and [repr(c) for c in labels] != [repr(c) for c in info.classes]:
            raise ModelFileError(f"--classes: {model_file} names its own classes {info.classes}; leave --classes out")
        info.classes = labels
    elif indices_only and info.classes is not None and summary is not None and summary.target is not None:
        labels = target_classes(summary)
        if len(labels) != len(info.classes):
            raise ModelFileError(
                f"--target {summary.target!r} holds {len(labels)} distinct labels but {model_file} has "
                f"{len(info.classes)} classes; give the labels in class-index order with --classes"
            )
        info.classes = labels
    if info.classes is not None and len(set(map(repr, info.classes))) != len(info.classes):
        raise ModelFileError(f"{model_file}: its class labels are not unique; give them with --classes")


def _labels(given: list[str]) -> list[Any]:
    """``--classes`` values as numbers when they all are, else as strings (as a target column is read)."""
    for kind in (int, float):
        try:
            return [kind(v) for v in given]
        except ValueError:
            continue
    return list(given)


def _example(info: Description, summary: DataSummary | None, fields: list[str]) -> list[dict[str, Any]]:
    """Two example rows: from the data when given, else from the model's own split values."""
    rows: list[dict[str, Any]] = []
    if summary is None and info.example_rows:
        return [dict(row) for row in info.example_rows]
    if summary is not None:
        for i in summary.example_rows():
            rows.append({f.name: _typed(f, summary.values[f.name][i], digits=17) for f in info.features})
        return rows
    pairs = [typical_values(f) for f in info.features]
    for which in (0, 1):
        rows.append({f.name: _typed(f, pair[which]) for f, pair in zip(info.features, pairs, strict=True)})
    return rows if rows[0] != rows[1] else rows[:1]


def _typed(feature: Feature, value: float, digits: int = 7) -> Any:
    """``value`` as the feature's JSON type; floats from the model are shortened to ``digits``."""
    if math.isnan(value):
        return None
    if feature.category_strings:
        return feature.category_strings[int(value)] if 0 <= value < len(feature.category_strings) else None
    if feature.kind == "boolean":
        return bool(value)
    if feature.kind in ("integer", "categorical"):
        return round(value)
    return float(f"{value:.{digits}g}")


def _batch(info: Description, rows: list[dict[str, Any]], typecode: str) -> Any:
    """The rows as a batch of array type ``typecode``: the precision the served model reads them in."""
    from array import array

    from lambda_ml_serve.spec import Batch

    values = array(typecode)
    for row in rows:
        values.extend(_code(feature, row[feature.name]) for feature in info.features)
    return Batch(values, len(rows), len(info.features))


def _code(feature: Feature, value: Any) -> float:
    """A row's value as the batch holds it: a category's code, NaN for null."""
    if value is None:
        return math.nan
    if feature.category_strings:
        known = feature.category_strings.index(value) if value in feature.category_strings else None
        return float(known) if known is not None else UNKNOWN_CODES[feature.unknown] or math.nan
    return float(value)


def _check_finite(predictions: list[Any], model_file: Path) -> None:
    flat = [p for row in predictions for p in (row if isinstance(row, list) else [row])]
    if any(isinstance(p, float) and not math.isfinite(p) for p in flat):
        raise ModelFileError(f"{model_file} predicts NaN or infinity for the example rows; check the model file")


def _annotation(feature: Feature) -> tuple[str, dict[str, str]]:
    if feature.category_strings:
        category = f"Category({json.dumps(feature.category_strings)}, unknown={json.dumps(feature.unknown)})"
        return (f"Annotated[str, {category}] | None" if feature.nullable else f"Annotated[str, {category}]"), {}
    base = {"float": "float", "integer": "int", "boolean": "bool", "categorical": "int"}[feature.kind]
    constraints = {"ge": "0"} if feature.kind == "categorical" else {}
    return (f"{base} | None" if feature.nullable else base), constraints


def _feature_description(feature: Feature, info: Description, summary: DataSummary | None) -> str:
    parts = {
        "float": "a number",
        "integer": "an integer",
        "boolean": "true/false (or 1/0)",
        "categorical": "a category code (a non-negative integer)",
    }[feature.kind]
    if feature.category_strings:
        unknown = {
            "error": "another string is refused, as the model would refuse it",
            "missing": "another string is read as missing, as the library reads it",
            "minus_one": "another string is an unknown category, which the model answers",
        }[feature.unknown]
        parts = f"one of {', '.join(map(repr, feature.category_strings[:20]))}; {unknown}"
    details = [parts]
    if feature.kind == "categorical" and feature.categories and not feature.category_strings:
        codes = sorted(set(feature.categories))
        shown = ", ".join(map(str, codes[:10])) + (", ..." if len(codes) > 10 else "")
        details.append(f"the model splits on codes {shown}")
    if summary is not None:
        observed = summary.observed(feature.name)
        source = summary.columns[feature.name]
        where = "" if source.equals is None and source.column == feature.name else f" ({source.describe()})"
        if observed is not None and not feature.category_strings:
            details.append(f"observed {observed[0]:.6g} to {observed[1]:.6g} in {summary.path.name}{where}")
    elif feature.model_range is not None and not feature.category_strings:
        details.append(
            f"trained on {feature.model_range[0]:.6g} to {feature.model_range[1]:.6g} (recorded in the model)"
        )
    elif feature.thresholds:
        details.append(f"the model splits between {min(feature.thresholds):.6g} and {max(feature.thresholds):.6g}")
    if feature.nullable:
        details.append("null when missing")
    return "; ".join(details)


def _context(
    answers: dict[str, Any],
    info: Description,
    summary: DataSummary | None,
    fields: list[str],
    card_metrics: dict[str, float],
    sha256: str,
) -> dict[str, Any]:
    features = []
    for feature, field in zip(info.features, fields, strict=True):
        annotation, constraints = _annotation(feature)
        features.append(
            {
                "name": feature.name,
                "field": field,
                # Every key a request may use, pydantic's preferred first: the DataFrame's own names too.
                "names": list(dict.fromkeys([*feature.aliases, feature.name, field])),
                "kind": feature.kind,
                "nullable": feature.nullable,
                "annotation": annotation,
                "constraints": constraints,
                "description": _feature_description(feature, info, summary),
            }
        )
    extra = EXTRAS[info.backend]
    framework = f"lambda-ml-serve[{extra}]" if extra else "lambda-ml-serve"
    dependencies = [framework, *info.requirements] if info.backend == "sklearn" else [framework]
    if summary is not None:
        example_detail = (
            f"rows {', '.join(str(i + 2) for i in summary.example_rows())} of {summary.path.name} (file lines)"
        )
        range_detail = f"the minimum and maximum of each column in {summary.path.name} ({summary.rows} rows)"
    else:
        example_detail = (
            "the model itself: each feature at the lower and upper quartile of its split values "
            "(else its recorded range or mean, else 0)"
        )
        range_detail = "the model: the split values it compares each feature with (no --data given)"
    if card_metrics:
        metrics_detail = f"every row of {summary.path.name} predicted by the backend, against column {summary.target!r}"
    elif summary is not None:
        metrics_detail = "none: --data was given without --target"
    else:
        metrics_detail = "none: no --data/--target was given, so the card has no metrics"
    return {
        **answers,
        "_template": TEMPLATE,
        "model": {
            "source_file": info.path.name,
            "format": info.format,
            "estimator": info.estimator,
            "library": info.library,
            "sha256": sha256,
            "names_detail": info.names_detail,
            "types_detail": info.types_detail,
            "features": features,
            "aliased": [f for f in features if len(f["names"]) > 1],
            "categorical": any(f.category_strings for f in info.features),
            "classes_literal": repr(info.classes) if info.classes is not None else None,
            "output": info.output,
            "classes": info.classes,
            "extra": info.extra,
            "extra_literal": repr(info.extra),
            "requirements": info.requirements,
            "requirements_why": (
                "a pickle loads reliably only with the releases that wrote it, so the image installs exactly these"
            ),
            "dependencies": dependencies,
            "warnings": info.warnings,
            "data_file": summary.path.name if summary else None,
            "data_rows": summary.rows if summary else None,
            "target": summary.target if summary else None,
            "metrics": card_metrics,
            "example_detail": example_detail,
            "range_detail": range_detail,
            "metrics_detail": metrics_detail,
        },
    }


def _card(
    answers: dict[str, Any],
    info: Description,
    summary: DataSummary | None,
    card_metrics: dict[str, float],
    sha256: str,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "model": answers["model_name"],
        "version": answers["version"],
        "backend": info.backend,
        "task": info.task,
        "model_file": answers["artifact"],
        "model_sha256": sha256,
        "source": {
            "file": info.path.name,
            "format": info.format,
            "estimator": info.estimator,
            "read_with": info.library,
        },
        "features": info.feature_names,
        "feature_names_from": info.names_from,
    }
    if info.classes is not None:
        card["classes"] = info.classes
    if summary is not None:
        card["data"] = {"source": summary.path.name, "rows": summary.rows, "target": summary.target}
    card["metrics"] = card_metrics
    if not card_metrics:
        card["metrics_note"] = (
            "no metrics: generated without --data and --target; run lambda-ml-serve new --from-model again "
            "with --data CSV --target COLUMN (held-out rows) to score the model"
        )
    card["generated"] = {
        "by": f"lambda-ml-serve {lambda_ml_serve.__version__} new --from-model",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return card


def _profile(info: Description, summary: DataSummary, predictions: list[Any] | None) -> dict[str, Any]:
    """The --data rows' profile and the model's predictions on them: `monitor`'s reference."""
    from lambda_ml_serve.monitor.profile import CATEGORICAL, NUMERIC, profile_of

    kinds = {f.name: CATEGORICAL if f.kind == "categorical" else NUMERIC for f in info.features}
    return profile_of(summary.values, kinds, predictions)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
