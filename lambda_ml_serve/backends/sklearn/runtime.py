"""What the image runs for the scikit-learn backend: unpickle the plugin's estimator, predict on float32 batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import Batch, Explanation

#: How a pickle (protocol 2+) or a joblib file compressed with zlib, gzip, bz2, xz, lz4 or lzma begins.
_PICKLE_STARTS = (b"\x80", b"ZF", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18", b"\x5d\x00\x00")

PREDICT_PROBA = "predict_proba"


class SklearnPredictor:
    """A loaded estimator answering ``predict`` (or ``predict_proba``) on float32 batches."""

    def __init__(self, estimator: Any, *, predict_proba: bool = False) -> None:
        import numpy as np

        self._np = np
        self.estimator = estimator
        names = getattr(estimator, "feature_names_in_", None)
        #: Set only when the estimator was fitted on a DataFrame; the framework checks it against the schema.
        self.feature_names: Sequence[str] | None = None if names is None else [str(n) for n in names]
        if predict_proba and not hasattr(estimator, "predict_proba"):
            raise ValueError(
                f"{type(estimator).__name__} has no predict_proba; it is not a probabilistic classifier, "
                f"so remove {PREDICT_PROBA!r} from ModelSpec.extra"
            )
        self._predict = estimator.predict_proba if predict_proba else estimator.predict
        classes = getattr(estimator, "classes_", None) if predict_proba else None
        #: The class of each probability in a row, when answering probabilities.
        self.classes: list[Any] | None = None if classes is None else np.asarray(classes).tolist()
        self._explainer: Any = None

    def explain(self, batch: Batch) -> Explanation:
        """Exact TreeSHAP of a tree model (or a Pipeline ending with one); see :mod:`.explain`."""
        return self._explainer_of().explain(batch)

    @property
    def explains(self) -> bool:
        """Whether the estimator is a tree model (or a pipeline ending with one) the backend explains."""
        from lambda_ml_serve.spec import ExplainUnavailable

        try:
            self._explainer_of()
        except ExplainUnavailable:
            return False
        return True

    def _explainer_of(self) -> Any:
        if self._explainer is None:
            from lambda_ml_serve.backends.sklearn.explain import Explainer

            self._explainer = Explainer(self.estimator)
        return self._explainer

    def predict(self, batch: Batch) -> list[Any]:
        matrix = self._np.frombuffer(batch.values, dtype=self._np.float32).reshape(batch.n_rows, batch.n_features)
        # Estimators are fitted on float64 (scikit-learn's default); widening here gives every
        # estimator the same exact values, and trees narrow them back to float32 without loss.
        return self._np.asarray(self._predict(matrix.astype(self._np.float64))).tolist()


def load_estimator(artifact: Path) -> Any:
    """Unpickle a fitted estimator, refusing one written by another scikit-learn release."""
    import warnings

    with open(artifact, "rb") as fh:
        head = fh.read(6)
    if not head.startswith(_PICKLE_STARTS):
        # joblib would fail deep in the unpickler (a KeyError naming a byte) on anything else.
        raise ModelLoadError(f"{artifact} is not a scikit-learn model (a file written by joblib.dump or pickle)")
    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            estimator = joblib.load(artifact)
        except InconsistentVersionWarning as exc:
            raise RuntimeError(
                f"{artifact.name} was written by scikit-learn {exc.original_sklearn_version} but "
                f"{exc.current_sklearn_version} is installed; pin scikit-learn=="
                f"{exc.original_sklearn_version} in ModelSpec.requirements, or retrain"
            ) from None
    if not callable(getattr(estimator, "predict", None)):
        raise TypeError(f"{artifact.name} holds a {type(estimator).__name__}, not a fitted estimator")
    if getattr(estimator, "feature_names_in_", None) is not None:
        # The rows arrive as a bare array, already in the fitted column order (the framework
        # checks the names against the schema at load), so this per-call warning says nothing.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    return estimator
