"""Build time: read an XGBoost, LightGBM or scikit-learn tree ensemble into one plain form.

treelite's importers read every library's model; this module takes treelite's arrays, refuses in one
line what the kernel cannot compute, and brings every split to one form: ``x < threshold`` goes
left, with a float32 threshold (the batch is float32, so a double ``x <= t`` or ``x < t`` is the same
test on a threshold rounded the right way), and a categorical split sends the codes of its set left.
It also keeps the source library's own predictor, which the parity gate compares the compiled
library with.

Categorical codes, as each library reads a float (NaN always takes the node's default direction):
XGBoost truncates a code in [0, 2^24) and treats anything below 0 as outside every set; LightGBM
truncates towards zero first (-0.5 is category 0) and treats a negative integer as outside every set.
Above the largest category of a set, a code is outside it for both.

HistGradientBoosting's own categorical features (a DataFrame's ``category`` columns) are read from its
trees directly, not through treelite: a request's code (the index of its category in the schema's
list) is mapped to the model's own code (the index in its ``OrdinalEncoder``'s categories), and each
split is written so that an unknown category goes where a missing value goes, as the model sends it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.backends.treeshap import NodeArrays
from lambda_ml_serve.errors import CompileError

if TYPE_CHECKING:
    import numpy as np

    from lambda_ml_serve.spec import ModelSpec

#: The backends whose artifacts the compiled backend reads, and the packages that read them.
SOURCES = {"xgboost": "xgboost-cpu", "lightgbm": "lightgbm", "sklearn": "scikit-learn"}
#: treelite's postprocessors the kernel applies, by the name the generated C uses.
TRANSFORMS = {
    "identity": "identity",
    "sigmoid": "sigmoid",
    "exponential": "exp",
    "softmax": "softmax",
    "identity_multiclass": "identity",
}
#: treelite's comparison operators (``Operator`` in its model spec).
_LT, _LE, _GT, _GE = 2, 3, 4, 5
_LEAF, _NUMERICAL, _CATEGORICAL = 0, 1, 2
#: How a source library reads a float as a category code: the smallest float that is a code.
#: XGBoost: anything below 0 is no category; LightGBM: truncated towards zero, so above -1.
#: A Pipeline's encoded columns are read as XGBoost reads them (the fast path sends codes, or -1).
CATEGORY_FLOOR = {"xgboost": ">= 0.0f", "lightgbm": "> -1.0f", "sklearn": ">= 0.0f"}
#: scikit-learn estimators treelite imports and the kernel serves.
SKLEARN_ENSEMBLES = (
    "RandomForestRegressor",
    "RandomForestClassifier",
    "ExtraTreesRegressor",
    "ExtraTreesClassifier",
    "GradientBoostingRegressor",
    "GradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "HistGradientBoostingClassifier",
)
#: LightGBM predicts a value within this of zero as zero (its kZeroThreshold, a float).
LIGHTGBM_ZERO = 1.0000000180025095e-35
#: Names LightGBM gives features when it was trained without any.
_LIGHTGBM_DEFAULT_NAME = re.compile(r"Column_\d+")


@dataclass(frozen=True)
class Tree(NodeArrays):
    """One tree as node arrays: ``threshold`` is float32 and ``x < threshold`` goes left; ``value`` is
    float64, one column per output the tree adds to."""

    #: Per node: -1 for a numerical split (or a leaf), else the index of the category set whose codes go left.
    category_set: np.ndarray
    #: The first output (class) the tree's leaves add to.
    output: int
    #: Each node's cover (the training rows, or their hessian sum, that reached it): TreeSHAP's weights.
    cover: np.ndarray | None = None
    #: A Pipeline's folded tree: per node, the column of the preprocessing's output its split read
    #: (``feature`` is then the input field the folded split reads); None otherwise.
    explain_feature: np.ndarray | None = None

    def depth(self) -> int:
        """The number of splits on the longest path from the root to a leaf."""
        deepest, stack = 0, [(0, 0)]
        while stack:
            node, depth = stack.pop()
            if self.left[node] >= 0:
                stack += [(int(self.left[node]), depth + 1), (int(self.right[node]), depth + 1)]
            else:
                deepest = max(deepest, depth)
        return deepest


@dataclass(frozen=True)
class Ensemble:
    """What the kernel computes per row: ``transform(base + sums of leaves)``, one sum per output (class),
    each averaged over the trees if ``average``."""

    #: The backend the artifact belongs to: xgboost, lightgbm or sklearn.
    source: str
    #: The source library and its version, for the library's metadata.
    library: dict[str, str]
    num_feature: int
    feature_names: list[str] | None
    trees: list[Tree]
    #: One per output.
    base_scores: list[float]
    average: bool
    transform: str
    sigmoid_alpha: float
    #: float (XGBoost sums leaves in float32) or double (LightGBM and scikit-learn sum in float64);
    #: the library answers in the same type.
    accumulator: str
    #: What one answer is: a value, or class probabilities; see ``runtime.OUTPUTS``.
    output: str
    #: Sums per row: 1 (a value, or a binary classifier's positive probability) or the number of classes.
    num_output: int
    classes: list[Any] | None
    #: Category sets (sorted codes), referred to by the trees' ``category_set``.
    category_sets: list[np.ndarray]
    #: Categorical features: index -> the number of categories the model knows (its codes are 0..n-1).
    categories: dict[int, int]
    #: Whether the source library predicts rows with missing values (some scikit-learn models refuse them).
    accepts_missing: bool
    #: The source library's own predictions on a float32 matrix: what the kernel computes, (rows,) or
    #: (rows, num_output).
    reference: Callable[[Any], Any]
    #: The source library's own labels for a classifier (as indices into ``classes``), for the parity gate.
    label_reference: Callable[[Any], list[Any]] | None
    #: Every split threshold as the source library stores it, per feature (for the parity rows).
    raw_thresholds: list[np.ndarray]
    #: Each tree's depth.
    depths: list[int]
    #: A Pipeline's preprocessing: for each column it writes, the input field it is computed from
    #: (explanations sum a field's columns), or None when the trees split on the input itself.
    explain_features: list[int] | None = None
    #: A Pipeline's own input (a DataFrame) for a float32 matrix of the kernel's input, for the
    #: explanation gate's reference; None when the model takes the matrix.
    explain_input: Callable[[Any], Any] | None = None
    #: Rows of the kernel's input with each category as the model's own code, for the explanation gate's
    #: reference (HistGradientBoosting's categorical features); None when the codes are the model's.
    explain_codes: Callable[[Any], Any] | None = None
    #: For a source library that compares float64 values (LightGBM, HistGradientBoosting): per feature,
    #: the sorted points ``B`` where its decisions change (a value below ``B`` on one side, at or above
    #: it on the other). The kernel then takes float64 rows and narrows each value to a float32 on the
    #: same side of every point of its feature (``lms_narrow``). None: the kernel takes float32 rows.
    boundaries: list[np.ndarray] | None = None

    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def leaf_width(self) -> int:
        """Values per leaf: 1, or one per class (scikit-learn forests' class frequencies)."""
        return int(self.trees[0].value.shape[1])


def read_ensemble(artifact: Path, spec: ModelSpec | None) -> Ensemble:
    """Read ``artifact`` as the backend ``spec`` names (or, without a spec, as its content says)."""
    source = _source(artifact, spec)
    _require(source)
    if source == "xgboost":
        return _from_xgboost(artifact, spec)
    if source == "lightgbm":
        return _from_lightgbm(artifact, spec)
    return _from_sklearn(artifact, spec)


def _source(artifact: Path, spec: ModelSpec | None) -> str:
    if spec is not None and spec.backend in SOURCES:
        return spec.backend
    if spec is not None and spec.backend != "compiled":
        raise CompileError(
            f"model {spec.name!r} ({artifact.name}) uses backend {spec.backend!r}; the compiled backend compiles the "
            "artifacts "
            f"of backends {', '.join(SOURCES)}"
        )
    try:
        with artifact.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CompileError(f"cannot read {artifact}: {exc.strerror}") from None
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n"):
        return "lightgbm"
    if head.lstrip()[:1] == b"{":  # JSON and UBJSON objects both open with '{'
        return "xgboost"
    if artifact.suffix in (".joblib", ".pkl", ".pickle") or head[:1] == b"\x80":
        return "sklearn"
    raise CompileError(
        f"{artifact.name} is neither an XGBoost model (JSON/UBJ), a LightGBM text model nor a joblib file; "
        "the compiled backend compiles those"
    )


def _require(source: str) -> None:
    import importlib

    packages = {"numpy": "numpy", "treelite": "treelite", "jinja2": "jinja2", source: SOURCES[source]}
    for module, package in packages.items():
        try:
            importlib.import_module(module)
        except ImportError:
            extra = "" if module in ("numpy", "treelite", "jinja2", "xgboost") else f" and {package}"
            raise CompileError(
                f"the compiled backend needs {package} at build time: pip install 'lambda-ml-serve[compiled]'"
                f"{extra} (in a checkout: pip install '.[compiled]'{extra})"
            ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _from_xgboost(artifact: Path, spec: ModelSpec | None) -> Ensemble:
    import json

    import numpy as np
    import treelite
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(str(artifact))
    except xgboost.core.XGBoostError as exc:
        raise CompileError(f"cannot read {artifact} as an XGBoost model: {_first_line(exc)}") from None
    learner = json.loads(booster.save_config())["learner"]
    kind = learner["gradient_booster"]["name"]
    if kind not in ("gbtree", "dart"):
        raise CompileError(
            f"{artifact.name} is a {kind!r} booster, not a tree ensemble; the compiled backend compiles "
            "tree models (gbtree, dart): serve this model with backend 'xgboost'"
        )
    params = learner["learner_model_param"]
    objective = learner["objective"]["name"]
    num_class, num_target = int(params.get("num_class", 0)), int(params.get("num_target", 1))
    if num_target > 1:
        raise CompileError(
            f"{artifact.name} is a multi-target model (objective {objective!r}, num_target={num_target}); the "
            "compiled backend serves one target (regression or classification): serve it with backend 'xgboost'"
        )
    document = json.loads(booster.save_raw("json"))
    model_json = document["learner"]["gradient_booster"]["model"]
    # XGBoost >= 3 stores the training categories' names beside the trees; treelite does not read them yet,
    # and the kernel needs only their number: a request's category is its code in that list.
    encodings = model_json.pop("cats", {}).get("enc", [])
    types = booster.feature_types or ()
    categories = {}
    for j, kind_of in enumerate(types):
        if kind_of == "c":
            known = encodings[j] if j < len(encodings) else {}
            offsets = known.get("offsets") or []
            categories[j] = len(offsets) - 1 if offsets else len(known.get("values") or [])
    try:
        # Unknown fields are those of a newer xgboost than this treelite; the parity gate then
        # decides whether the model was understood.
        model = treelite.frontend.from_xgboost_json(json.dumps(document), allow_unknown_field=True)
    except treelite.TreeliteError as exc:
        raise CompileError(
            f"treelite {treelite.__version__} cannot read {artifact.name} ({_first_line(exc)}); "
            "upgrade it (pip install -U treelite)"
        ) from None
    classifier = objective in ("binary:logistic", "multi:softprob", "multi:softmax")
    # multi:softmax answers the index of the likeliest class; its probabilities are softprob's.
    probabilities = booster.copy()
    if objective == "multi:softmax":
        probabilities.set_param({"objective": "multi:softprob"})

    def reference(matrix: Any) -> Any:
        return probabilities.inplace_predict(matrix, validate_features=False)

    def labels(matrix: Any) -> list[Any]:
        predicted = reference(matrix)
        index = (predicted > 0.5).astype(int) if predicted.ndim == 1 else np.argmax(predicted, axis=1)
        return index.tolist()

    return _ensemble(
        model,
        artifact,
        source="xgboost",
        library={"xgboost": xgboost.__version__},
        feature_names=booster.feature_names,
        accumulator="float",
        reference=reference,
        label_reference=labels if classifier else None,
        classes=_classes(spec, max(num_class, 2)) if classifier else None,
        categories=categories,
    )


def _classes(spec: ModelSpec | None, count: int) -> list[Any]:
    """A classifier's labels when its file holds only their indices: ``ModelSpec.classes`` (or the older
    ``extra["classes"]`` option), else 0..n-1."""
    named = None if spec is None else (spec.classes if spec.classes is not None else spec.extra.get("classes"))
    if named is None:
        return list(range(count))
    if not isinstance(named, (list, tuple)) or len(named) != count:
        raise CompileError(f"model {spec.name!r}: its classes must list the model's {count} classes")
    return list(named)


def _from_lightgbm(artifact: Path, spec: ModelSpec | None) -> Ensemble:
    import lightgbm
    import numpy as np
    import treelite

    try:
        booster = lightgbm.Booster(model_file=str(artifact))
    except lightgbm.basic.LightGBMError as exc:
        raise CompileError(f"cannot read {artifact} as a LightGBM text model: {_first_line(exc)}") from None
    dump = booster.dump_model(num_iteration=-1)
    num_class = int(dump.get("num_class", 1))
    objective = str(dump.get("objective", "")).split()[0] if dump.get("objective") else ""
    try:
        model = treelite.frontend.load_lightgbm_model(str(artifact))
    except treelite.TreeliteError as exc:
        raise CompileError(
            f"treelite {treelite.__version__} cannot read {artifact.name} ({_first_line(exc)})"
        ) from None
    names = booster.feature_name()
    if all(_LIGHTGBM_DEFAULT_NAME.fullmatch(n) for n in names):
        names = None
    # The categories a pandas DataFrame had at training (their codes are the model's), else the codes
    # the trees name: LightGBM keeps no list of its own.
    categorical = sorted(_lightgbm_categorical(dump))
    known = [len(c) for c in (booster.pandas_categorical or [])]
    categories = {j: known[k] if k < len(known) else 0 for k, j in enumerate(categorical)}
    classifier = objective in ("binary", "multiclass", "softmax")

    def reference(matrix: Any) -> Any:
        return booster.predict(matrix, num_threads=1)

    def labels(matrix: Any) -> list[Any]:
        predicted = reference(matrix)
        index = (predicted > 0.5).astype(int) if predicted.ndim == 1 else np.argmax(predicted, axis=1)
        return index.tolist()

    return _ensemble(
        model,
        artifact,
        source="lightgbm",
        library={"lightgbm": lightgbm.__version__},
        feature_names=names,
        accumulator="double",
        reference=reference,
        label_reference=labels if classifier else None,
        classes=_classes(spec, max(num_class, 2)) if classifier else None,
        categories=categories,
        zero_band=LIGHTGBM_ZERO,
        float64=True,
    )


def _lightgbm_categorical(dump: dict[str, Any]) -> set[int]:
    """Features any tree of a LightGBM dump splits on as categories."""
    found: set[int] = set()
    stack = [tree["tree_structure"] for tree in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            if node.get("decision_type") == "==":
                found.add(node["split_feature"])
            stack += [node["left_child"], node["right_child"]]
    return found


def _from_sklearn(artifact: Path, spec: ModelSpec | None) -> Ensemble:
    import warnings

    import joblib
    import numpy as np
    import sklearn
    import treelite.sklearn

    from lambda_ml_serve.backends.compiled import pipeline

    # A joblib file is a pickle: like the sklearn backend, this reads only the plugin's own artifact.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = joblib.load(artifact)
    except Exception as exc:
        raise CompileError(
            f"cannot read {artifact} as a joblib file: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    folded, estimator = (None, loaded)
    if type(loaded).__name__ == "Pipeline":
        folded, estimator = pipeline.preprocessing(loaded, artifact.name)
    kind = type(estimator).__name__
    if kind not in SKLEARN_ENSEMBLES:
        raise CompileError(
            f"{artifact.name} holds a {kind}; the compiled backend compiles the scikit-learn tree ensembles "
            f"{', '.join(SKLEARN_ENSEMBLES)} (alone or after a ColumnTransformer): serve it with backend 'sklearn'"
        )
    classes = getattr(estimator, "classes_", None)
    if getattr(estimator, "n_outputs_", 1) != 1:
        raise CompileError(
            f"{artifact.name} is a {kind} with several outputs; the compiled backend serves single-output models: "
            "serve it with backend 'sklearn'"
        )
    native = None
    if getattr(estimator, "is_categorical_", None) is not None:
        native = _NativeCategories(estimator, artifact.name, spec, folded is not None)
        model = native.model()
    else:
        try:
            model = treelite.sklearn.import_model(estimator)
        except Exception as exc:
            raise CompileError(f"treelite cannot import {artifact.name} ({kind}): {_first_line(exc)}") from None

    def given(matrix: Any) -> Any:
        """What the model file is given: the DataFrame of a Pipeline or of a model with categories, else
        the matrix in float64."""
        if native is not None:
            return native.frame(matrix)
        return folded.frame(matrix) if folded is not None else np.asarray(matrix, dtype=np.float64)

    def reference(matrix: Any) -> Any:
        if classes is None:
            return loaded.predict(given(matrix))
        probabilities = loaded.predict_proba(given(matrix))
        return probabilities[:, 1] if len(classes) == 2 else probabilities

    def labels(matrix: Any) -> list[Any]:
        return np.searchsorted(classes, loaded.predict(given(matrix))).tolist()  # classes_ is sorted

    num_feature = len(folded.columns) if folded is not None else int(estimator.n_features_in_)
    accepts_missing = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference(np.full((1, num_feature), np.nan, dtype=np.float32))
        except ValueError:
            accepts_missing = False  # trained without missing values: scikit-learn refuses them
    if folded is not None:
        names: Any = [c.name for c in folded.columns]
        categories = {j: len(c.categories) for j, c in enumerate(folded.columns) if c.categories is not None}
    else:
        names = getattr(estimator, "feature_names_in_", None)
        categories = {} if native is None else {j: len(serving) for j, serving in native.serving.items()}
    return _ensemble(
        model,
        artifact,
        source="sklearn",
        library={"scikit-learn": sklearn.__version__},
        feature_names=None if names is None else [str(n) for n in names],
        accumulator="double",
        reference=reference,
        label_reference=None if classes is None else labels,
        classes=None if classes is None else classes.tolist(),
        categories=categories,
        accepts_missing=accepts_missing,
        fold=None if folded is None else folded.fold,
        num_feature=num_feature,
        explain_features=None if folded is None else list(folded.source),
        explain_input=None if folded is None else folded.frame,
        explain_codes=None if native is None else native.model_codes,
        # HistGradientBoosting compares float64 values (after a Pipeline's preprocessing, computed in
        # float64 too); the forests read float32 themselves.
        float64=kind.startswith("HistGradientBoosting"),
    )


class _NativeCategories:
    """A HistGradientBoosting model with its own categorical features, as the kernel reads it.

    ``serving[j]``: the category strings of input column ``j`` in the order of the codes requests are
    packed with (the schema's ``Category`` list, else the model's own); ``to_model[j][c]``: the model's
    code of serving code ``c`` (-1: a category the model does not know).
    """

    def __init__(self, estimator: Any, artifact_name: str, spec: ModelSpec | None, in_pipeline: bool) -> None:
        import numpy as np

        from lambda_ml_serve.backends.sklearn.explain import HistogramLayout

        kind = type(estimator).__name__
        layout = HistogramLayout(estimator)
        strings = all(isinstance(v, str) for values in layout.categories.values() for v in values)
        if in_pipeline or not strings or getattr(estimator, "feature_names_in_", None) is None:
            raise CompileError(
                f"{artifact_name} is a {kind} with categorical features "
                f"{'after preprocessing' if in_pipeline else 'given as numbers'}; the compiled backend compiles "
                "those fitted on a DataFrame's string 'category' columns: serve it with backend 'sklearn'"
            )
        self.estimator, self.layout = estimator, layout
        declared = _schema_categories(spec, int(estimator.n_features_in_))
        self.serving: dict[int, list[str]] = {}
        self.to_model: dict[int, Any] = {}
        for j, model_order in layout.categories.items():
            serving = declared.get(j) or list(model_order)
            index = {v: i for i, v in enumerate(model_order)}
            self.serving[j] = serving
            self.to_model[j] = np.array([index.get(v, -1) for v in serving], dtype=np.int64)

    def model(self) -> Any:
        """The trees as a treelite model: numerical splits as they are, each categorical one as a set of
        serving codes, written so that codes outside every set go the missing value's way."""
        import numpy as np
        from treelite.model_builder import Metadata, ModelBuilder, PostProcessorFunc, TreeAnnotation

        from lambda_ml_serve.backends.sklearn.explain import bitset_members

        estimator = self.estimator
        predictors = estimator._predictors
        per_iteration = len(predictors[0]) if predictors else 1
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            task = "kRegressor"
            postprocessor = "exponential" if estimator.loss in ("poisson", "gamma") else "identity"
        else:
            task, postprocessor = ("kBinaryClf", "sigmoid") if len(classes) == 2 else ("kMultiClf", "softmax")
        builder = ModelBuilder(
            threshold_type="float64",
            leaf_output_type="float64",
            metadata=Metadata(int(estimator.n_features_in_), task, False, 1, [per_iteration], (1, 1)),
            tree_annotation=TreeAnnotation(
                len(predictors) * per_iteration,
                [0] * (len(predictors) * per_iteration),
                [k for _ in predictors for k in range(per_iteration)],
            ),
            postprocessor=PostProcessorFunc(postprocessor),
            base_scores=[float(v) for v in np.ravel(estimator._baseline_prediction)],
        )
        for iteration in predictors:
            for predictor in iteration:
                nodes, bitsets = predictor.nodes, np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32)
                builder.start_tree()
                for i, node in enumerate(nodes):
                    builder.start_node(i)
                    if node["is_leaf"]:
                        builder.leaf(float(node["value"]))
                    else:
                        j = int(self.layout.input_of[int(node["feature_idx"])])
                        missing_left = bool(node["missing_go_to_left"])
                        children = {"left_child_key": int(node["left"]), "right_child_key": int(node["right"])}
                        if node["is_categorical"]:
                            model_left = set(bitset_members(bitsets[node["bitset_idx"]]).astype(int).tolist())
                            codes = self.to_model[j]
                            left = [c for c, m in enumerate(codes) if m in model_left]
                            known_right = [c for c, m in enumerate(codes) if m >= 0 and m not in model_left]
                            # A set's non-members (unknown codes too) take the other child: the missing one's.
                            builder.categorical_test(
                                j,
                                default_left=missing_left,
                                category_list=known_right if missing_left else left,
                                category_list_right_child=missing_left,
                                **children,
                            )
                        else:
                            builder.numerical_test(
                                j, float(node["num_threshold"]), default_left=missing_left, opname="<=", **children
                            )
                    builder.data_count(int(node["count"]))
                    builder.end_node()
                builder.end_tree()
        return builder.commit()

    def frame(self, matrix: Any) -> Any:
        """The DataFrame the model predicts for rows of serving codes: each category column a Categorical
        of its serving strings (a code outside them is no category: missing, as the model reads it)."""
        import numpy as np
        import pandas as pd

        matrix = np.asarray(matrix, dtype=np.float64)
        data: dict[str, Any] = {}
        for j, name in enumerate(self.estimator.feature_names_in_):
            column = matrix[:, j]
            serving = self.serving.get(j)
            if serving is not None:
                with np.errstate(invalid="ignore"):
                    codes = np.where((column >= 0) & (column < len(serving)), column, -1).astype(np.int64)
                column = pd.Categorical.from_codes(codes, categories=serving)
            data[str(name)] = column
        return pd.DataFrame(data)

    def model_codes(self, matrix: Any) -> Any:
        """Rows of serving codes with each category as the model's own code (NaN: none it knows)."""
        import numpy as np

        matrix = np.array(matrix, dtype=np.float64)
        for j, codes in self.to_model.items():
            column = matrix[:, j]
            with np.errstate(invalid="ignore"):
                inside = (column >= 0) & (column < len(codes))
            mapped = codes[np.where(inside, column, 0).astype(np.int64)]
            matrix[:, j] = np.where(inside & (mapped >= 0), mapped, np.nan)
        return matrix


def _schema_categories(spec: ModelSpec | None, count: int) -> dict[int, list[str]]:
    """The category strings a spec's schema declares, by field position (``Category`` fields only)."""
    import typing

    from lambda_ml_serve.fields import Category

    if spec is None:
        return {}
    found: dict[int, list[str]] = {}
    for j, info in enumerate(list(spec.schema.model_fields.values())[:count]):
        candidates = [
            *info.metadata,
            *(m for a in typing.get_args(info.annotation) for m in getattr(a, "__metadata__", ())),
        ]
        category = next((m for m in candidates if isinstance(m, Category)), None)
        if category is not None:
            found[j] = list(category.categories)
    return found


def _ensemble(
    model: Any,
    artifact: Path,
    *,
    source: str,
    library: dict[str, str],
    feature_names: Sequence[str] | None,
    accumulator: str,
    reference: Callable[[Any], Any],
    label_reference: Callable[[Any], list[Any]] | None = None,
    classes: list[Any] | None = None,
    categories: dict[int, int] | None = None,
    accepts_missing: bool = True,
    zero_band: float = 0.0,
    fold: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    num_feature: int | None = None,
    explain_features: list[int] | None = None,
    explain_input: Callable[[Any], Any] | None = None,
    explain_codes: Callable[[Any], Any] | None = None,
    float64: bool = False,
) -> Ensemble:
    """The plain form of a treelite model, refusing what the kernel cannot compute.

    ``classes``: a classifier's labels (its answers are then their probabilities). ``categories``:
    the categorical features and how many categories the model knows of each. ``zero_band``: the
    source library reads every value within it of zero as zero (LightGBM). ``fold`` rewrites all the trees'
    splits onto ``num_feature`` other input columns (a Pipeline's preprocessing, see :mod:`.pipeline`);
    ``explain_features`` and ``explain_input`` are then what its explanations need (see :class:`Ensemble`).
    ``float64``: the source library compares float64 values: the ensemble gets the ``boundaries`` of
    its numerical splits.
    """
    import numpy as np

    header = model.get_header_accessor()
    num_feature = num_feature or int(header.get_field("num_feature")[0])
    num_class = int(header.get_field("num_class")[0])
    leaf_shape = [int(s) for s in header.get_field("leaf_vector_shape")]
    postprocessor = header.get_field("postprocessor")
    # A scikit-learn forest of two classes stores both frequencies per leaf; the second is the answer.
    binary_vector = leaf_shape == [1, 2] and num_class == 2 and postprocessor == "identity_multiclass"
    num_target = int(header.get_field("num_target")[0])
    if num_target != 1:
        raise CompileError(
            f"{artifact.name} has {num_target} targets; the compiled backend serves one target "
            f"(regression or classification): serve this model with backend {source!r}"
        )
    transform = TRANSFORMS.get(postprocessor)
    if transform is None:
        raise CompileError(
            f"{artifact.name} ends with treelite's {postprocessor!r} transformation; the compiled backend applies "
            f"{', '.join(TRANSFORMS)}: serve this model with backend {source!r}"
        )
    num_output = 1 if binary_vector else num_class
    class_ids = header.get_field("class_id")
    base_scores = [float(v) for v in header.get_field("base_scores")]
    base_scores = base_scores[1:2] if binary_vector else base_scores[:num_output]
    sets: dict[tuple[int, ...], int] = {}
    trees = []
    raw: list[list[np.ndarray]] = [[] for _ in range(num_feature)]
    points: list[list[np.ndarray]] = [[] for _ in range(num_feature)]
    accessors = [model.get_tree_accessor(t) for t in range(model.num_tree)]
    every = [_tree_arrays(accessor) for accessor in accessors]
    if fold is not None:
        every = fold(every)
    for t, (accessor, arrays) in enumerate(zip(accessors, every, strict=True)):
        left, right, cmp = arrays["left"], arrays["right"], arrays["cmp"]
        inner = left >= 0
        categorical = inner & (arrays["node_type"] == _CATEGORICAL)
        feature = np.where(inner, arrays["feature"], 0).astype(np.int32)
        threshold = arrays["threshold"]
        default_left = arrays["default_left"]
        # Every split to one form: "x < t" goes left, a category of the set goes left.
        flip = inner & ~categorical & (cmp >= _GT)  # written as "x > t goes left": swap, test x <= t
        cmp = np.where(flip, np.where(cmp == _GT, _LE, _LT), cmp)
        flip |= categorical & arrays["right_child"]
        left, right = np.where(flip, right, left), np.where(flip, left, right)
        default_left = np.where(flip, ~default_left, default_left)
        category_set = np.full(len(left), -1, dtype=np.int32)
        for node in np.flatnonzero(categorical):
            category_set[node] = sets.setdefault(tuple(sorted(arrays["categories"][node])), len(sets))
        value = _leaf_values(accessor, inner, binary_vector, leaf_shape[1])
        less_than = _as_less_than(threshold, cmp)
        if zero_band:
            less_than = _around_zero(less_than, threshold, inner & (np.abs(threshold) <= zero_band), zero_band)
        numerical = inner & ~categorical
        trees.append(
            Tree(
                left=left,
                right=right,
                feature=feature,
                threshold=np.where(numerical, less_than, np.float32(0)).astype(np.float32),
                default_left=default_left,
                value=value,
                category_set=category_set,
                output=max(int(class_ids[t]), 0),
                cover=_cover(accessor),
                explain_feature=arrays.get("explain_feature"),
            )
        )
        # Where the library's float64 test changes: x < t below t, x <= t below the double after t; for a
        # Pipeline's folded split, where its preprocessing and test change together (NaN: nowhere).
        boundary = arrays.get("boundary", np.where(cmp == _LE, np.nextafter(threshold, np.inf), threshold))
        for j in np.unique(feature[numerical]):
            raw[j].append(threshold[numerical & (feature == j)])
            points[j].append(boundary[numerical & (feature == j) & ~np.isnan(boundary)])
            if zero_band:  # LightGBM reads a value within the band of zero as zero
                points[j].append(np.array([-zero_band, np.nextafter(zero_band, np.inf)]))
    category_sets = [np.array(members, dtype=np.int64) for members in sets]
    known = dict(categories or {})
    for tree in trees:  # a code a tree names is one the model knows, whatever its metadata says
        for node in np.flatnonzero(tree.category_set >= 0):
            members = category_sets[tree.category_set[node]]
            j = int(tree.feature[node])
            known[j] = max(known.get(j, 0), int(members.max()) + 1 if len(members) else 0)
    return Ensemble(
        source=source,
        library=library,
        num_feature=num_feature,
        feature_names=list(feature_names) if feature_names else None,
        trees=trees,
        base_scores=base_scores,
        average=bool(header.get_field("average_tree_output")[0]),
        transform=transform,
        sigmoid_alpha=float(header.get_field("sigmoid_alpha")[0]),
        accumulator=accumulator,
        output="value" if classes is None else "probabilities",
        num_output=num_output,
        classes=classes,
        category_sets=category_sets,
        categories=dict(sorted(known.items())),
        accepts_missing=accepts_missing,
        reference=reference,
        label_reference=label_reference,
        raw_thresholds=[np.unique(np.concatenate(r)) if r else np.empty(0) for r in raw],
        depths=[tree.depth() for tree in trees],
        explain_features=explain_features,
        explain_input=explain_input,
        explain_codes=explain_codes,
        boundaries=[np.unique(np.concatenate(p)) if p else np.empty(0) for p in points] if float64 else None,
    )


def _cover(accessor: Any) -> np.ndarray | None:
    """A tree's node covers as the source library's TreeSHAP weighs them: XGBoost's and scikit-learn's
    hessian sums (sample weights), LightGBM's row counts."""
    import numpy as np

    for field in ("sum_hess", "data_count"):
        present = accessor.get_field(f"{field}_present")
        if len(present) and present.all():
            return accessor.get_field(field).astype(np.float64)
    return None


def _tree_arrays(accessor: Any) -> dict[str, Any]:
    """A treelite tree's split arrays, categories as one tuple per node (empty on other nodes)."""
    import numpy as np

    node_type = accessor.get_field("node_type")
    arrays = {
        "node_type": node_type,
        "left": accessor.get_field("cleft").astype(np.int32),
        "right": accessor.get_field("cright").astype(np.int32),
        "feature": accessor.get_field("split_index").astype(np.int32),
        "threshold": accessor.get_field("threshold").astype(np.float64),
        "cmp": accessor.get_field("cmp"),
        "default_left": accessor.get_field("default_left").astype(bool),
        "right_child": np.zeros(len(node_type), dtype=bool),
        "categories": [()] * len(node_type),
    }
    if (node_type == _CATEGORICAL).any():
        codes = accessor.get_field("category_list")
        begin, end = accessor.get_field("category_list_begin"), accessor.get_field("category_list_end")
        arrays["categories"] = [tuple(int(c) for c in codes[b:e]) for b, e in zip(begin, end, strict=True)]
        arrays["right_child"] = accessor.get_field("category_list_right_child").astype(bool)
    return arrays


def _leaf_values(accessor: Any, inner: np.ndarray, binary_vector: bool, width: int) -> np.ndarray:
    """Leaf values as (nodes, width): one column, or one per class for leaf vectors (0 on inner nodes)."""
    import numpy as np

    if not binary_vector and width == 1:
        return np.where(~inner, accessor.get_field("leaf_value").astype(np.float64), 0.0)[:, None]
    begin = accessor.get_field("leaf_vector_begin").astype(np.int64)
    vector = accessor.get_field("leaf_vector").astype(np.float64)
    if binary_vector:
        second = vector[np.minimum(begin + 1, max(len(vector) - 1, 0))]
        return np.where(~inner, second, 0.0)[:, None]
    rows = np.zeros((len(inner), width))
    for node in np.flatnonzero(~inner):
        rows[node] = vector[begin[node] : begin[node] + width]
    return rows


def _as_less_than(threshold: np.ndarray, cmp: np.ndarray) -> np.ndarray:
    """The float32 ``T`` such that, for every float32 ``x``, ``x < T`` is ``x <op> threshold``.

    ``x <= t`` holds for a float32 x exactly when x is at most the largest float32 not above t, that
    is when x is below the float32 after it; ``x < t`` holds when x is below the smallest float32
    not below t.
    """
    import numpy as np

    t32 = threshold.astype(np.float32)  # round to nearest; adjusted below to the right neighbour
    inf = np.float32(np.inf)
    down = np.where(t32.astype(np.float64) > threshold, np.nextafter(t32, -inf), t32)  # largest <= t
    up = np.where(t32.astype(np.float64) < threshold, np.nextafter(t32, inf), t32)  # smallest >= t
    return np.where(cmp == _LE, np.nextafter(down, inf), up).astype(np.float32)


def _around_zero(less_than: np.ndarray, threshold: np.ndarray, near: np.ndarray, band: float) -> np.ndarray:
    """Thresholds for a library that reads every value in [-band, band] as 0, where it matters.

    Only a threshold inside the band sees a difference: the band's values all go the way 0 goes
    (left when ``0 <= t``), values below it left and above it right.
    """
    import numpy as np

    edge = np.float32(band)
    return np.where(near, np.where(threshold >= 0, np.nextafter(edge, np.float32(np.inf)), -edge), less_than)
