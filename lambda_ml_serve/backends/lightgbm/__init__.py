"""LightGBM backend: a Booster loaded from its text model (``Booster.save_model``).

The image gets lightgbm, numpy and scipy (lightgbm's own dependencies), never pandas or
scikit-learn, and the OpenMP runtime lib_lightgbm.so needs (see :mod:`.runtime`). Models trained on
a bare array carry made-up names (``Column_0``...), which count as no names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.backends.lightgbm import runtime
from lambda_ml_serve.spec import ModelSpec


class LightGBMBackend:
    name = "lightgbm"
    requirements: Sequence[str] = ("lightgbm>=4.0", "numpy>=1.24", "scipy>=1.10")

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> runtime.LightGBMPredictor:
        """Open the text model; the objective decides what it answers, so there are no options."""
        return runtime.load(Path(artifact))

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """The text model unchanged, plus the OpenMP runtime for ``arch``; ``build`` checks its predictions."""
        from lambda_ml_serve.backends.lightgbm.prepare import prepare

        return prepare(Path(artifact), Path(out_dir), arch)
