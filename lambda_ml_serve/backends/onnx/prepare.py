"""Build-time work for the ONNX backend: take an ONNX file as it is, or convert a model to ONNX.

Conversions: scikit-learn estimators and pipelines with skl2onnx, XGBoost and LightGBM boosters with
onnxmltools. The converted model records its feature names and what a row is answered with (see
:mod:`.runtime`), so that it answers like the backend the model was written for, and a parity check
compares the two on the model's example rows and on rows generated around them (every category,
unknown categories, missing values) before anything is written.

A Pipeline led by a ColumnTransformer fitted on a DataFrame is converted with one input per column:
a string tensor for each category column (its encoder's categories are recorded in the model, so the
runtime turns codes back into strings), a float tensor for each number. Boosters keep one float
tensor: their category features are codes already, which the converted trees compare as the
libraries do (the parity check proves it, model by model).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lambda_ml_serve.backends.onnx import PARITY_TOLERANCE
from lambda_ml_serve.backends.onnx.runtime import ANSWER_KEY, CATEGORIES_KEY, FEATURE_NAMES_KEY, PREDICT_PROBA
from lambda_ml_serve.backends.sklearn.runtime import ENCODERS
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.modelfiles import lightgbm_booster, load_pickle, onnx_model, sniff, xgboost_booster
from lambda_ml_serve.spec import Batch, ModelSpec

PREPARED_NAME = "model.onnx"
#: Rows generated around the example rows for the parity check.
PARITY_ROWS = 2_000
#: Opsets onnxruntime 1.17 and later run, for skl2onnx (onnxmltools converts to the highest it supports).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def prepare(artifact: Path, out_dir: Path, spec: ModelSpec | None) -> Path:
    """Write ``out_dir/model.onnx`` from ``artifact``, converted if it is not ONNX already."""
    import onnx

    kind = sniff(artifact)
    model, original = (onnx_model(artifact), None) if kind == "onnx" else _convert(kind, artifact, spec)
    target = out_dir / PREPARED_NAME
    if original is not None and spec is not None:
        from lambda_ml_serve.backends.onnx.runtime import load

        data = model.SerializeToString()
        staged = out_dir / f".{PREPARED_NAME}.partial"
        staged.write_bytes(data)
        try:
            check_parity(load(staged, spec.extra), original, spec)
        finally:
            staged.unlink()
    onnx.save(model, str(target))
    return target


def _convert(kind: str, artifact: Path, spec: ModelSpec | None) -> tuple[Any, Any]:
    """The ONNX model converted from ``artifact``, and the original's predictor for the parity check."""
    if spec is None:
        raise BuildError(f"converting {artifact.name} to ONNX needs the model's spec (its features)")
    try:
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError:
        raise BuildError(
            "converting a model to ONNX needs skl2onnx and onnxmltools at build time: "
            "pip install 'lambda-ml-serve[onnx-convert]'"
        ) from None
    n_features = len(spec.feature_names)
    inputs = [("input", FloatTensorType([None, n_features]))]
    answer: dict[str, Any] = {}
    proba = bool(spec.extra.get(PREDICT_PROBA))
    if kind == "pickle":
        from skl2onnx import to_onnx

        estimator, _ = load_pickle(artifact)
        classifier = hasattr(estimator, "classes_")
        options = {"zipmap": False} if classifier else None
        types, categories = _sklearn_inputs(artifact, estimator, n_features)
        with _hist_gradient_boosting_fix():
            try:
                model = to_onnx(estimator, initial_types=types, options=options, target_opset=TARGET_OPSET)
            except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, ... for what it lacks
                what = " ".join(str(exc).split())[:200] or type(exc).__name__
                raise BuildError(
                    f"{artifact.name}: skl2onnx cannot convert this {_steps(estimator)} ({type(exc).__name__}: "
                    f"{what}); serve it with backend 'sklearn'"
                ) from None
        if categories:
            # Keyed by the graph's own input names: skl2onnx renames columns ("fixed acidity" -> "fixed_acidity").
            names = [item.name for item in model.graph.input]
            _set_metadata(model, {CATEGORIES_KEY: {names[j]: strings for j, strings in categories.items()}})
        if classifier:
            answer = {"output": "probabilities" if proba else "label"}
            if proba:
                answer["classes"] = [_plain(c) for c in estimator.classes_]
        from lambda_ml_serve.backends.sklearn import SklearnBackend

        original = SklearnBackend().load(artifact, spec.extra)
    elif kind == "xgboost":
        import onnxmltools

        booster = xgboost_booster(artifact)
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        # onnxmltools reads split features as f0, f1, ...: drop the names, they travel as metadata. The
        # types stay where a feature is categorical: XGBoost dumps a categorical split only beside them.
        booster.feature_names = None
        if "c" not in (booster.feature_types or ()):
            booster.feature_types = None
        model = onnxmltools.convert_xgboost(booster, initial_types=inputs, target_opset=_onnxmltools_opset())
        answer = _booster_answer(objective.startswith("binary:"), objective == "multi:softprob")
        from lambda_ml_serve.backends.xgboost import XGBoostBackend

        original = XGBoostBackend().load(artifact, spec.extra)
    elif kind == "lightgbm":
        import onnxmltools

        booster = lightgbm_booster(artifact)
        objective = booster.dump_model(num_iteration=1)["objective"].split()[0]
        model = onnxmltools.convert_lightgbm(
            booster, initial_types=inputs, zipmap=False, target_opset=_onnxmltools_opset()
        )
        answer = _booster_answer(objective in ("binary", "cross_entropy"), objective in ("multiclass", "multiclassova"))
        from lambda_ml_serve.backends.lightgbm import LightGBMBackend

        original = LightGBMBackend().load(artifact, spec.extra)
    else:
        raise BuildError(f"{artifact.name}: the onnx backend converts scikit-learn, XGBoost and LightGBM models")
    _set_metadata(model, {FEATURE_NAMES_KEY: list(spec.feature_names), ANSWER_KEY: answer})
    return model, original


