"""What a model file says about itself: its format, backend, features (names, types, split values) and task.

One reader per format. Each reads only the model's own metadata; nothing here looks at data.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_ml_serve.modelfiles import (
    ModelFileError,
    check_loads_safely,
    lightgbm_booster,
    load_pickle,
    onnx_model,
    sniff,
    xgboost_booster,
)

KINDS = ("float", "integer", "boolean", "categorical")
FORMAT_NAMES = {"xgboost": "XGBoost", "lightgbm": "LightGBM", "pickle": "pickle", "onnx": "ONNX"}


@dataclass
class Feature:
    """One input column as the model knows it."""

    #: The name requests use for it (the model's own, else ``f<i>`` or the data's column).
    name: str
    kind: str = "float"
    #: Split values the model compares this feature with, sorted (trees only).
    thresholds: list[float] = field(default_factory=list)
    #: Category codes the model knows (categorical features).
    categories: list[int] = field(default_factory=list)
    #: A range the model recorded (LightGBM keeps each feature's training range), else None.
    model_range: tuple[float, float] | None = None
    #: A typical value the model recorded (a scaler's mean), else None.
    centre: float | None = None
    #: Whether requests may leave it empty (null): the model handles missing values, or the data has them.
    nullable: bool = False
    #: A category feature's strings, in the model's order (code = index): requests send these.
    category_strings: list[str] = field(default_factory=list)
    #: What an unknown category string becomes: "error", "missing" or "minus_one" (``lambda_ml_serve.fields``).
    unknown: str = "error"
    #: Other names requests may use for it (the DataFrame's own, where the library renamed the column).
    aliases: list[str] = field(default_factory=list)


@dataclass
class Description:
    """Everything the plugin is generated from, with where each part came from."""

    path: Path
    format: str
    backend: str
    #: e.g. "xgboost.Booster (reg:squarederror)".
    estimator: str
    library: str
    features: list[Feature]
    #: Where the feature names came from: "model", "data" or "generated" (f0..fN).
    names_from: str = "model"
    names_detail: str = ""
    types_detail: str = ""
    task: str = "regression"
    classes: list[Any] | None = None
    #: What one prediction is, for the spec's ``output`` and the README.
    output: str = "the predicted value"
    extra: dict[str, Any] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Example rows the model came with (an MLflow input example), keyed by feature name.
    example_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def describe(path: Path) -> Description:
    """Read ``path`` (XGBoost JSON/UBJ, LightGBM text, scikit-learn joblib/pickle, ONNX)."""
    path = Path(path)
    kind = sniff(path)
    reader = {"xgboost": _xgboost, "lightgbm": _lightgbm, "pickle": _sklearn, "onnx": _onnx}[kind]
    check_loads_safely(path, kind)
    try:
        return reader(path)
    except ModelFileError:
        raise
    except Exception as exc:  # a damaged file fails inside the libraries in many ways; each is one line here
        what = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelFileError(
            f"{path} looks like a {FORMAT_NAMES[kind]} file but cannot be read ({type(exc).__name__}: {what}); "
            "save the model again"
        ) from None


def _version(module: str) -> str:
    """The version of an imported library (its distribution name varies: xgboost or xgboost-cpu)."""
    import importlib

    return importlib.import_module(module).__version__


def generated_names(count: int) -> list[Feature]:
    return [Feature(f"f{i}") for i in range(count)]


def _named(description: Description, names: list[str] | None, count: int | None, where: str) -> None:
    """Set the features' names from the model, or ``f0..fN`` with a warning saying so."""
    if names:
        for feature, name in zip(description.features, names, strict=True):
            feature.name = name
        description.names_from, description.names_detail = "model", where
        return
    description.names_from = "generated"
    description.names_detail = f"none in the file: named f0..f{(count or 1) - 1} by position"
    description.warnings.append(
        f"{description.path.name} stores no feature names: the features are called f0..f{(count or 1) - 1} in "
        "the model's column order; pass --data with a header row to name them"
    )


# -- XGBoost ----------------------------------------------------------------------------------------

XGBOOST_KINDS = {"float": "float", "q": "float", "int": "integer", "i": "boolean", "c": "categorical"}


