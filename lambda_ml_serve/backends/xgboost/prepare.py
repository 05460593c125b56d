"""Build time for the xgboost backend: JSON -> UBJ, then a parity check against the xgboost package.

Needs the xgboost Python package and numpy (``pip install 'lambda-ml-serve[xgboost]'``); the image
needs neither. The check predicts with the very library the image will carry (``build`` pins the
image's xgboost-cpu to the version installed here), so the answers must be equal bit for bit.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.backends.xgboost.runtime import XGBoostError, XGBoostPredictor, last_error
from lambda_ml_serve.errors import BuildError, ModelLoadError
from lambda_ml_serve.spec import Batch

if TYPE_CHECKING:
    from lambda_ml_serve.spec import ModelSpec

#: Rows drawn around the split thresholds for the parity check, besides the model's example rows.
PARITY_ROWS = 2_000
#: Share of generated values that are missing (NaN), which takes each split's default branch.
MISSING_SHARE = 0.1


class ParityError(BuildError):
    """The prepared artifact, served through the C API, predicts differently from xgboost's ``inplace_predict``."""


class InplacePredictor:
    """The reference: the xgboost package's ``Booster.inplace_predict`` on the batch viewed as a numpy matrix."""

    def __init__(self, artifact: Path) -> None:
        import xgboost

        self.booster = xgboost.Booster()
        try:
            self.booster.load_model(str(artifact))
        except xgboost.core.XGBoostError as exc:
            raise BuildError(
                f"{artifact} is not an XGBoost model (JSON or UBJ written by Booster.save_model); "
                f"XGBoost says: {last_error(str(exc))}"
            ) from None
        self.booster.set_param({"nthread": 1})
        self.feature_names: Sequence[str] | None = self.booster.feature_names

    def predict(self, batch: Batch) -> list[Any]:
        import numpy as np

        matrix = np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)
        # validate_features=False: the schema already put columns in the booster's order.
        return self.booster.inplace_predict(matrix, validate_features=False).tolist()


def prepare(artifact: Path, target: Path, *, spec: ModelSpec | None = None) -> Path:
    """Write ``artifact`` as UBJ to ``target`` and check it; return ``target``."""
    reference = InplacePredictor(artifact)
    reference.booster.save_model(str(target))
    check_parity(target, reference, spec)
    return target


def check_parity(prepared: Path, reference: InplacePredictor, spec: ModelSpec | None) -> None:
    """Raise :class:`ParityError` unless the C API on ``prepared`` answers exactly as ``reference``."""
    try:
        predictor = XGBoostPredictor(prepared)
    except (XGBoostError, ModelLoadError) as exc:
        raise BuildError(f"libxgboost cannot load the prepared {prepared.name}: {exc}") from None
    batch = parity_batch(reference.booster, spec)
    got, want = predictor.predict(batch), reference.predict(batch)
    predictor.close()
    mismatch = next((i for i, (g, w) in enumerate(zip(got, want, strict=True)) if not _identical(g, w)), None)
    if mismatch is not None:
        what = f"example row {mismatch}" if spec is not None and mismatch < len(spec.example) else f"row {mismatch}"
        raise ParityError(
            f"the prepared {prepared.name} served through libxgboost's C API predicts {got[mismatch]!r} on "
            f"{what} where xgboost's inplace_predict predicts {want[mismatch]!r}; is the xgboost package "
            "importable here the one whose libxgboost is found first on sys.path?"
        )


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_identical, a, b))
    return a == b or (a != a and b != b)  # NaN answers agree with NaN only


def parity_batch(booster: Any, spec: ModelSpec | None) -> Batch:
    """The model's example rows, then rows drawn around every feature's split thresholds, some missing."""
    import numpy as np

    num_feature = booster.num_features()
    rows: list[Any] = []
    if spec is not None and spec.example:
        from lambda_ml_serve.runtime.errors import ApiError
        from lambda_ml_serve.runtime.validation import RowValidator

        try:
            examples = RowValidator(spec, len(spec.example)).to_batch(list(spec.example))
        except ApiError as exc:
            raise BuildError(f"model {spec.name!r}: its example rows are invalid: {exc.message}") from None
        rows.append(np.frombuffer(examples.values, dtype=examples.values.typecode).reshape(-1, num_feature))
    rng = np.random.default_rng(0)
    generated = np.empty((PARITY_ROWS, num_feature), dtype=np.float32)
    for feature, thresholds in enumerate(_split_thresholds(booster, num_feature)):
        if not thresholds:
            generated[:, feature] = rng.uniform(0.0, 1.0, PARITY_ROWS)
            continue
        lo, hi = min(thresholds), max(thresholds)
        pad = (hi - lo) / 10 or abs(lo) / 10 or 1.0
        uniform = rng.uniform(lo - pad, hi + pad, PARITY_ROWS)
        # A third of the values sit exactly on a threshold, where < and <= would disagree.
        on_threshold = rng.choice(np.array(thresholds, dtype=np.float32), PARITY_ROWS)
        generated[:, feature] = np.where(rng.random(PARITY_ROWS) < 1 / 3, on_threshold, uniform)
    generated[rng.random(generated.shape) < MISSING_SHARE] = np.nan
    matrix = np.ascontiguousarray(np.vstack([*rows, generated]), dtype=np.float32)
    return Batch(array("f", matrix.tobytes()), len(matrix), num_feature)


def _split_thresholds(booster: Any, num_feature: int) -> list[list[float]]:
    """Each feature's split thresholds, from the booster's own JSON."""
    learner = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    trees = learner.get("gbtree", learner).get("model", {}).get("trees", [])  # dart wraps a gbtree; gblinear has none
    found: list[set[float]] = [set() for _ in range(num_feature)]
    for tree in trees:
        for left, feature, threshold in zip(
            tree["left_children"], tree["split_indices"], tree["split_conditions"], strict=True
        ):
            if left != -1:
                found[feature].add(threshold)
    return [sorted(values) for values in found]
