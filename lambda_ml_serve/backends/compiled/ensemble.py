"""Build time: read an XGBoost, LightGBM or scikit-learn tree ensemble into one plain form.

treelite's importers read every library's model; this module takes treelite's arrays, refuses in one
line what the kernel cannot compute, and brings every split to one form: ``x < threshold`` goes
left, with a float32 threshold (the batch is float32, so a double ``x <= t`` or ``x < t`` is the same
test on a threshold rounded the right way). It also keeps the source library's own predictor, which
the parity gate compares the compiled library with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.errors import CompileError

if TYPE_CHECKING:
    import numpy as np

    from lambda_ml_serve.spec import ModelSpec

#: The backends whose artifacts the compiled backend reads, and the packages that read them.
SOURCES = {"xgboost": "xgboost-cpu", "lightgbm": "lightgbm", "sklearn": "scikit-learn"}
#: treelite's postprocessors the kernel applies, by the name the generated C uses.
TRANSFORMS = {"identity": "identity", "sigmoid": "sigmoid", "exponential": "exp"}
#: treelite's comparison operators (``Operator`` in its model spec).
_LT, _LE, _GT, _GE = 2, 3, 4, 5
_LEAF, _NUMERICAL = 0, 1
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
class Tree:
    """One tree as node arrays (node 0 is the root; a leaf has ``left == -1``)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    #: float32; ``x < threshold`` goes left.
    threshold: np.ndarray
    #: Where a missing value (NaN) goes.
    default_left: np.ndarray
    #: float64 leaf values (0 on inner nodes).
    value: np.ndarray
    #: Each node's cover (the training rows, or their hessian sum, that reached it): TreeSHAP's weights.
    cover: np.ndarray | None = None

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
    """What the kernel computes: ``transform(base + sum of leaves)`` (the sum averaged if ``average``)."""

    #: The backend the artifact belongs to: xgboost, lightgbm or sklearn.
    source: str
    #: The source library and its version, for the library's metadata.
    library: dict[str, str]
    num_feature: int
    feature_names: list[str] | None
    trees: list[Tree]
    base_score: float
    average: bool
    transform: str
    sigmoid_alpha: float
    #: float (XGBoost sums leaves in float32) or double (LightGBM and scikit-learn sum in float64);
    #: the library answers in the same type.
    accumulator: str
    #: What one answer is: value, probabilities (of two classes) or label; see ``runtime.OUTPUTS``.
    output: str
    classes: list[Any] | None
    #: Whether the source library predicts rows with missing values (some scikit-learn models refuse them).
    accepts_missing: bool
    #: The source library's own predictions on a float32 matrix: the value the kernel computes.
    reference: Callable[[Any], Any]
    #: The source library's answers as served (labels for a label output), for the parity gate.
    served_reference: Callable[[Any], list[Any]] | None
    #: Every split threshold as the source library stores it, per feature (for the parity rows).
    raw_thresholds: list[np.ndarray]
    #: Each tree's depth.
    depths: list[int]

    def max_depth(self) -> int:
        return max(self.depths)


def read_ensemble(artifact: Path, spec: ModelSpec | None) -> Ensemble:
    """Read ``artifact`` as the backend ``spec`` names (or, without a spec, as its content says)."""
    source = _source(artifact, spec)
    _require(source)
    if source == "xgboost":
        return _from_xgboost(artifact)
    if source == "lightgbm":
        return _from_lightgbm(artifact)
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


def _from_xgboost(artifact: Path) -> Ensemble:
    import json

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
    num_class, num_target = int(params.get("num_class", 0)), int(params.get("num_target", 1))
    if num_class > 1 or num_target > 1:
        raise CompileError(
            f"{artifact.name} is a multi-class or multi-target model (objective "
            f"{learner['objective']['name']!r}, num_class={num_class}, num_target={num_target}); the compiled "
            "backend serves single-output models (regression, binary classification): serve this model "
            "with backend 'xgboost'"
        )
    types = booster.feature_types or ()
    if "c" in types:
        names = booster.feature_names or [f"f{j}" for j in range(len(types))]
        categorical = [n for n, t in zip(names, types, strict=True) if t == "c"]
        raise CompileError(
            f"{artifact.name} has categorical features {categorical}; the compiled backend supports "
            "numerical splits only: serve this model with backend 'xgboost'"
        )
    try:
        # Unknown fields are those of a newer xgboost than this treelite; the parity gate then
        # decides whether the model was understood.
        model = treelite.frontend.from_xgboost_json(booster.save_raw("json"), allow_unknown_field=True)
    except treelite.TreeliteError as exc:
        raise CompileError(
            f"treelite {treelite.__version__} cannot read {artifact.name} ({_first_line(exc)}); "
            "upgrade it (pip install -U treelite)"
        ) from None

    def reference(matrix: Any) -> Any:
        return booster.inplace_predict(matrix, validate_features=False)

    return _ensemble(
        model,
        artifact,
        source="xgboost",
        library={"xgboost": xgboost.__version__},
        feature_names=booster.feature_names,
        accumulator="float",
        reference=reference,
    )