def _sklearn_inputs(artifact: Path, estimator: Any, n_features: int) -> tuple[list[Any], dict[int, list[str]]]:
    """skl2onnx's inputs for ``estimator``, and the categories of its string inputs by position.

    A pipeline that selects its columns by name takes one input per column, as skl2onnx matches them
    to the ColumnTransformer's selections: a string tensor for a column an encoder fitted on strings,
    a float tensor otherwise. Anything else takes one float matrix.
    """
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from lambda_ml_serve.backends.sklearn.runtime import input_columns

    columns = input_columns(estimator)
    if columns is None:
        return [("input", FloatTensorType([None, n_features]))], {}
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    for _, transformer, selected in first.transformers_:
        _refuse_unconvertible(artifact, transformer, selected)
    types: list[Any] = []
    categories: dict[int, list[str]] = {}
    for j, column in enumerate(columns):
        if column.categories:
            types.append((column.name, StringTensorType([None, 1])))
            categories[j] = list(column.categories)
        else:
            types.append((column.name, FloatTensorType([None, 1])))
    return types, categories


def _refuse_unconvertible(artifact: Path, transformer: Any, selected: Any) -> None:
    """Refuse, naming the columns, a string step skl2onnx cannot convert as scikit-learn answers it."""
    if isinstance(transformer, str):
        return  # "drop" or "passthrough"
    listed = selected.tolist() if hasattr(selected, "tolist") else selected
    columns = ", ".join(repr(str(c)) for c in (listed if isinstance(listed, list) else [listed]))
    chain = [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]
    encoders = [s for s in chain if type(s).__name__ in ENCODERS]
    strings = any(isinstance(v, str) for e in encoders for fitted in e.categories_ for v in fitted)
    for step in chain:
        name = type(step).__name__
        if name in ENCODERS and any(not isinstance(v, str) for f in step.categories_ for v in f) and strings:
            reason = "was fitted with a missing value as a category, which an ONNX string input cannot carry"
        elif name in ENCODERS and any(c is not None for c in getattr(step, "infrequent_categories_", None) or ()):
            reason = "groups infrequent categories, which skl2onnx does not convert"
        elif name == "SimpleImputer" and strings and not isinstance(step.missing_values, str):
            reason = "fills in missing strings, which skl2onnx converts only for a string marker (missing_values='')"
        else:
            continue
        fix = "serve it with backend 'sklearn'"
        raise BuildError(f"{artifact.name}: the {name} of column(s) {columns} {reason}; {fix}")


