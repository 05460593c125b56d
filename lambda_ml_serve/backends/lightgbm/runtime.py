"""What the image runs for the LightGBM backend: a Booster from its text model, one thread per request.

Imports lightgbm and numpy only; lightgbm's optional pandas/scikit-learn/pyarrow integrations stay
off because the image does not carry those packages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import Batch, Explanation

#: The OpenMP runtime lib_lightgbm.so links against; the build ships it beside the model because
#: Lambda's base images do not have it.
OPENMP_LIBRARY = "libgomp.so.1"
#: The names LightGBM makes up for a model trained on a bare array: not feature names.
DEFAULT_NAME = re.compile(r"^Column_\d+$")
#: The link from each objective's raw score to its prediction (anything else: identity).
LIGHTGBM_LINKS = {
    "binary": "logistic",
    "cross_entropy": "logistic",
    "multiclass": "softmax",
    "poisson": "exp",
    "gamma": "exp",
    "tweedie": "exp",
}


def preload_openmp(folder: Path) -> None:
    """Load the shipped OpenMP runtime, if any, so that lib_lightgbm.so finds it by its soname."""
    library = folder / OPENMP_LIBRARY
    if library.is_file():
        import ctypes

        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def feature_names_of(booster: Any) -> list[str] | None:
    """The booster's feature names, or None when LightGBM made them up (``Column_0``...)."""
    names = [str(n) for n in booster.feature_name()]
    return None if all(DEFAULT_NAME.match(n) for n in names) else names


class LightGBMPredictor:
    """A LightGBM Booster answering one value per row (a list of class probabilities for multi-class)."""

    #: LightGBM compares its inputs in float64: the batch carries the client's values as written.
    input_type = "float64"

    def __init__(self, booster: Any, artifact: Path | None = None) -> None:
        import numpy as np

        self._artifact = artifact
        self._np = np
        self._booster = booster
        self.feature_names: Sequence[str] | None = feature_names_of(booster)

    def predict(self, batch: Batch) -> list[Any]:
        """One value (or list of class probabilities) per row, from LightGBM's ``predict`` on the batch."""
        matrix = self._np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)
        # num_threads=1: Lambda gives one or two vCPUs, and OpenMP's start-up costs more than it wins
        # on small batches.
        return self._booster.predict(matrix, num_threads=1).tolist()

    def explain(self, batch: Batch) -> Explanation:
        """LightGBM's exact TreeSHAP (``pred_contrib``): per row and class, the features' parts and the bias."""
        np = self._np
        matrix = np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)
        width = batch.n_features + 1
        values = np.asarray(self._booster.predict(matrix, pred_contrib=True, num_threads=1), dtype=np.float64)
        values = values.reshape(batch.n_rows, -1, width)
        return Explanation(values[:, :, -1].tolist(), values[:, :, :-1].tolist(), link=self.link)

    @property
    def link(self) -> str:
        """How the raw score becomes the prediction, from the model's objective."""
        objective = ""
        if self._artifact is not None:
            with open(self._artifact, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("objective="):
                        objective = line.split("=", 1)[1].split()[0] if "=" in line else ""
                        break
                    if line.startswith("Tree="):
                        break
        return LIGHTGBM_LINKS.get(objective, "identity")


def load(artifact: Path) -> LightGBMPredictor:
    """Open a LightGBM text model written by ``Booster.save_model``."""
    not_a_model = f"{artifact} is not a LightGBM model (the text file written by Booster.save_model)"
    with open(artifact, "rb") as fh:
        head = fh.read(5)
    # LightGBM prints its own "[Fatal]" line before raising: refuse what is plainly not a model first.
    if head != b"tree\n":
        raise ModelLoadError(not_a_model)
    preload_openmp(artifact.parent)
    import lightgbm

    try:
        booster = lightgbm.Booster(model_file=str(artifact))
    except lightgbm.basic.LightGBMError as exc:
        raise ModelLoadError(f"{not_a_model}; LightGBM says: {' '.join(str(exc).split())[:300]}") from None
    return LightGBMPredictor(booster, artifact)
