"""Build time: a scikit-learn Pipeline's column preprocessing folded into its trees' splits.

The kernel of a Pipeline takes the pipeline's own input: one column per input field, in
``feature_names_in_`` order, a categorical field as its code into its encoder's ``categories_``
(-1, or anything that is no code, for an unknown category; NaN for a missing one). Every step the
kernel accepts transforms one input column at a time, and monotonically where it is numerical, so
each split of the trees on a transformed column is a split on one input column:

- imputation and scaling (SimpleImputer, StandardScaler, MinMaxScaler, passthrough): ``f(x) <= t``
  holds exactly for the float32 inputs below one float32 bound, found by bisection with the fitted
  step itself, and a missing value goes the way its imputed value goes;
- encoding (OneHotEncoder, OrdinalEncoder): the codes whose encoded value goes left form a
  category set, and unknown and missing codes go the way their encoded values go.

Nothing of scikit-learn is left for the image: the generated kernel holds only the folded splits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambda_ml_serve.errors import CompileError

#: The steps the kernel folds, by class name.
NUMERICAL_STEPS = ("SimpleImputer", "StandardScaler", "MinMaxScaler")
ENCODERS = ("OneHotEncoder", "OrdinalEncoder")
#: A value no encoder was fitted on: how the reference DataFrame writes an unknown category.
UNKNOWN = "\x00unknown category"


@dataclass(frozen=True)
class Column:
    """One input column of the pipeline."""

    name: str
    #: The encoder's categories when the column is categorical (its codes index them), else None.
    categories: list[Any] | None


@dataclass
class Preprocessing:
    """The fitted preprocessing step of a Pipeline, and what each of its outputs is made from."""

    step: Any
    columns: list[Column]
    #: For each output feature of the step, the input column it is computed from.
    source: list[int]
    #: Whether the estimator reads its input as float32 (scikit-learn's trees) or float64 (HistGradientBoosting).
    float32: bool

    def frame(self, matrix: Any) -> Any:
        """The pandas DataFrame the pipeline is given for a float32 matrix of codes and numbers."""
        import numpy as np
        import pandas as pd

        data = {}
        for j, column in enumerate(self.columns):
            values = np.asarray(matrix[:, j], dtype=np.float64)
            if column.categories is None:
                data[column.name] = values
                continue
            known = len(column.categories)
            code = np.where(np.isfinite(values), np.trunc(np.nan_to_num(values)), -1)
            # As the kernel reads a code: truncated, in [0, known); anything else is unknown.
            cells: list[Any] = [
                column.categories[int(c)] if 0 <= v < known else (np.nan if math.isnan(v) else UNKNOWN)
                for v, c in zip(values.tolist(), code.tolist(), strict=True)
            ]
            data[column.name] = pd.Series(cells, dtype=object)
        return pd.DataFrame(data)

    def outputs(self, matrix: Any) -> Any:
        """The step's output for a float32 input matrix, as the estimator reads it."""
        import numpy as np

        out = np.asarray(self.step.transform(self.frame(matrix)), dtype=np.float64)
        if not self.float32:
            return out
        with np.errstate(over="ignore"):  # past float32's range is infinite, as the estimator reads it
            return out.astype(np.float32).astype(np.float64)

    def fold(self, trees: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The trees' splits on the step's outputs as splits on the pipeline's input columns (see the module).

        All the trees' nodes on one input column are folded together: a few dozen calls of the step per column.
        """
        import numpy as np

        folded = []
        for tree in trees:
            copy = {key: np.array(value, copy=True) for key, value in tree.items() if key != "categories"}
            # The float64 input where a folded numerical split's decision changes (NaN elsewhere), for
            # an estimator that reads float64 (see Ensemble.boundaries).
            copy["boundary"] = np.full(len(copy["left"]), np.nan)
            # Explanations keep the column each split read (see shap.tree_arrays): one node per node.
            folded.append(copy | {"categories": list(tree["categories"]), "explain_feature": copy["feature"].copy()})
        by_column: dict[int, list[tuple[int, int]]] = {}
        for t, tree in enumerate(trees):
            for node in np.flatnonzero(tree["left"] >= 0):
                by_column.setdefault(self.source[int(tree["feature"][node])], []).append((t, int(node)))
        for j, where in by_column.items():
            split = {
                key: np.array([trees[t][key][n] for t, n in where])
                for key in ("feature", "threshold", "cmp", "default_left")
            }
            if self.columns[j].categories is None:
                self._fold_numerical(j, split, where, folded)
            else:
                self._fold_categorical(j, split, where, trees, folded)
            for t, n in where:
                folded[t]["feature"][n] = j
        return folded

    @staticmethod
    def _goes_left(values: Any, split: dict[str, Any]) -> Any:
        """Whether each split sends its transformed value (one per split) left, missing ones included."""
        import numpy as np

        threshold, cmp = split["threshold"], split["cmp"]
        with np.errstate(invalid="ignore"):
            compared = np.select(
                [cmp == 2, cmp == 3, cmp == 4, cmp == 5],
                [values < threshold, values <= threshold, values > threshold, values >= threshold],
            ).astype(bool)
        return np.where(np.isnan(values), split["default_left"], compared)

    def _transformed(self, j: int, inputs: Any) -> Any:
        """The step's outputs, one row per value of ``inputs`` in column j (the others at a fixed valid
        value), the inputs in their own precision (float32, or float64)."""
        import numpy as np

        matrix = np.zeros((len(inputs), len(self.columns)), dtype=np.asarray(inputs).dtype)
        matrix[:, j] = inputs
        return self.outputs(matrix)

    def _at(self, j: int, inputs: Any, split: dict[str, Any]) -> Any:
        """Whether split k sends inputs[k] of column j left."""
        import numpy as np

        outputs = self._transformed(j, inputs)[np.arange(len(inputs)), split["feature"]]
        return self._goes_left(outputs, split)

    def _boundaries(self, j: int, split: dict[str, Any], last_left: Any, first_right: Any) -> Any:
        """For each split, the first float64 input going right, bisected over the doubles between the last
        float32 going left and the first going right (the step is increasing)."""
        import numpy as np

        lo, hi = _order64(_value(last_left)), _order64(_value(first_right))
        while (hi - lo > 1).any():
            mid = lo + (hi - lo) // 2
            left = self._at(j, _value64(mid), split)
            lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
        return _value64(hi)

    def _fold_numerical(self, j: int, split: dict[str, Any], where: list[tuple[int, int]], folded: list) -> None:
        import numpy as np

        # Bisect over float32 bit patterns in their numerical order for the first input going right,
        # between the largest finite float32s (scikit-learn refuses infinities).
        largest = np.finfo(np.float32).max
        lo = np.full(len(where), _order(-largest), dtype=np.int64)
        hi = np.full(len(where), _order(largest), dtype=np.int64)
        left_at_bottom, left_at_top = self._at(j, _value(lo), split), self._at(j, _value(hi), split)
        # Never left: every value goes right (bound -inf); always left: every finite value (bound +inf).
        bound = np.where(left_at_bottom, _order(np.inf), _order(-np.inf))
        searching = left_at_bottom & ~left_at_top
        while searching.any():
            mid = (lo + hi) // 2
            left = self._at(j, _value(mid), split)
            lo, hi = np.where(searching & left, mid, lo), np.where(searching & ~left, mid, hi)
            searching &= hi - lo > 1
        changes = left_at_bottom & ~left_at_top
        bound = _value(np.where(changes, hi, bound)).astype(np.float64)
        boundary = np.full(len(where), np.nan)
        if not self.float32 and changes.any():
            part = {key: value[changes] for key, value in split.items()}
            boundary[changes] = self._boundaries(j, part, lo[changes], hi[changes])
        missing_left = self._at(j, np.full(len(where), np.nan), split)
        for k, (t, n) in enumerate(where):
            folded[t]["node_type"][n] = 1
            folded[t]["threshold"][n] = bound[k]
            folded[t]["cmp"][n] = 2  # x < bound goes left
            folded[t]["default_left"][n] = missing_left[k]
            folded[t]["boundary"][n] = boundary[k]

    def _fold_categorical(
        self, j: int, split: dict[str, Any], where: list[tuple[int, int]], trees: list, folded: list
    ) -> None:
        import numpy as np

        known = len(self.columns[j].categories or [])
        codes = np.array([*range(known), -1.0, np.nan], dtype=np.float32)  # every code, unknown, missing
        outputs = self._transformed(j, codes)
        for k, (t, n) in enumerate(where):
            one = {key: np.full(len(codes), value[k]) for key, value in split.items()}
            left = self._goes_left(outputs[:, split["feature"][k]], one)
            unknown_left, missing_left = bool(left[known]), bool(left[known + 1])
            # The kernel sends a set's codes left and every other one right: the set holds the codes
            # that go otherwise than an unknown one, and the children swap when unknown ones go left.
            members = tuple(c for c in range(known) if bool(left[c]) != unknown_left)
            if unknown_left:
                folded[t]["left"][n], folded[t]["right"][n] = trees[t]["right"][n], trees[t]["left"][n]
            folded[t]["node_type"][n] = 2
            folded[t]["categories"][n] = members
            folded[t]["default_left"][n] = missing_left != unknown_left


def _order(value: float) -> int:
    """A float32's position in numerical order as an integer (negative floats below positive ones)."""
    import numpy as np

    bits = int(np.array(value, dtype=np.float32).view(np.int32))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


