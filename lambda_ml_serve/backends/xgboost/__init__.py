"""XGBoost backend: Booster models (JSON or UBJ, from any XGBoost since 1.0) served through libxgboost's C API.

The image carries libxgboost alone (``runtime``: ctypes, standard library only); the xgboost Python
package, numpy and scipy are needed only at build time (``prepare``: JSON -> UBJ and a parity check).
Never ``XGBRegressor`` (scikit-learn) and never pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.spec import ServingLibrary

if TYPE_CHECKING:
    from lambda_ml_serve.backends.xgboost.runtime import XGBoostPredictor
    from lambda_ml_serve.spec import ModelSpec

#: UBJ loads an order of magnitude faster than JSON; build converts to it.
PREPARED_NAME = "model.ubj"


class XGBoostBackend:
    name = "xgboost"
    #: ``xgboost-cpu``, never ``xgboost``, which drags ~470 MB of NCCL for GPUs Lambda does not have.
    requirements: Sequence[str] = ("xgboost-cpu>=2.0",)
    #: Only the shared library and the OpenMP runtime it links: the wheel's Python package is not imported.
    serving_library = ServingLibrary("xgboost-cpu", "xgboost", files=("xgboost/lib/*", "xgboost_cpu.libs/*"))

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> XGBoostPredictor:
        """Load a Booster; ``options`` are not used (the booster's objective decides what it predicts)."""
        from lambda_ml_serve.backends.xgboost.runtime import XGBoostPredictor

        # One thread per request is fastest for small batches on Lambda's 1-2 vCPUs.
        return XGBoostPredictor(artifact, nthread=1)

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """Convert to UBJ (the same on every architecture) and check it predicts as xgboost's ``inplace_predict``."""
        from lambda_ml_serve.backends.xgboost.prepare import prepare

        return prepare(artifact, out_dir / PREPARED_NAME, spec=spec)
