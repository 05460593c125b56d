"""ONNX backend: onnxruntime on one intra-op thread; the image gets onnxruntime and numpy only.

It serves ``.onnx`` files, and with ``build --backend onnx`` models of the ``sklearn``, ``xgboost``
and ``lightgbm`` backends, converted at build time (:mod:`.prepare`) and checked to answer as the
original does. Options (``ModelSpec.extra``): ``predict_proba``, ``output``, ``threads``
(see :mod:`.runtime`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.backends.onnx import runtime
from lambda_ml_serve.spec import ModelSpec

#: Largest difference from the original library's answers that a converted model may have: trees
#: compare float32 thresholds, and converters sum leaves in float32 where the libraries use float64.
PARITY_TOLERANCE = 1e-4


class OnnxBackend:
    name = "onnx"
    #: onnxruntime's own dependencies are numpy, protobuf, flatbuffers and packaging: no pandas, no scikit-learn.
    requirements: Sequence[str] = ("onnxruntime>=1.17", "numpy>=1.24")
    #: ``build`` compares the prepared model with the original within this.
    parity_tolerance = PARITY_TOLERANCE

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> runtime.OnnxPredictor:
        """An inference session on ``artifact``; see :mod:`.runtime` for the options."""
        return runtime.load(Path(artifact), options)

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """``out_dir/model.onnx``: the ONNX file as it is, or the model converted and parity-checked."""
        from lambda_ml_serve.backends.onnx.prepare import prepare

        return prepare(Path(artifact), Path(out_dir), spec)