def _order64(values: Any) -> Any:
    """Doubles' positions in numerical order as integers (negative doubles below positive ones)."""
    import numpy as np

    bits = np.asarray(values, dtype=np.float64).view(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFFFFFFFFFF))


def _value64(order: Any) -> Any:
    """The doubles at integer positions made by :func:`_order64`."""
    import numpy as np

    order = np.asarray(order, dtype=np.int64)
    bits = np.where(order >= 0, order, (-order) | np.int64(-0x8000000000000000))
    return bits.view(np.float64)


def _value(order: Any) -> Any:
    """The float32s at integer positions made by :func:`_order`."""
    import numpy as np

    order = np.asarray(order, dtype=np.int64)
    bits = np.where(order >= 0, order, (-order) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def preprocessing(pipeline: Any, artifact_name: str) -> tuple[Preprocessing | None, Any]:
    """The preprocessing of a fitted Pipeline and its final estimator; refuses a step it cannot fold."""
    steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
    if len(steps) == 1:
        return None, steps[0]
    if len(steps) != 2:
        names = ", ".join(name for name, _ in pipeline.steps)
        raise CompileError(
            f"{artifact_name}: the compiled backend folds one preprocessing step before the estimator; "
            f"this Pipeline has steps {names}: serve it with backend 'sklearn'"
        )
    step, estimator = steps
    names = [str(n) for n in getattr(step, "feature_names_in_", [])]
    if not names:
        raise CompileError(
            f"{artifact_name}: the Pipeline was fitted without column names; fit it on a pandas DataFrame "
            "so its input fields have names"
        )
    parts = _parts(step, names, artifact_name)
    categories: dict[int, list[Any]] = {}
    for transformer, columns in parts:
        encoder = _encoder(transformer)
        if encoder is not None:
            for k, j in enumerate(columns):
                categories[j] = list(encoder.categories_[k])
    columns = [Column(name, categories.get(j)) for j, name in enumerate(names)]
    float32 = type(estimator).__name__.startswith(("RandomForest", "ExtraTrees", "GradientBoosting"))
    folded = Preprocessing(step, columns, [], float32)
    folded.source = _sources(folded, artifact_name)
    return folded, estimator


def _parts(step: Any, names: list[str], artifact_name: str) -> list[tuple[Any, list[int]]]:
    """(transformer, input column indices) for each part of the step, after checking every transformer."""
    kind = type(step).__name__
    if kind != "ColumnTransformer":
        _check(step, kind, artifact_name)
        return [(step, list(range(len(names))))]
    parts = []
    for name, transformer, columns in step.transformers_:
        if transformer == "drop":
            continue
        indices = _indices(columns, names)
        if transformer != "passthrough":
            _check(transformer, name, artifact_name)
        parts.append((transformer, indices))
    return parts


def _check(transformer: Any, name: str, artifact_name: str) -> None:
    """Refuse in one line, naming the step, a transformer the kernel cannot compute."""
    chain = transformer.steps if type(transformer).__name__ == "Pipeline" else [(name, transformer)]
    encoders = 0
    for step_name, step in chain:
        kind = type(step).__name__
        # A fitted ColumnTransformer keeps a "passthrough" part as an identity FunctionTransformer.
        identity = kind == "FunctionTransformer" and getattr(step, "func", None) is None
        if step == "passthrough" or identity or kind in NUMERICAL_STEPS:
            if kind == "SimpleImputer" and getattr(step, "add_indicator", False):
                raise CompileError(
                    f"{artifact_name}: step {step_name!r} (SimpleImputer with add_indicator) adds columns the "
                    "compiled backend does not compute: serve it with backend 'sklearn'"
                )
            continue
        if kind in ENCODERS:
            encoders += 1
            if getattr(step, "infrequent_categories_", None) is not None and any(
                c is not None for c in step.infrequent_categories_
            ):
                raise CompileError(
                    f"{artifact_name}: step {step_name!r} groups infrequent categories, which the compiled backend "
                    "does not compute: serve it with backend 'sklearn'"
                )
            continue
        raise CompileError(
            f"{artifact_name}: step {step_name!r} is a {kind}, which the compiled backend cannot compute (it folds "
            f"{', '.join((*NUMERICAL_STEPS, *ENCODERS))}, passthrough and drop): serve it with backend 'sklearn'"
        )
    if encoders > 1:
        raise CompileError(f"{artifact_name}: step {name!r} encodes its columns twice; the compiled backend folds one")


def _encoder(transformer: Any) -> Any:
    chain = [s for _, s in transformer.steps] if type(transformer).__name__ == "Pipeline" else [transformer]
    return next((s for s in chain if type(s).__name__ in ENCODERS), None)


def _indices(columns: Any, names: list[str]) -> list[int]:
    import numpy as np

    selected = np.arange(len(names))[columns] if not isinstance(columns, (list, tuple, np.ndarray)) else columns
    return [names.index(c) if isinstance(c, str) else int(c) for c in np.atleast_1d(selected)]


def _sources(folded: Preprocessing, artifact_name: str) -> list[int]:
    """The input column each output depends on, found by varying one input column at a time."""
    import numpy as np

    columns = folded.columns
    n_out = np.asarray(folded.step.transform(folded.frame(np.zeros((1, len(columns)), np.float32)))).shape[1]
    source = [-1] * n_out
    for j, column in enumerate(columns):
        probes = (
            np.arange(len(column.categories), dtype=np.float32)
            if column.categories is not None
            else np.array([-2.5, -1.0, 0.0, 0.5, 3.0, 1e3], dtype=np.float32)
        )
        matrix = np.zeros((len(probes), len(columns)), dtype=np.float32)
        matrix[:, j] = probes
        outputs = np.asarray(folded.step.transform(folded.frame(matrix)), dtype=np.float64)
        for k in np.flatnonzero(np.ptp(outputs, axis=0) > 0):
            if source[k] != -1:
                raise CompileError(f"{artifact_name}: output {k} of the preprocessing mixes several input columns")
            source[k] = j
    # An output no input moves (a constant column) reads any column the same: the first.
    return [max(s, 0) for s in source]


def reference(pipeline: Any, folded: Preprocessing) -> Callable[[Any], Any]:
    """The Pipeline's own prediction on a float32 matrix of the kernel's input."""

    def predict(matrix: Any) -> Any:
        return pipeline.predict(folded.frame(matrix))

    return predict
