"""What the image runs for the scikit-learn backend: unpickle the plugin's estimator, predict on float64 batches.

A Pipeline that starts with a ColumnTransformer selecting columns by name (encoders on string
columns, imputers, scalers) is served as it is: the batch is turned back into the DataFrame it was
fitted on, category codes mapped back to their strings (see :func:`input_columns`).

So is a HistGradientBoosting model fitted on a DataFrame with pandas ``category`` columns (its own
categorical splits, ``categorical_features="from_dtype"``): those columns are handed to it as pandas
Categoricals of the categories it was fitted with. It reads an unknown category as a missing value
(its ``OrdinalEncoder`` codes both as NaN), so such a field's unknown strings are accepted as missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_ml_serve.backends.sklearn.categories import native_categories
from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import Batch, Explanation

#: How a pickle (protocol 2+) or a joblib file compressed with zlib, gzip, bz2, xz, lz4 or lzma begins.
_PICKLE_STARTS = (b"\x80", b"ZF", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18", b"\x5d\x00\x00")

PREDICT_PROBA = "predict_proba"
#: What code -1 (an unknown category) becomes for the pipeline: a string no encoder was fitted on.
UNKNOWN_CATEGORY = "\x00unknown category"
#: Encoders whose ``categories_`` make a column a category feature, and the ``handle_unknown`` values
#: with which they answer an unknown category (code -1) instead of failing.
ENCODERS = ("OneHotEncoder", "OrdinalEncoder")
ANSWERS_UNKNOWN = frozenset({"ignore", "infrequent_if_exist", "use_encoded_value", "warn"})
#: Steps that pass NaN through to the next one, or fill it in.
IMPUTERS = ("SimpleImputer", "KNNImputer", "IterativeImputer")
#: How scikit-learn's input check words a value it cannot compute with (infinite, or past float32's range).
TOO_LARGE = "infinity or a value too large"
#: The largest finite float32: scikit-learn's trees refuse what is beyond it.
FLOAT32_MAX = 3.4028234663852886e38
#: Estimators that take NaN as a missing value themselves.
NAN_NATIVE = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


@dataclass(frozen=True)
class InputColumn:
    """One column of the DataFrame a fitted pipeline takes, as ``input_columns`` reads it."""

    name: str
    #: The category strings in the encoder's order (code = index), or () for a number.
    categories: tuple[str, ...] = ()
    #: ``"error"`` or ``"minus_one"`` (see ``lambda_ml_serve.fields``).
    unknown: str = "error"
    #: Whether the pipeline answers NaN/None there (an imputer first, or an estimator that takes NaN).
    nullable: bool = False
    #: Handed over as a pandas Categorical of ``categories`` (HistGradientBoosting's own categorical
    #: features) rather than as strings.
    categorical_dtype: bool = False


def input_columns(estimator: Any) -> list[InputColumn] | None:
    """The columns of a Pipeline led by a ColumnTransformer fitted on a DataFrame, else None.

    Reads the fitted objects' attributes only (no scikit-learn import): each column's encoder gives its
    categories and its rule for unknown ones; an imputer on its way, or a final estimator that takes
    NaN, makes it nullable.
    """
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    first = steps[0]
    names = getattr(first, "feature_names_in_", None)
    known = native_categories(first) if len(steps) == 1 and names is not None else {}
    if known:
        return [
            InputColumn(str(n), tuple(known[j]), "missing", True, True)
            if j in known
            else InputColumn(str(n), (), "error", True)
            for j, n in enumerate(names)
        ]
    if not hasattr(first, "transformers_") or names is None:
        return None
    final = type(steps[-1]).__name__
    columns = {str(n): InputColumn(str(n), nullable=final in NAN_NATIVE) for n in names}
    for _, transformer, selected in first.transformers_:
        if isinstance(transformer, str):
            continue  # "drop" or "passthrough": the column goes on as it is (or nowhere)
        listed = selected.tolist() if hasattr(selected, "tolist") else selected
        if not isinstance(listed, list):
            continue  # a slice or a callable: no per-column encoder to read
        # The remainder lists positions; named transformers list names.
        selected = [str(names[c]) if isinstance(c, int) else str(c) for c in listed]
        chain = [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]
        imputed = any(type(s).__name__ in IMPUTERS for s in chain)
        encoder = next((s for s in chain if type(s).__name__ in ENCODERS), None)
        for j, name in enumerate(selected):
            if name not in columns:
                continue
            column = columns[name]
            nullable = column.nullable or imputed
            if encoder is not None:
                fitted = list(encoder.categories_[j])
                values = [v for v in fitted if isinstance(v, str)]
                unknown = "minus_one" if getattr(encoder, "handle_unknown", "error") in ANSWERS_UNKNOWN else "error"
                # The encoder itself answers None when it answers unknown categories or was fitted with one.
                nullable = imputed or unknown == "minus_one" or len(values) < len(fitted)
                column = InputColumn(name, tuple(values), unknown, nullable)
            else:
                column = InputColumn(name, column.categories, column.unknown, nullable)
            columns[name] = column
    return list(columns.values())


class SklearnPredictor:
    """A loaded estimator answering ``predict`` (or ``predict_proba``) on float64 batches."""

    #: Estimators are fitted and compare in float64 (scikit-learn's default), and those that read float32
    #: (its forests and gradient boosting) narrow their input themselves, as on a DataFrame.
    input_type = "float64"

    def __init__(self, estimator: Any, *, predict_proba: bool = False) -> None:
        import numpy as np

        self._np = np
        self.estimator = estimator
        self._frame = _FrameBuilder(input_columns(estimator))
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

            self._explainer = Explainer(self.estimator, to_input=self._frame if self._frame.columns else None)
        return self._explainer

    def predict(self, batch: Batch) -> list[Any]:
        matrix = self._np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)
        # The framework packs float64 batches for this predictor; a float32 batch (built by other code)
        # is widened exactly. A copy: a transformer fitted with copy=False must not change the batch,
        # which an explanation request predicts again.
        wide = matrix.astype(self._np.float64)
        try:
            return self._np.asarray(self._predict(self._frame(wide) if self._frame.columns else wide)).tolist()
        except ValueError as exc:
            if TOO_LARGE not in str(exc):
                raise
            raise self._too_large(wide, "float32" in str(exc)) from None

    def _too_large(self, matrix: Any, float32: bool) -> Exception:
        """The 422 for rows scikit-learn refuses as too large, as it refuses them on a DataFrame.

        Its forests and gradient boosting read float32 (``float32``: its message names that type), so a
        value past float32's range is refused; a scaler's output past float64's range is refused by
        the estimator after it.
        """
        from lambda_ml_serve.runtime.errors import ApiError, detail
        from lambda_ml_serve.runtime.formats import MAX_ROW_DETAILS

        np = self._np
        names = self.feature_names or [c.name for c in self._frame.columns]
        rows, columns = np.nonzero(np.abs(np.nan_to_num(matrix, nan=0.0)) > FLOAT32_MAX)
        found = list(zip(rows.tolist(), columns.tolist(), strict=True))
        if not (float32 and found):
            return ApiError(
                "validation_error",
                "the model's preprocessing makes a value of these rows infinite, which scikit-learn refuses; "
                "send values within the range the model was trained on",
            )
        details = [
            detail(r, names[c] if len(names) == matrix.shape[1] else None, f"column {c} is too large for the model")
            for r, c in found[:MAX_ROW_DETAILS]
        ]
        return ApiError(
            "validation_error",
            f"{len(set(rows.tolist()))} row(s) hold a value past float32's range (3.4e38), which the model's "
            "scikit-learn trees read and refuse; send values within the range the model was trained on",
            details,
            total=len(found),
        )


class _FrameBuilder:
    """Turns a float64 matrix back into the DataFrame a column-selecting pipeline was fitted on.

    Numbers stay float64 columns; a category's codes become its strings (NaN -> None, -1 -> a string
    the encoder does not know), through one lookup array per column made here, at load.
    """

    def __init__(self, columns: list[InputColumn] | None) -> None:
        self.columns = columns or []
        if not self.columns:
            return
        import numpy as np
        import pandas as pd  # only pipelines fitted on a DataFrame get here; their image carries pandas

        self._np, self._pd = np, pd
        self._names = [c.name for c in self.columns]
        # Index n is an unknown category (code -1), n + 1 a missing one (NaN).
        self._lookups = {
            i: np.array([*c.categories, UNKNOWN_CATEGORY, None], dtype=object)
            for i, c in enumerate(self.columns)
            if c.categories and not c.categorical_dtype
        }
        self._dtypes = {
            i: pd.CategoricalDtype(list(c.categories)) for i, c in enumerate(self.columns) if c.categorical_dtype
        }

    def __call__(self, matrix: Any) -> Any:
        np = self._np
        data: dict[str, Any] = {}
        for i, name in enumerate(self._names):
            column = matrix[:, i]
            dtype = self._dtypes.get(i)
            if dtype is not None:
                # A code is read as the compiled kernel reads it (truncated; negative or past the list:
                # no category), and no category is a missing value (-1), as the model reads an unknown one.
                n = len(dtype.categories)
                with np.errstate(invalid="ignore"):
                    codes = np.where((column >= 0) & (column < n), column, -1)
                data[name] = self._pd.Categorical.from_codes(codes.astype(np.int64), dtype=dtype)
                continue
            lookup = self._lookups.get(i)
            if lookup is not None:
                n = len(lookup) - 2
                index = np.where(np.isnan(column), n + 1, np.where(column < 0, n, np.nan_to_num(column)))
                column = lookup[index.astype(np.intp)]
            data[name] = column
        return self._pd.DataFrame(data, columns=self._names)


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
