"""Exact path-dependent TreeSHAP for scikit-learn tree models, read from their own tree structures.

Decision trees, random forests, extra trees, gradient boosting and histogram gradient boosting
(regressors and classifiers), alone or at the end of a Pipeline whose preprocessing maps each input
field to its own columns (scalers, imputers, one-hot and ordinal encoders in a ColumnTransformer):
the contributions of a field's columns are then summed back to the field, which is exact (SHAP
values add up) and said in the explanation's note.

HistGradientBoosting's own categorical features (fitted on a DataFrame's ``category`` columns, or
with ``categorical_features``) are followed as it predicts: a category of the split's bitset goes left,
another known one right, and an unknown category the way a missing value goes. A category field's
value is its code, the index of the category in the model's list (the schema's order).

Margins: a regressor's prediction; a gradient-boosted classifier's log-odds (logistic link, one
output for two classes) or per-class scores (softmax); a forest's or tree's class probabilities
(identity link; the positive class's only, for two classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lambda_ml_serve.backends import treeshap
from lambda_ml_serve.backends.sklearn.categories import HISTOGRAM, native_categories
from lambda_ml_serve.spec import Batch, ExplainUnavailable, Explanation

FORESTS = (
    "DecisionTreeRegressor",
    "DecisionTreeClassifier",
    "ExtraTreeRegressor",
    "ExtraTreeClassifier",
    "RandomForestRegressor",
    "RandomForestClassifier",
    "ExtraTreesRegressor",
    "ExtraTreesClassifier",
)
BOOSTED = ("GradientBoostingRegressor", "GradientBoostingClassifier")
EXPLAINED = (*FORESTS, *BOOSTED, *HISTOGRAM)
#: Preprocessing that maps each input column to its own output column(s).
ONE_TO_ONE = frozenset(
    {
        "StandardScaler",
        "MinMaxScaler",
        "MaxAbsScaler",
        "RobustScaler",
        "SimpleImputer",
        "OrdinalEncoder",
        "FunctionTransformer",
    }
)

#: What a pipeline's explanation says of its contributions (the compiled backend's says the same).
PIPELINE_NOTE = (
    "contributions of the pipeline's input fields: the SHAP values of the columns each field's "
    "preprocessing writes (one-hot columns and the like) summed back to the field"
)


def _refuse(what: str) -> ExplainUnavailable:
    return ExplainUnavailable(
        f"{what}; the sklearn backend explains {', '.join(EXPLAINED)} (alone or after one-hot/ordinal "
        "encoding, imputing and scaling): serve a tree model"
    )


def _sklearn_tree(tree: Any, classes: int | None) -> tuple[treeshap.TreeArrays, np.ndarray]:
    """A fitted ``tree_`` as arrays, and its leaf values per output (nodes x outputs)."""
    t = tree
    value = np.asarray(t.value)[:, 0, :]
    if classes is not None:
        total = value.sum(axis=1, keepdims=True)
        value = np.divide(value, total, out=np.zeros_like(value), where=total > 0)
    missing_left = getattr(t, "missing_go_to_left", None)
    default_left = np.zeros(t.node_count, dtype=bool) if missing_left is None else np.asarray(missing_left, dtype=bool)
    arrays = treeshap.TreeArrays(
        left=np.asarray(t.children_left),
        right=np.asarray(t.children_right),
        feature=np.asarray(t.feature),
        threshold=np.asarray(t.threshold, dtype=np.float64),
        default_left=default_left,
        value=np.zeros(t.node_count),
        cover=np.asarray(t.weighted_n_node_samples, dtype=np.float64),
        le=True,
    )
    return arrays, value


class HistogramLayout:
    """How a HistGradientBoosting model's trees read a row of its input fields.

    With categorical features, the model's preprocessor puts them first (in input order) and the
    numbers after, so a node's ``feature_idx`` is a position in that order; ``input_of`` maps it back.
    ``read`` turns a category field's values into the model's own codes (the index in its
    ``OrdinalEncoder``'s categories), NaN for a missing or unknown category, as the model reads both.
    """

    def __init__(self, estimator: Any) -> None:
        n = int(estimator.n_features_in_)
        self.categories = native_categories(estimator)
        if getattr(estimator, "is_categorical_", None) is not None and not self.categories:
            raise _refuse(
                "this HistGradientBoosting model's categorical features predate scikit-learn 1.4 (no "
                "preprocessor records their categories); refit it with scikit-learn >= 1.4"
            )
        categorical = [j for j in range(n) if j in self.categories]
        self.input_of = np.array(categorical + [j for j in range(n) if j not in self.categories], dtype=np.int64)

    def read(self, x: np.ndarray) -> np.ndarray:
        """Rows of input fields (category codes, or a numeric category's own values) as the trees read them."""
        if not self.categories:
            return x
        x = np.array(x, dtype=np.float64)
        for j, values in self.categories.items():
            column = x[:, j]
            if all(isinstance(v, str) for v in values):
                # A code is read as the served frame reads it: truncated, and no category outside 0..n-1.
                with np.errstate(invalid="ignore"):
                    inside = (column >= 0) & (column < len(values))
                x[:, j] = np.where(inside, np.floor(np.where(inside, column, 0)), np.nan)
            else:  # categories given as numbers: the model's code is the value's index among them
                known = np.asarray(values, dtype=np.float64)
                at = np.clip(np.searchsorted(known, column), 0, len(known) - 1)
                x[:, j] = np.where(known[at] == column, at, np.nan)
        return x


def _histogram_tree(predictor: Any, layout: HistogramLayout) -> treeshap.TreeArrays:
    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool)
    categorical = nodes["is_categorical"].astype(bool) & ~leaf
    left_categories = None
    if categorical.any():
        bitsets = np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32)
        left_categories = tuple(
            bitset_members(bitsets[nodes["bitset_idx"][i]]) if categorical[i] else None for i in range(len(nodes))
        )
    return treeshap.TreeArrays(
        left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
        right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
        feature=np.where(leaf, 0, layout.input_of[nodes["feature_idx"].astype(np.int64)]),
        threshold=nodes["num_threshold"].astype(np.float64),
        default_left=nodes["missing_go_to_left"].astype(bool),
        value=np.where(leaf, nodes["value"], 0.0).astype(np.float64),
        cover=nodes["count"].astype(np.float64),
        le=True,
        left_categories=left_categories,
    )