def _steps(estimator: Any) -> str:
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    return " -> ".join(type(s).__name__ for s in steps)


@contextlib.contextmanager
def _hist_gradient_boosting_fix() -> Iterator[None]:
    """skl2onnx (1.20) writes HistGradientBoosting leaves' missing-value flag as a Python bool, which
    protobuf 5+ refuses in an int list ("Expected an int, got a boolean"); pass it as the int it means."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args: Any, nodes_missing_value_tracks_true: Any = 0, **kwargs: Any) -> Any:
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


def _onnxmltools_opset() -> int:
    """The highest opset onnxmltools converts to; its converters may otherwise default to a higher
    one (skl2onnx's) that its own topology check then refuses."""
    from onnxmltools.convert.common.onnx_ex import get_maximum_opset_supported

    return get_maximum_opset_supported()


def _booster_answer(binary: bool, multiclass: bool) -> dict[str, Any]:
    """Boosters answer a binary model's positive-class probability and a multi-class one's probabilities."""
    if binary:
        return {"output": "probabilities", "column": 1}
    if multiclass:
        return {"output": "probabilities"}
    return {}


def _set_metadata(model: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def check_parity(converted: Any, original: Any, spec: ModelSpec) -> float:
    """The largest difference between the two predictors on the check rows; fails beyond the tolerance."""
    batch = parity_batch(spec)
    worst, where = 0.0, None
    for row, (got, want) in enumerate(zip(converted.predict(batch), original.predict(batch), strict=True)):
        diff = _difference(got, want)
        if diff > worst:
            worst, where = diff, row
    if worst > PARITY_TOLERANCE:
        raise BuildError(
            f"model {spec.name!r}: the ONNX conversion answers up to {worst:.3g} away from the original on "
            f"check row {where} (tolerance {PARITY_TOLERANCE}); serve it with backend {spec.backend!r}"
        )
    return worst


def _difference(a: Any, b: Any) -> float:
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)):
            return math.inf
        return max(map(_difference, a, b), default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b))
    return 0.0 if a == b else math.inf


def parity_batch(spec: ModelSpec) -> Batch:
    """The example rows, then rows drawn from them (a fixed seed), each one valid.

    Numbers are scaled by 0.5 to 1.5; a category takes each of its strings in turn, an unknown string
    (where its rule answers one) or null; a nullable number is null in a tenth of the rows.
    """
    import random

    from lambda_ml_serve.runtime.errors import ApiError
    from lambda_ml_serve.runtime.fast import CATEGORY, derive
    from lambda_ml_serve.runtime.validation import RowValidator

    rows = [dict(r) for r in spec.example]
    if not rows:
        raise BuildError(f"model {spec.name!r} has no example rows; the ONNX parity check needs them")
    plan = derive(spec).plan
    fields = plan.fields if plan is not None else ()
    validator = RowValidator(spec, len(rows) + PARITY_ROWS)
    rng = random.Random(0)
    good = []
    for _ in range(PARITY_ROWS):
        base = rng.choice(rows)
        candidate = {k: (v * rng.uniform(0.5, 1.5) if isinstance(v, float) else v) for k, v in base.items()}
        for field in fields:
            key = next((k for k in field.keys if k in base), field.keys[0])
            draw = rng.random()
            if field.nullable and draw < 0.1:
                candidate[key] = None
            elif field.kind == CATEGORY and field.unknown != "error" and draw < 0.25:
                candidate[key] = "\x00parity unknown"
            elif field.kind == CATEGORY:
                candidate[key] = rng.choice(field.categories)
        try:
            validator.validate([candidate])
        except ApiError:
            continue
        good.append(candidate)
    return validator.to_batch(rows + good)
