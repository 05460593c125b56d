"""Build-time work for the ONNX backend: take an ONNX file as it is, or convert a model to ONNX.

Conversions: scikit-learn estimators and pipelines with skl2onnx, XGBoost and LightGBM boosters with
onnxmltools. The converted model records its feature names and what a row is answered with (see
:mod:`.runtime`), so that it answers like the backend the model was written for, and a parity check
compares the two on the model's example rows and on rows generated around them before anything is
written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lambda_ml_serve.backends.onnx import PARITY_TOLERANCE
from lambda_ml_serve.backends.onnx.runtime import ANSWER_KEY, FEATURE_NAMES_KEY, PREDICT_PROBA
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


def _refuse_categories(artifact: Path, spec: ModelSpec) -> None:
    """The converted graph takes one float tensor: a category feature has no place in it."""
    from lambda_ml_serve.runtime.fast import CATEGORY, derive

    plan = derive(spec).plan
    named = [f.keys[0] for f in plan.fields if f.kind == CATEGORY] if plan is not None else []
    if named:
        raise BuildError(
            f"{artifact.name} has category feature(s) {', '.join(named)}, which the ONNX converters cannot take "
            "with the model's other inputs in one float tensor; serve it with its own backend"
        )


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
    _refuse_categories(artifact, spec)
    n_features = len(spec.feature_names)
    inputs = [("input", FloatTensorType([None, n_features]))]
    answer: dict[str, Any] = {}
    proba = bool(spec.extra.get(PREDICT_PROBA))
    if kind == "pickle":
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType as SklFloatTensorType

        estimator, _ = load_pickle(artifact)
        classifier = hasattr(estimator, "classes_")
        options = {"zipmap": False} if classifier else None
        types = [("input", SklFloatTensorType([None, n_features]))]
        model = to_onnx(estimator, initial_types=types, options=options, target_opset=TARGET_OPSET)
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
        # onnxmltools reads split features as f0, f1, ...: drop the names, they travel as metadata.
        booster.feature_names = None
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
    """The example rows, then rows scaled from them by 0.5 to 1.5 (a fixed seed), each one valid."""
    import random

    from lambda_ml_serve.runtime.errors import ApiError
    from lambda_ml_serve.runtime.validation import RowValidator

    validator = RowValidator(spec, len(spec.example) + PARITY_ROWS)
    rows = [dict(r) for r in spec.example]
    rng = random.Random(0)
    good = []
    for _ in range(PARITY_ROWS if rows else 0):
        base = rng.choice(rows)
        candidate = {k: (v * rng.uniform(0.5, 1.5) if isinstance(v, float) else v) for k, v in base.items()}
        try:
            validator.validate([candidate])
        except ApiError:
            continue
        good.append(candidate)
    if not rows:
        raise BuildError(f"model {spec.name!r} has no example rows; the ONNX parity check needs them")
    return validator.to_batch(rows + good)