def bitset_members(words: np.ndarray) -> np.ndarray:
    """The codes a HistGradientBoosting bitset holds (bit ``c % 32`` of word ``c // 32``)."""
    codes = np.arange(32 * len(words))
    return codes[(words[codes >> 5] >> (codes & 31).astype(np.uint32)) & 1 == 1].astype(np.float64)


class _Model:
    """A tree model as sums of trees per output: margin[k] = base[k] + scale * sum of trees[k]."""

    def __init__(self, estimator: Any) -> None:
        kind = type(estimator).__name__
        if kind not in EXPLAINED:
            raise _refuse(f"a {kind} is not a tree model")
        classes = getattr(estimator, "classes_", None)
        n_classes = None if classes is None else len(classes)
        self.link = "identity"
        self.outputs: list[Any] | None = None
        self.trees: list[list[treeshap.TreeArrays]]
        self.scale = 1.0
        self.read: Callable[[np.ndarray], np.ndarray] | None = None
        if kind in FORESTS:
            members = getattr(estimator, "estimators_", [estimator])
            if getattr(estimator, "n_outputs_", 1) != 1:
                raise _refuse(f"this {kind} has several outputs")
            n_out = 1 if n_classes is None or n_classes == 2 else n_classes
            self.trees = [[] for _ in range(n_out)]
            for member in members:
                arrays, value = _sklearn_tree(member.tree_, n_classes)
                columns = [value[:, 0]] if n_classes is None else ([value[:, 1]] if n_classes == 2 else value.T)
                for k, column in enumerate(columns):
                    self.trees[k].append(_with_value(arrays, column))
            self.scale = 1.0 / len(members)
            self.base = np.zeros(n_out)
            if n_classes is not None:
                self.outputs = classes.tolist()[-1:] if n_classes == 2 else classes.tolist()
        elif kind in BOOSTED:
            stages = estimator.estimators_
            n_out = stages.shape[1]
            self.trees = [[] for _ in range(n_out)]
            for stage in stages:
                for k, member in enumerate(stage):
                    arrays, value = _sklearn_tree(member.tree_, None)
                    self.trees[k].append(_with_value(arrays, value[:, 0] * estimator.learning_rate))
            probe = np.zeros((1, estimator.n_features_in_))
            self.base = np.asarray(estimator._raw_predict_init(probe), dtype=np.float64).reshape(-1)
            self._set_classes(classes)
        else:
            predictors = estimator._predictors
            n_out = len(predictors[0]) if predictors else 1
            layout = HistogramLayout(estimator)
            self.read = layout.read if layout.categories else None
            self.trees = [[_histogram_tree(iteration[k], layout) for iteration in predictors] for k in range(n_out)]
            self.base = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(-1)
            self._set_classes(classes)
        self.paths = [[treeshap.leaf_paths(tree) for tree in trees] for trees in self.trees]
        self.expected = np.array(
            [
                self.base[k] + sum(self.scale * treeshap.tree_expected_value(p) for p in self.paths[k])
                for k in range(len(self.trees))
            ]
        )

    def _set_classes(self, classes: Any) -> None:
        if classes is None:
            return
        self.link = "logistic" if len(classes) == 2 else "softmax"
        self.outputs = classes.tolist()[-1:] if len(classes) == 2 else classes.tolist()

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n x outputs expected values, n x outputs x features contributions)."""
        n, f = x.shape
        if self.read is not None:
            x = self.read(x)
        phi = np.zeros((n, len(self.trees), f))
        for k, trees in enumerate(self.trees):
            phi[:, k, :], _ = treeshap.explain_trees(trees, x, scale=self.scale, paths=self.paths[k])
        return np.broadcast_to(self.expected, (n, len(self.trees))).copy(), phi


def _with_value(arrays: treeshap.TreeArrays, value: np.ndarray) -> treeshap.TreeArrays:
    leaf = arrays.left < 0
    return treeshap.TreeArrays(
        arrays.left,
        arrays.right,
        arrays.feature,
        arrays.threshold,
        arrays.default_left,
        np.where(leaf, value, 0.0),
        arrays.cover,
        arrays.le,
        arrays.left_categories,
    )


def _column_sources(preprocess: Any, n_inputs: int) -> list[int]:
    """For each column the preprocessing writes, the input column it comes from; refuses what mixes columns."""
    kind = type(preprocess).__name__
    if kind == "Pipeline":
        sources = list(range(n_inputs))
        for _, step in preprocess.steps:
            if step in (None, "passthrough"):
                continue
            inner = _column_sources(step, len(sources))
            sources = [sources[i] for i in inner]
        return sources
    if kind == "ColumnTransformer":
        sources = []
        names = [str(n) for n in getattr(preprocess, "feature_names_in_", [])]
        for _, transformer, columns in preprocess.transformers_:
            selected = np.atleast_1d(np.arange(n_inputs)[columns] if not _named(columns) else columns)
            indices = [names.index(str(c)) if _named(columns) else int(c) for c in selected]
            if transformer == "drop" or not indices:
                continue
            if transformer == "passthrough":
                sources += indices
                continue
            inner = _column_sources(transformer, len(indices))
            sources += [indices[i] for i in inner]
        return sources
    if kind == "OneHotEncoder":
        sources = []
        drop = getattr(preprocess, "drop_idx_", None)
        for i, categories in enumerate(preprocess.categories_):
            width = len(categories) - (1 if drop is not None and drop[i] is not None else 0)
            if getattr(preprocess, "_infrequent_enabled", False):
                raise _refuse(f"step {kind} groups infrequent categories")
            sources += [i] * width
        return sources
    if kind in ONE_TO_ONE:
        if kind == "SimpleImputer" and getattr(preprocess, "add_indicator", False):
            raise _refuse("a SimpleImputer with add_indicator=True mixes missing-value indicators into the columns")
        return list(range(n_inputs))
    raise _refuse(f"pipeline step {kind} is not a per-column transformation")


def _named(columns: Any) -> bool:
    """Whether a ColumnTransformer selects columns by name (fitted on a DataFrame)."""
    return isinstance(columns, str) or (isinstance(columns, list) and bool(columns) and isinstance(columns[0], str))


class Explainer:
    """Explains a fitted scikit-learn tree model, or a Pipeline ending with one."""

    def __init__(
        self,
        estimator: Any,
        feature_names: Sequence[str] | None = None,
        to_input: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        """``to_input`` turns the float rows into what the pipeline was fitted on (a DataFrame with the
        category strings, for a ColumnTransformer that selects columns by name)."""
        self._to_input = to_input
        self._preprocess = None
        self._sources: list[int] | None = None
        final = estimator
        if type(estimator).__name__ == "Pipeline":
            final = estimator.steps[-1][1]
            if len(estimator.steps) > 1:
                self._preprocess = estimator[:-1]
                n_inputs = int(getattr(estimator, "n_features_in_", 0) or estimator.steps[0][1].n_features_in_)
                self._sources = _column_sources(self._preprocess, n_inputs)
                self._n_inputs = n_inputs
        self._model = _Model(final)
        # scikit-learn's own trees (not HistGradientBoosting's) compare their input as float32: a
        # preprocessed float64 column is rounded so that every split decides as in prediction.
        self._float32 = type(final).__name__ in (*FORESTS, *BOOSTED)
        self.link = self._model.link
        self.outputs = self._model.outputs
        self.note = PIPELINE_NOTE if self._sources is not None else None

    def explain_matrix(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x outputs expected values, rows x outputs x input fields contributions) for float rows ``x``."""
        x = np.asarray(x, dtype=np.float64)
        if self._preprocess is None:
            # The batch is float64 (the client's values): rounded as the trees read it in prediction.
            return self._model.explain(self._as_read(x))
        inputs = self._to_input(x) if self._to_input is not None else x
        transformed = np.asarray(self._preprocess.transform(inputs), dtype=np.float64)
        if hasattr(transformed, "toarray"):
            transformed = transformed.toarray()
        transformed = self._as_read(transformed)
        if transformed.shape[1] != len(self._sources or ()):
            raise _refuse("the pipeline's preprocessing writes another number of columns than its steps describe")
        base, phi = self._model.explain(transformed)
        grouped = np.zeros((*phi.shape[:2], self._n_inputs))
        for column, source in enumerate(self._sources or ()):
            grouped[:, :, source] += phi[:, :, column]
        return base, grouped

    def _as_read(self, x: np.ndarray) -> np.ndarray:
        """The estimator's input as it compares it: rounded to float32 for scikit-learn's own trees."""
        if not self._float32:
            return x
        with np.errstate(over="ignore"):  # past float32's range is infinite, as the trees read it
            return x.astype(np.float32).astype(np.float64)

    def explain(self, batch: Batch) -> Explanation:
        """Exact TreeSHAP of the batch's rows (float32 or float64), in the estimator's margin."""
        matrix = np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)
        base, phi = self.explain_matrix(matrix)
        return Explanation(base.tolist(), phi.tolist(), link=self.link, outputs=self.outputs, note=self.note)