def _from_lightgbm(artifact: Path) -> Ensemble:
    import lightgbm
    import treelite

    try:
        booster = lightgbm.Booster(model_file=str(artifact))
    except lightgbm.basic.LightGBMError as exc:
        raise CompileError(f"cannot read {artifact} as a LightGBM text model: {_first_line(exc)}") from None
    dump = booster.dump_model(num_iteration=-1)
    if dump.get("num_class", 1) > 1 or dump.get("num_tree_per_iteration", 1) > 1:
        raise CompileError(
            f"{artifact.name} is a multi-class LightGBM model (objective {dump.get('objective')!r}); the compiled "
            "backend serves single-output models (regression, binary classification): serve it with backend "
            "'lightgbm'"
        )
    categorical = [booster.feature_name()[j] for j in _lightgbm_categorical(dump)]
    if categorical:
        raise CompileError(
            f"{artifact.name} splits on categorical features {categorical}; the compiled backend supports "
            "numerical splits only: serve this model with backend 'lightgbm'"
        )
    try:
        model = treelite.frontend.load_lightgbm_model(str(artifact))
    except treelite.TreeliteError as exc:
        raise CompileError(
            f"treelite {treelite.__version__} cannot read {artifact.name} ({_first_line(exc)})"
        ) from None
    names = booster.feature_name()
    if all(_LIGHTGBM_DEFAULT_NAME.fullmatch(n) for n in names):
        names = None

    def reference(matrix: Any) -> Any:
        return booster.predict(matrix, num_threads=1)

    return _ensemble(
        model,
        artifact,
        source="lightgbm",
        library={"lightgbm": lightgbm.__version__},
        feature_names=names,
        accumulator="double",
        reference=reference,
        zero_band=LIGHTGBM_ZERO,
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

    # A joblib file is a pickle: like the sklearn backend, this reads only the plugin's own artifact.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator = joblib.load(artifact)
    except Exception as exc:
        raise CompileError(
            f"cannot read {artifact} as a joblib file: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    kind = type(estimator).__name__
    if kind not in SKLEARN_ENSEMBLES:
        raise CompileError(
            f"{artifact.name} holds a {kind}; the compiled backend compiles the scikit-learn tree ensembles "
            f"{', '.join(SKLEARN_ENSEMBLES)} (not a Pipeline or another estimator): serve it with backend 'sklearn'"
        )
    classes = getattr(estimator, "classes_", None)
    if classes is not None and len(classes) != 2:
        raise CompileError(
            f"{artifact.name} is a {kind} with {len(classes)} classes; the compiled backend serves regressors and "
            "binary classifiers: serve it with backend 'sklearn'"
        )
    if getattr(estimator, "n_outputs_", 1) != 1 or getattr(estimator, "is_categorical_", None) is not None:
        what = "several outputs" if getattr(estimator, "n_outputs_", 1) != 1 else "categorical features"
        raise CompileError(
            f"{artifact.name} is a {kind} with {what}; the compiled backend serves single-output models with "
            "numerical splits: serve it with backend 'sklearn'"
        )
    try:
        model = treelite.sklearn.import_model(estimator)
    except Exception as exc:
        raise CompileError(f"treelite cannot import {artifact.name} ({kind}): {_first_line(exc)}") from None
    probabilities = bool((spec.extra if spec is not None else {}).get("predict_proba", False))
    output = "value" if classes is None else ("probabilities" if probabilities else "label")

    def reference(matrix: Any) -> Any:
        wide = np.asarray(matrix, dtype=np.float64)  # as the sklearn backend serves
        return estimator.predict(wide) if classes is None else estimator.predict_proba(wide)[:, 1]

    def served(matrix: Any) -> list[Any]:
        return estimator.predict(np.asarray(matrix, dtype=np.float64)).tolist()

    accepts_missing = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reference(np.full((1, estimator.n_features_in_), np.nan, dtype=np.float32))
        except ValueError:
            accepts_missing = False  # trained without missing values: scikit-learn refuses them
    names = getattr(estimator, "feature_names_in_", None)
    return _ensemble(
        model,
        artifact,
        source="sklearn",
        library={"scikit-learn": sklearn.__version__},
        feature_names=None if names is None else [str(n) for n in names],
        accumulator="double",
        reference=reference,
        served_reference=served if output == "label" else None,
        output=output,
        classes=None if classes is None else classes.tolist(),
        accepts_missing=accepts_missing,
    )


def _ensemble(
    model: Any,
    artifact: Path,
    *,
    source: str,
    library: dict[str, str],
    feature_names: Sequence[str] | None,
    accumulator: str,
    reference: Callable[[Any], Any],
    served_reference: Callable[[Any], list[Any]] | None = None,
    output: str = "value",
    classes: list[Any] | None = None,
    accepts_missing: bool = True,
    zero_band: float = 0.0,
) -> Ensemble:
    """The plain form of a treelite model, refusing what the kernel cannot compute.

    ``zero_band``: the source library reads every value within it of zero as zero (LightGBM).
    """
    import numpy as np

    header = model.get_header_accessor()
    num_feature = int(header.get_field("num_feature")[0])
    num_class = [int(c) for c in header.get_field("num_class")]
    leaf_shape = [int(s) for s in header.get_field("leaf_vector_shape")]
    postprocessor = header.get_field("postprocessor")
    binary_vector = leaf_shape == [1, 2] and num_class == [2] and postprocessor == "identity_multiclass"
    if int(header.get_field("num_target")[0]) != 1 or (num_class != [1] and not binary_vector):
        raise CompileError(
            f"{artifact.name} has several outputs (num_target={int(header.get_field('num_target')[0])}, "
            f"num_class={num_class}); the compiled backend serves single-output models"
        )
    transform = "identity" if binary_vector else TRANSFORMS.get(postprocessor)
    if transform is None:
        raise CompileError(
            f"{artifact.name} ends with treelite's {postprocessor!r} transformation; the compiled backend applies "
            f"{', '.join(TRANSFORMS)}: serve this model with backend {source!r}"
        )
    base_scores = header.get_field("base_scores")
    trees = []
    raw: list[list[np.ndarray]] = [[] for _ in range(num_feature)]
    for t in range(model.num_tree):
        accessor = model.get_tree_accessor(t)
        node_type = accessor.get_field("node_type")
        if (node_type > _NUMERICAL).any():
            raise CompileError(
                f"{artifact.name} has categorical splits (tree {t}); the compiled backend supports numerical "
                f"splits only: serve this model with backend {source!r}"
            )
        left, right = accessor.get_field("cleft").astype(np.int32), accessor.get_field("cright").astype(np.int32)
        feature = np.where(left >= 0, accessor.get_field("split_index"), 0).astype(np.int32)
        threshold = accessor.get_field("threshold").astype(np.float64)
        cmp = accessor.get_field("cmp")
        inner = left >= 0
        if (cmp[inner] >= _GT).any():  # written as "x > t goes left": swap the children and test x <= t
            flip = inner & (cmp >= _GT)
            left, right = np.where(flip, right, left), np.where(flip, left, right)
            cmp = np.where(flip, np.where(cmp == _GT, _LE, _LT), cmp)
        if binary_vector:
            begin = accessor.get_field("leaf_vector_begin").astype(np.int64)
            vector = accessor.get_field("leaf_vector").astype(np.float64)
            value = np.where(~inner, vector[np.minimum(begin + 1, max(len(vector) - 1, 0))], 0.0)
        else:
            value = np.where(~inner, accessor.get_field("leaf_value").astype(np.float64), 0.0)
        less_than = _as_less_than(threshold, cmp)
        if zero_band:
            less_than = _around_zero(less_than, threshold, inner & (np.abs(threshold) <= zero_band), zero_band)
        trees.append(
            Tree(
                left=left,
                right=right,
                feature=feature,
                threshold=np.where(inner, less_than, np.float32(0)).astype(np.float32),
                default_left=accessor.get_field("default_left").astype(bool),
                value=value,
                cover=_cover(accessor),
            )
        )
        for j in np.unique(feature[inner]):
            raw[j].append(threshold[inner & (feature == j)])
    return Ensemble(
        source=source,
        library=library,
        num_feature=num_feature,
        feature_names=list(feature_names) if feature_names else None,
        trees=trees,
        base_score=float(base_scores[1] if binary_vector else base_scores[0]),
        average=bool(header.get_field("average_tree_output")[0]),
        transform=transform,
        sigmoid_alpha=float(header.get_field("sigmoid_alpha")[0]),
        accumulator=accumulator,
        output=output,
        classes=classes,
        accepts_missing=accepts_missing,
        reference=reference,
        served_reference=served_reference,
        raw_thresholds=[np.unique(np.concatenate(r)) if r else np.empty(0) for r in raw],
        depths=[tree.depth() for tree in trees],
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