def _xgboost(path: Path) -> Description:
    booster = xgboost_booster(path)
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    count = booster.num_features()
    names, types = booster.feature_names, booster.feature_types
    features = generated_names(count)
    fmt = "XGBoost JSON" if path.read_bytes()[:2] in (b'{"', b"{\n") else "XGBoost UBJ"
    description = Description(
        path=path,
        format=fmt,
        backend="xgboost",
        estimator=f"xgboost.Booster ({objective})",
        library=f"xgboost {_version('xgboost')}",
        features=features,
    )
    _named(description, list(names) if names else None, count, "the model's feature_names")
    if types:
        for feature, kind in zip(features, types, strict=True):
            feature.kind = XGBOOST_KINDS.get(kind, "float")
        description.types_detail = "the model's feature_types (" + ", ".join(sorted(set(types))) + ")"
    else:
        description.types_detail = "none in the file: every feature is a number"
    by_name = {f.name: f for f in features}
    positional = {f"f{i}": f for i, f in enumerate(features)}
    for tree in booster.get_dump(dump_format="json"):
        _xgboost_splits(json.loads(tree), by_name, positional)
    stored = _xgboost_categories(booster, count)
    for feature, strings in zip(features, stored, strict=True):
        if feature.kind == "categorical" and strings:
            # XGBoost >= 3 re-codes a DataFrame's categories to these and refuses one it was not trained on.
            feature.category_strings, feature.unknown = strings, "error"
    for feature in features:
        feature.nullable = True  # XGBoost takes NaN as missing in every feature
    num_class = int(learner["learner_model_param"].get("num_class", 0))
    if objective.startswith("binary:"):
        description.task = "classification"
        if objective == "binary:hinge":
            description.output = "the predicted class, 0 or 1"
        else:
            description.classes = [0, 1]
            description.output = "the predicted class and the probability of each class"
    elif objective == "multi:softprob":
        description.task, description.classes = "classification", list(range(num_class))
        description.output = "the predicted class and the probability of each class"
    elif objective == "multi:softmax":
        description.task, description.output = "classification", "the predicted class index"
    return description


