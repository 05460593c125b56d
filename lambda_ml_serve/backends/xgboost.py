"""XGBoost backend: a Booster (JSON or UBJ) predicting with ``inplace_predict`` on float32 input.

Never ``XGBRegressor`` (it needs scikit-learn) and never pandas: the serving path stays lean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.spec import Batch

#: UBJ loads an order of magnitude faster than JSON; build converts to it.
PREPARED_NAME = "model.ubj"


class XGBoostPredictor:
    def __init__(self, booster: Any) -> None:
        import numpy as np

        self._np = np
        self._booster = booster
        self.feature_names: Sequence[str] | None = booster.feature_names

    def predict(self, batch: Batch) -> list[Any]:
        matrix = self._np.frombuffer(batch.values, dtype=self._np.float32).reshape(
            batch.n_rows, batch.n_features
        )
        # validate_features=False: the schema already put columns in the booster's order, and
        # a bare ndarray carries no names to check.
        return self._booster.inplace_predict(matrix, validate_features=False).tolist()


class XGBoostBackend:
    name = "xgboost"
    requirements: Sequence[str] = ("xgboost-cpu>=2.0", "numpy", "scipy")

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> XGBoostPredictor:
        # No options: the booster's objective already decides what it predicts.
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(artifact))
        # One thread per request is fastest for small batches on Lambda's 1-2 vCPUs.
        booster.set_param({"nthread": 1})
        return XGBoostPredictor(booster)

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: Any = None) -> Path:
        """Convert to UBJ (the same on every architecture)."""
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(artifact))
        target = out_dir / PREPARED_NAME
        booster.save_model(str(target))
        return target
