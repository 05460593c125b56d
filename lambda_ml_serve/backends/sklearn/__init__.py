"""scikit-learn backend: any fitted estimator or Pipeline saved with ``joblib.dump``.

Security: a joblib file is a pickle, and unpickling runs code chosen by whoever wrote the file.
This backend loads only the artifact shipped inside the model plugin's own package, or the copy
the build step prepared from it; nothing that arrives with a request is ever unpickled. Install a
model plugin only from a source you would trust with running code, as for any other package.

A pickle is tied to the scikit-learn version that wrote it, so loading refuses an artifact from
another version instead of serving it with possibly different behaviour; pin that version in
``ModelSpec.requirements`` so the image installs it.

Options, read from ``ModelSpec.extra``:

``predict_proba`` (bool, default False)
    Answer each row with its class probabilities, a list in the order of the classifier's
    ``classes_`` (``predictor.classes``), instead of the predicted label.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.backends.sklearn.runtime import PREDICT_PROBA, SklearnPredictor, load_estimator
from lambda_ml_serve.spec import ModelSpec

__all__ = ["PREDICT_PROBA", "SklearnBackend", "SklearnPredictor"]


class SklearnBackend:
    name = "sklearn"
    requirements: Sequence[str] = ("scikit-learn>=1.3", "joblib>=1.3", "numpy>=1.24", "scipy>=1.10")

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> SklearnPredictor:
        """Unpickle the plugin's own artifact (never request data); see the module docstring."""
        return SklearnPredictor(
            load_estimator(Path(artifact)), predict_proba=bool((options or {}).get(PREDICT_PROBA, False))
        )

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """A joblib file is already the form that loads fastest, on any architecture: copy it as it is.

        ``build`` then loads the copy and checks it predicts the example rows as the original does.
        """
        target = out_dir / artifact.name
        shutil.copyfile(artifact, target)
        return target