def _xgboost_splits(node: dict[str, Any], by_name: dict[str, Feature], positional: dict[str, Feature]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        if "split" in current:
            feature = by_name.get(str(current["split"])) or positional.get(str(current["split"]))
            if feature is not None:
                condition = current.get("split_condition")
                if "categories" in current:
                    feature.categories.extend(int(c) for c in current["categories"])
                elif isinstance(condition, list):  # XGBoost >= 3 writes a categorical split's codes here
                    feature.categories.extend(int(c) for c in condition)
                elif condition is not None:
                    feature.thresholds.append(float(condition))
        stack.extend(current.get("children", ()))


def _xgboost_categories(booster: Any, count: int) -> list[list[str]]:
    """Each feature's category strings as XGBoost >= 3 stores them (``cats.enc``: UTF-8 bytes cut at offsets)."""
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    cats = model.get("model", model).get("cats") or model.get("gbtree", {}).get("model", {}).get("cats") or {}
    found: list[list[str]] = [[] for _ in range(count)]
    for i, enc in enumerate(cats.get("enc", ())[:count]):
        offsets, values = enc.get("offsets") or [], enc.get("values") or []
        if offsets and all(isinstance(v, int) for v in values):
            raw = bytes(values)
            found[i] = [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
    return found


def lightgbm_name(name: str) -> str:
    """The name LightGBM stores for a DataFrame column: spaces become underscores (LightGBM's own rule)."""
    return name.replace(" ", "_")


# -- LightGBM ---------------------------------------------------------------------------------------


def _lightgbm(path: Path) -> Description:
    from lambda_ml_serve.backends.lightgbm.runtime import feature_names_of

    booster = lightgbm_booster(path)
    dump = booster.dump_model()
    count = booster.num_feature()
    features = generated_names(count)
    objective = dump.get("objective", "regression").split()
    description = Description(
        path=path,
        format="LightGBM text",
        backend="lightgbm",
        estimator=f"lightgbm.Booster ({objective[0]})",
        library=f"lightgbm {_version('lightgbm')}",
        features=features,
        types_detail="the model's feature_infos (categorical features list their categories)",
    )
    _named(description, feature_names_of(booster), count, "the model's feature_names")
    infos = dump.get("feature_infos", {})
    for feature, raw_name in zip(features, booster.feature_name(), strict=True):
        low, high, categories = _lightgbm_info(infos.get(raw_name))
        if categories:
            feature.kind, feature.categories = "categorical", categories
        elif low is not None and high is not None:
            feature.model_range = (low, high)
        feature.nullable = True  # LightGBM takes NaN as missing in every feature
        if description.names_from == "model" and "_" in feature.name:
            # LightGBM stored "fixed acidity" as "fixed_acidity"; accept the DataFrame's spelling too.
            feature.aliases = [feature.name.replace("_", " ")]
    _lightgbm_categories(booster, description)
    for tree in dump.get("tree_info", ()):
        stack = [tree.get("tree_structure", {})]
        while stack:
            node = stack.pop()
            if "split_feature" in node and node.get("decision_type") != "==":
                features[int(node["split_feature"])].thresholds.append(float(node["threshold"]))
            stack.extend(node[k] for k in ("left_child", "right_child") if k in node)
    if objective[0] in ("binary", "cross_entropy"):
        description.task, description.classes = "classification", [0, 1]
        description.output = "the predicted class and the probability of each class"
    elif objective[0] in ("multiclass", "multiclassova"):
        num_class = int(next(p.split(":")[1] for p in objective if p.startswith("num_class:")))
        description.task, description.classes = "classification", list(range(num_class))
        description.output = "the predicted class and the probability of each class"
    return description


def _lightgbm_categories(booster: Any, description: Description) -> None:
    """Category strings from ``pandas_categorical``: one list per category column of the training DataFrame."""
    stored = getattr(booster, "pandas_categorical", None) or []
    categorical = [f for f in description.features if f.kind == "categorical"]
    if not stored:
        return
    if len(stored) != len(categorical):
        description.warnings.append(
            f"{description.path.name}: pandas_categorical lists {len(stored)} category column(s) but the model has "
            f"{len(categorical)} categorical feature(s); they are served as integer codes"
        )
        return
    for feature, strings in zip(categorical, stored, strict=True):
        if all(isinstance(v, str) for v in strings):
            # LightGBM reads a category its DataFrame did not have as missing (pandas code -1 -> NaN).
            feature.category_strings, feature.unknown = list(strings), "missing"


def _lightgbm_info(info: Any) -> tuple[float | None, float | None, list[int]]:
    """(min, max, categories) from a dump's feature_infos entry: a dict (LightGBM >= 4.6) or "[lo:hi]"/"1:3:5"."""
    if isinstance(info, dict):
        values = [int(v) for v in info.get("values") or () if int(v) >= 0]
        return info.get("min_value"), info.get("max_value"), sorted(values)
    text = str(info or "none")
    if text.startswith("[") and ":" in text:
        low, high = (float(v) for v in text.strip("[]").split(":"))
        return low, high, []
    if text == "none":
        return None, None, []
    return None, None, sorted(int(float(c)) for c in text.split(":") if c and float(c) >= 0)


# -- scikit-learn ------------------------------------------------------------------------------------


def _sklearn(path: Path) -> Description:
    estimator, pins = load_pickle(path)
    names = getattr(estimator, "feature_names_in_", None)
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        raise ModelFileError(
            f"{path}: the {type(estimator).__name__} records no input features (no n_features_in_); "
            "refit it with scikit-learn >= 1.0 on a DataFrame so it knows its columns"
        )
    features = generated_names(int(count))
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    name = " -> ".join(type(s).__name__ for s in steps)
    description = Description(
        path=path,
        format="scikit-learn pickle (joblib)",
        backend="sklearn",
        estimator=name,
        library=f"scikit-learn {_version('sklearn')}",
        features=features,
        types_detail="not recorded by scikit-learn: every feature is a number",
    )
    _named(description, [str(n) for n in names] if names is not None else None, int(count), "feature_names_in_")
    description.requirements = [f"{dist}=={v}" for dist, v in sorted(pins.items())]
    _sklearn_columns(estimator, description)
    first = steps[0]
    if len(steps) > 1 and getattr(first, "mean_", None) is not None and len(first.mean_) == count:
        for feature, mean in zip(features, first.mean_, strict=True):
            feature.centre = float(mean)
    elif len(steps) == 1:
        for tree in _trees(estimator):
            for j, threshold in zip(tree.feature, tree.threshold, strict=True):
                if j >= 0:
                    features[j].thresholds.append(float(threshold))
    if hasattr(estimator, "classes_") and hasattr(estimator, "predict_proba"):
        description.task = "classification"
        description.classes = [c.item() if hasattr(c, "item") else c for c in estimator.classes_]
        description.extra = {"predict_proba": True}
        description.output = "the predicted class and the probability of each class"
    elif hasattr(estimator, "classes_"):
        description.task, description.output = "classification", "the predicted class"
    return description


def _sklearn_columns(estimator: Any, description: Description) -> None:
    """A pipeline led by a ColumnTransformer: category columns from its encoders, nullable ones from its imputers."""
    import importlib.metadata

    from lambda_ml_serve.backends.sklearn.runtime import NAN_NATIVE, input_columns

    columns = input_columns(estimator)
    final = type(estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator).__name__
    if columns is None:
        for feature in description.features:
            feature.nullable = final in NAN_NATIVE
        return
    for feature, column in zip(description.features, columns, strict=True):
        feature.nullable = column.nullable
        if column.categories and not all(isinstance(c, str) for c in column.categories):
            raise ModelFileError(
                f"{description.path}: column {column.name!r} has categories that are not strings; refit the model "
                "with string categories (e.g. X[col].astype(str).astype('category'))"
            )
        if column.categories:
            feature.kind, feature.category_strings, feature.unknown = (
                "categorical",
                list(column.categories),
                column.unknown,
            )
    description.types_detail = "the pipeline's encoders (categories_) and imputers; other columns are numbers"
    if any(c.categorical_dtype for c in columns):
        description.types_detail = (
            "the model's categorical features (its encoder's categories_; an unknown category is read as "
            "missing, as HistGradientBoosting reads it); other columns are numbers"
        )
    # The pipeline is served the DataFrame it was fitted on: the image needs pandas, at this version.
    description.requirements.append(f"pandas=={importlib.metadata.version('pandas')}")
    description.requirements = sorted(set(description.requirements))


def _trees(estimator: Any) -> list[Any]:
    """The fitted ``tree_`` objects of a tree or tree ensemble (RandomForest, GradientBoosting...)."""
    import numpy as np

    if hasattr(estimator, "tree_"):
        return [estimator.tree_]
    members = getattr(estimator, "estimators_", None)
    if members is None:
        return []
    return [m.tree_ for m in np.ravel(np.asarray(members, dtype=object)) if hasattr(m, "tree_")]


# -- ONNX -------------------------------------------------------------------------------------------

#: ONNX TensorProto element types the backend feeds, and the feature kind of each (a string is a category).
ONNX_KINDS = {1: "float", 11: "float", 7: "integer", 6: "integer", 9: "boolean", 8: "categorical"}
ONNX_TREES = ("TreeEnsembleRegressor", "TreeEnsembleClassifier")
#: Operators that pass a column on as it is (selected, reshaped), on the way from an input to its encoder.
ONNX_TRANSFORMS = ("OneHotEncoder", "LabelEncoder", "Scaler", "Imputer", "Normalizer", "Binarizer")
ONNX_PASSING = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Gather", "ArrayFeatureExtractor")


def _onnx(path: Path) -> Description:
    from lambda_ml_serve.backends.onnx.runtime import FEATURE_NAMES_KEY

    model = onnx_model(path)
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    kinds = []
    for item in inputs:
        elem = item.type.tensor_type.elem_type
        if elem not in ONNX_KINDS or (ONNX_KINDS[elem] == "categorical" and len(inputs) == 1):
            raise ModelFileError(
                f"{path}: input {item.name!r} is not a numeric tensor (ONNX type {elem}); the onnx backend feeds "
                "numbers, and strings to one input per category feature: convert the model with float inputs "
                "(e.g. skl2onnx FloatTensorType) and a StringTensorType input per category column"
            )
        kinds.append(ONNX_KINDS[elem])
    meta = {p.key: p.value for p in model.metadata_props}
    description = Description(
        path=path,
        format="ONNX",
        backend="onnx",
        estimator=_onnx_estimator(model),
        library=f"onnx {_version('onnx')}",
        features=[],
        types_detail="the inputs' ONNX element types",
    )
    if len(inputs) == 1:
        dims = inputs[0].type.tensor_type.shape.dim
        width = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value > 0 else None
        if width is None:
            raise ModelFileError(
                f"{path}: its input {inputs[0].name!r} has no fixed number of features (shape "
                f"{[d.dim_value or d.dim_param or '?' for d in dims]}), so the file does not say what a row is; "
                "pass --data with a header row naming the columns in order"
            )
        description.features = [Feature(f"f{i}", kinds[0]) for i in range(width)]
        stored = json.loads(meta[FEATURE_NAMES_KEY]) if FEATURE_NAMES_KEY in meta else None
        _named(description, stored, width, f"the model's {FEATURE_NAMES_KEY} metadata")
    else:
        description.features = [Feature(i.name, k) for i, k in zip(inputs, kinds, strict=True)]
        description.names_from, description.names_detail = "model", "the model's input names (one input per feature)"
        for feature in description.features:
            if feature.kind == "categorical":
                feature.category_strings, feature.unknown = _onnx_categories(graph, feature.name)
                # A graph that answers an unknown string answers a missing one (fed as unknown) too.
                feature.nullable = feature.unknown == "minus_one"
        if "categorical" in kinds:
            description.types_detail += " (a string input is a category: its encoder's categories, or --data's)"
    # Behind encoders and scalers a tree's feature ids index the transformed columns, not the inputs.
    transformed = any(n.op_type in ONNX_TRANSFORMS for n in graph.node)
    for node in graph.node:
        if node.op_type in ONNX_TREES:
            attrs = {a.name: a for a in node.attribute}
            if "nodes_featureids" in attrs and "nodes_values" in attrs and not transformed:
                modes = [m.decode() for m in attrs["nodes_modes"].strings] if "nodes_modes" in attrs else []
                for j, value, mode in zip(
                    attrs["nodes_featureids"].ints, attrs["nodes_values"].floats, modes, strict=False
                ):
                    if mode != "LEAF" and j < len(description.features):
                        description.features[j].thresholds.append(float(value))
            if node.op_type == "TreeEnsembleClassifier":
                labels = attrs.get("classlabels_int64s") or attrs.get("classlabels_strings")
                if labels is not None:
                    description.classes = list(labels.ints) or [s.decode() for s in labels.strings]
        if node.op_type in ("TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier", "ZipMap"):
            description.task = "classification"
    outputs = [o.name for o in graph.output]
    if description.task == "classification" or any("prob" in o.lower() for o in outputs):
        description.task = "classification"
        description.extra = {"predict_proba": True}
        description.output = "the probability of each class, in the order of `classes`"
    return description


def _onnx_categories(graph: Any, name: str) -> tuple[list[str], str]:
    """The categories of string input ``name`` from the encoder that reads it, and its unknown rule.

    Follows the column through operators that pass it on to a OneHotEncoder (``cats_strings``; it
    answers an unknown string with zeros when ``zeros`` is 1, else fails) or a LabelEncoder
    (``keys_strings``; it answers an unknown string with its default). ``([], "error")`` if none reads it.
    """
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        if node.input:
            consumers.setdefault(node.input[0], []).append(node)
    frontier, seen = [name], set()
    while frontier:
        current = frontier.pop(0)
        seen.add(current)
        for node in consumers.get(current, ()):
            attrs = {a.name: a for a in node.attribute}
            if node.op_type == "OneHotEncoder" and "cats_strings" in attrs:
                zeros = attrs["zeros"].i if "zeros" in attrs else 1
                return [v.decode() for v in attrs["cats_strings"].strings], "minus_one" if zeros else "error"
            if node.op_type == "LabelEncoder" and "keys_strings" in attrs:
                return [v.decode() for v in attrs["keys_strings"].strings], "minus_one"
            if node.op_type in ONNX_PASSING:
                frontier.extend(o for o in node.output if o not in seen)
    return [], "error"


def _onnx_estimator(model: Any) -> str:
    ops = [n.op_type for n in model.graph.node]
    main = next((op for op in ops if op not in ("Cast", "Identity", "Reshape", "Concat", "ZipMap")), "graph")
    producer = f"{model.producer_name} {model.producer_version}".strip()
    return f"ONNX {main} ({len(ops)} nodes{', from ' + producer if producer else ''})"


# -- values derived from the model ------------------------------------------------------------------


def typical_values(feature: Feature) -> tuple[float, float]:
    """Two values of ``feature`` the model tells apart: split-value quartiles, else its recorded range or mean."""
    if feature.kind == "boolean":
        return 0.0, 1.0
    if feature.kind == "categorical" and feature.category_strings:
        return 0.0, float(len(feature.category_strings) - 1)
    if feature.kind == "categorical":
        codes = sorted(set(feature.categories)) or [0, 1]
        return float(codes[0]), float(codes[-1] if len(codes) > 1 else codes[0])
    values = sorted(v for v in feature.thresholds if math.isfinite(v))
    if len(values) >= 2:
        low, _, high = statistics.quantiles(values, n=4)
    elif values:
        low = high = values[0]
    elif feature.model_range is not None:
        span = feature.model_range[1] - feature.model_range[0]
        low, high = feature.model_range[0] + span / 4, feature.model_range[1] - span / 4
    elif feature.centre is not None:
        low = high = feature.centre
    else:
        low = high = 0.0
    if feature.kind == "integer" and values:
        # A split "x < t" (XGBoost) or "x <= t" (LightGBM) on an integer parts ceil(t) - 1 from ceil(t).
        return float(math.ceil(low) - 1), float(math.ceil(high))
    if feature.kind == "integer":
        return float(round(low)), float(round(high))
    return low, high
