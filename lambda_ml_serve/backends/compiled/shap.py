"""Build time: exact path-dependent TreeSHAP for the compiled kernel, generated in C, and its parity gate.

The C (``shap.c.j2``) reads its own tables, derived here from the same :class:`~.ensemble.Ensemble`
the kernel is generated from: each tree's nodes in depth-first order, each leaf's path (its unique
features, their merged cover ratios ``z``, and ``(1 - z) / z``), the Shapley weights and every
output's expected value. Everything that depends only on the model is computed here or, for the
per-leaf tables that would make the library large, by ``lms_explain_init`` once at run time.

The parity gate compares the library's contributions with the source library's own on the rows of
the prediction gate: XGBoost's ``pred_contribs``, LightGBM's ``pred_contrib``, and for scikit-learn
(which has none) the sklearn backend's explainer, which reads scikit-learn's own tree structures.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lambda_ml_serve.backends import treeshap
from lambda_ml_serve.backends.sklearn.explain import PIPELINE_NOTE
from lambda_ml_serve.errors import CompileError
from lambda_ml_serve.spec import Batch

if TYPE_CHECKING:
    from lambda_ml_serve.backends.compiled.ensemble import Ensemble
    from lambda_ml_serve.backends.compiled.runtime import CompiledPredictor

#: Largest difference from the source library's contributions the gate accepts.
EXPLAIN_TOLERANCE = 1e-4
#: The explanation gate explains the prediction gate's rows up to this many: all its example and
#: threshold rows, then its generated rows. The libraries' TreeSHAP is slow (XGBoost's took 92 s on one
#: CPU for the 10,600 rows of a 553-tree model), so the rest of the 10,000 generated rows are left out.
EXPLAIN_PARITY_ROWS = 1_000
#: Table entries (doubles) the library may allocate for its leaf tables; the leaves with the fewest
#: path features get tables first, the rest compute their polynomial per row.
TABLE_BUDGET = 1 << 21
#: No table for a leaf with more unique features on its path than this (2^d entries each).
MAX_TABLE_D = 12
#: Masks are 64-bit: a leaf may have at most this many unique features on its path.
MAX_PATH_FEATURES = 64


class ExplainParityError(CompileError):
    """The compiled contributions differ from the source library's by more than the tolerance."""


@dataclass(frozen=True)
class ExplainTree(treeshap.TreeArrays):
    """A tree as the generated TreeSHAP reads it: ``feature`` is each node's SHAP feature (the column
    the model's own split read, which may be one of a field's one-hot columns), ``field`` the input
    field the split decision reads, and ``category_set`` the set whose codes go left (-1: numerical)."""

    field: np.ndarray | None = None
    category_set: np.ndarray | None = None


def tree_arrays(ensemble: Ensemble) -> tuple[list[ExplainTree], list[int]]:
    """The ensemble's trees as TreeSHAP reads them (``x < threshold`` or a category set goes left), one
    per output a tree adds to (a forest's tree adds its class frequencies to every class), and the
    output of each.

    A Pipeline's folded trees split on the input fields but are explained over the columns the
    model's own splits read (:attr:`Ensemble.explain_features`): TreeSHAP over a field as one feature
    would give the group's Shapley value, not the sum of its columns' that the sklearn backend answers.
    """
    fold_map = getattr(ensemble, "explain_features", None)
    trees, outputs = [], []
    for t, tree in enumerate(ensemble.trees):
        if tree.cover is None:
            raise CompileError(
                f"tree {t} of the model stores no node covers (hessian sums or row counts), which TreeSHAP "
                "weighs paths by; save the model with its statistics"
            )
        field = np.asarray(tree.feature)
        feature = field
        if fold_map is not None:
            columns = getattr(tree, "explain_feature", None)
            inner = np.asarray(tree.left) >= 0
            if columns is None or len(columns) != len(tree.left) or (np.asarray(columns)[inner] >= len(fold_map)).any():
                raise CompileError(
                    f"the pipeline's preprocessing was folded into tree {t} without one node per split of the "
                    "model, so its contributions per field cannot be computed: serve explanations with backend "
                    "'sklearn'"
                )
            feature = np.where(inner, np.asarray(columns), 0)
        category_set = np.asarray(getattr(tree, "category_set", np.full(len(tree.left), -1)))
        values = np.asarray(tree.value, dtype=np.float64)
        values = values[:, None] if values.ndim == 1 else values
        for column in range(values.shape[1]):
            trees.append(
                ExplainTree(
                    left=np.asarray(tree.left),
                    right=np.asarray(tree.right),
                    feature=feature,
                    threshold=np.asarray(tree.threshold, dtype=np.float32),
                    default_left=np.asarray(tree.default_left, dtype=bool),
                    value=values[:, column],
                    cover=np.asarray(tree.cover, dtype=np.float64),
                    field=field,
                    category_set=category_set,
                )
            )
            outputs.append(int(getattr(tree, "output", 0)) + column)
    return trees, outputs


def outputs(ensemble: Ensemble, tree_output: list[int]) -> tuple[int, list[float]]:
    """(number of outputs, each output's base score) of the ensemble."""
    n_outputs = int(getattr(ensemble, "num_output", max(tree_output, default=0) + 1))
    bases = getattr(ensemble, "base_scores", None)
    base = [float(b) for b in bases] if bases is not None else [float(ensemble.base_score)] * n_outputs
    return n_outputs, base


def render(ensemble: Ensemble) -> tuple[str, dict[str, Any]]:
    """The TreeSHAP C source for ``ensemble`` and what the library's metadata says of it."""
    import jinja2

    from lambda_ml_serve.backends.compiled import codegen
    from lambda_ml_serve.backends.compiled.ensemble import CATEGORY_FLOOR

    trees, tree_output = tree_arrays(ensemble)
    fold_map = getattr(ensemble, "explain_features", None)
    n_outputs, base = outputs(ensemble, tree_output)
    per_output = np.bincount(tree_output, minlength=n_outputs)
    expected = list(base)
    tree_node, tree_leaf = [0], [0]
    nodes: dict[str, list[Any]] = {
        k: [] for k in ("left", "right", "feature", "threshold", "default_left", "bit", "category_set")
    }
    leaves: dict[str, list[Any]] = {k: [] for k in ("node", "d", "path", "value", "zero_ok")}
    path_feature: list[int] = []
    path_zero: list[float] = []
    for t, tree in enumerate(trees):
        # An averaging ensemble (a random forest) divides every tree's part by its output's tree count.
        scale = 1.0 / per_output[tree_output[t]] if ensemble.average else 1.0
        order, bits = _depth_first(tree)
        renumber = {old: new for new, old in enumerate(order)}
        for old in order:
            leaf = tree.left[old] < 0
            nodes["left"].append(-1 if leaf else renumber[int(tree.left[old])])
            nodes["right"].append(-1 if leaf else renumber[int(tree.right[old])])
            # The decision reads the input field; the path's features (bits, tables) are SHAP features.
            nodes["feature"].append(0 if leaf else int(tree.field[old]))
            nodes["category_set"].append(0 if leaf else int(tree.category_set[old]) + 1)
            nodes["threshold"].append(0.0 if leaf else float(tree.threshold[old]))
            nodes["default_left"].append(int(bool(tree.default_left[old])) if not leaf else 0)
            nodes["bit"].append(bits.get(old, 0))
        paths = treeshap.leaf_paths(tree)
        leaf_nodes = _leaf_nodes(tree)
        for path, old in zip(paths, leaf_nodes, strict=True):
            if len(path.features) > MAX_PATH_FEATURES:
                raise CompileError(
                    f"tree {t} has a leaf below {len(path.features)} distinct features; TreeSHAP in the compiled "
                    f"backend takes at most {MAX_PATH_FEATURES}: serve explanations with backend {ensemble.source!r}"
                )
            leaves["node"].append(renumber[old])
            leaves["d"].append(len(path.features))
            leaves["path"].append(len(path_feature))
            leaves["value"].append(scale * path.value)
            leaves["zero_ok"].append(bool((path.zero > 0).all()))
            # Each SHAP feature's contribution goes to the field it is computed from: SHAP values add up.
            path_feature += [int(fold_map[f]) if fold_map is not None else int(f) for f in path.features]
            path_zero += [float(z) for z in path.zero]
        expected[tree_output[t]] += scale * treeshap.tree_expected_value(paths)
        tree_node.append(len(nodes["left"]))
        tree_leaf.append(len(leaves["d"]))
    table_at, table_size, max_table_d = _tables(leaves["d"], leaves["zero_ok"])
    zero = np.array(path_zero, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ratio = np.where(zero > 0, (1.0 - zero) / np.where(zero > 0, zero, 1.0), 0.0)
    max_d = max(leaves["d"], default=0)
    weights = [treeshap.shapley_weights(d).tolist() + [0.0] * (max_d - d) for d in range(max_d + 1)]
    template = jinja2.Environment(
        loader=jinja2.FunctionLoader(codegen._template_source),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    ).get_template("shap.c.j2")
    ints, floats = codegen._ints, codegen._floats
    categorical = any(at > 0 for at in nodes["category_set"])
    sets: dict[str, Any] = {}
    if categorical:
        words = [_bitset(members) for members in ensemble.category_sets]
        sets = {
            "category_floor": CATEGORY_FLOOR[ensemble.source],
            "category_set": ints(nodes["category_set"]),
            "set_type": "uint8_t" if len(words) < 255 else ("uint16_t" if len(words) < 65535 else "uint32_t"),
            "set_start": ints(np.cumsum([0, *[len(w) for w in words[:-1]]])),
            "set_words": ints([len(w) for w in words]),
            "set_bits": ints(np.concatenate(words)),
        }
    source = template.render(
        n_trees=len(trees),
        num_feature=ensemble.num_feature,
        n_outputs=n_outputs,
        max_d=max_d,
        max_table_d=max_table_d,
        max_nodes=max(np.diff(tree_node), default=1),
        table_size=table_size,
        tree_node=ints(tree_node),
        tree_leaf=ints(tree_leaf),
        tree_output=ints(tree_output) or "0",
        left=ints(nodes["left"]) or "0",
        right=ints(nodes["right"]) or "0",
        feature=ints(nodes["feature"]) or "0",
        threshold=floats(np.array(nodes["threshold"], dtype=np.float32), "float") or "0",
        default_left=ints(nodes["default_left"]) or "0",
        bit=ints(nodes["bit"]) or "0",
        leaf_node=ints(leaves["node"]) or "0",
        leaf_d=ints(leaves["d"]) or "0",
        leaf_path=ints(leaves["path"]) or "0",
        leaf_value=floats(np.array(leaves["value"], dtype=np.float64), "double") or "0",
        leaf_table=ints(table_at) or "0",
        path_feature=ints(path_feature) or "0",
        path_zero=floats(zero, "double") or "0",
        path_ratio=floats(ratio, "double") or "0",
        weights=",".join("{" + floats(np.array(row), "double") + "}" for row in weights),
        expected=floats(np.array(expected, dtype=np.float64), "double"),
        categorical=categorical,
        source_library=ensemble.source,
        **sets,
    )
    metadata = {
        "outputs": n_outputs,
        "expected_value": expected,
        "leaves": len(leaves["d"]),
        "table_leaves": sum(1 for at in table_at if at >= 0),
        "table_entries": table_size,
    }
    if fold_map is not None:
        # The model's own columns, each summed into the field it is computed from.
        metadata["fold"] = [int(j) for j in fold_map]
        metadata["note"] = PIPELINE_NOTE
    return source, metadata


def _bitset(members: np.ndarray) -> np.ndarray:
    """A set of category codes as 32-bit words (bit c of word c // 32), at least one word, as the kernel's."""
    words = np.zeros(max(int(members.max()) // 32 + 1 if len(members) else 1, 1), dtype=np.uint64)
    for code in members.tolist():
        words[code // 32] |= np.uint64(1 << (code % 32))
    return words


def _depth_first(tree: treeshap.TreeArrays) -> tuple[list[int], dict[int, int]]:
    """The tree's nodes in depth-first order, and each inner node's bit: its feature's position among
    the unique features of the path from the root to it."""
    order: list[int] = []
    bits: dict[int, int] = {}
    stack: list[tuple[int, list[int]]] = [(0, [])]
    while stack:
        node, features = stack.pop()
        order.append(node)
        if tree.left[node] < 0:
            continue
        feature = int(tree.feature[node])
        if feature not in features:
            features = [*features, feature]
        bits[node] = features.index(feature)
        stack += [(int(tree.right[node]), features), (int(tree.left[node]), features)]
    return order, bits


def _leaf_nodes(tree: treeshap.TreeArrays) -> list[int]:
    """The leaves in the order :func:`treeshap.leaf_paths` lists them (depth-first, left first)."""
    found, stack = [], [0]
    while stack:
        node = stack.pop()
        if tree.left[node] < 0:
            found.append(node)
        else:
            stack += [int(tree.right[node]), int(tree.left[node])]
    return found


def _tables(depths: Sequence[int], zero_ok: Sequence[bool]) -> tuple[list[int], int, int]:
    """Each leaf's table offset (or -1), the entries in all, and the largest d with a table."""
    at = [-1] * len(depths)
    size, widest = 0, 0
    for leaf in sorted(range(len(depths)), key=lambda i: depths[i]):
        d = depths[leaf]
        if d == 0 or d > MAX_TABLE_D or not zero_ok[leaf] or size + (1 << d) > TABLE_BUDGET:
            continue
        at[leaf] = size
        size += 1 << d
        widest = max(widest, d)
    return at, size, widest


def library_contributions(ensemble: Ensemble, artifact: Path, matrix: np.ndarray) -> np.ndarray:
    """The source library's own SHAP values for ``matrix``: rows x outputs x (features + 1), bias last."""
    n, f = matrix.shape
    if ensemble.source == "xgboost":
        import xgboost

        booster = xgboost.Booster(model_file=str(artifact))
        booster.set_param({"nthread": 1})
        values = booster.predict(xgboost.DMatrix(matrix, missing=np.nan), pred_contribs=True, validate_features=False)
    elif ensemble.source == "lightgbm":
        import lightgbm

        values = lightgbm.Booster(model_file=str(artifact)).predict(matrix, pred_contrib=True, num_threads=1)
    else:
        import joblib

        from lambda_ml_serve.backends.sklearn.explain import Explainer

        # A Pipeline is given what it was fitted on (a DataFrame of its fields), as its predictions are.
        explainer = Explainer(joblib.load(artifact), to_input=getattr(ensemble, "explain_input", None))
        codes = getattr(ensemble, "explain_codes", None)
        base, contributions = explainer.explain_matrix(codes(matrix) if codes is not None else matrix)
        values = np.concatenate([contributions, base[..., None]], axis=-1)
    return np.asarray(values, dtype=np.float64).reshape(n, -1, f + 1)


def check_explain_parity(
    predictor: CompiledPredictor, ensemble: Ensemble, artifact: Path, matrix: np.ndarray, names: Sequence[str]
) -> float:
    """Explain ``matrix`` (its first ``EXPLAIN_PARITY_ROWS``) with the library and the source library; raise
    past the tolerance.

    Returns the largest absolute difference seen.
    """
    library = next(iter(ensemble.library))
    matrix = np.ascontiguousarray(matrix[:EXPLAIN_PARITY_ROWS])
    batch = Batch(array("f", matrix.tobytes()), len(matrix), ensemble.num_feature)
    got = np.frombuffer(predictor.explain_values(batch), dtype=np.float64).reshape(len(matrix), -1, matrix.shape[1] + 1)
    want = library_contributions(ensemble, artifact, matrix)
    if got.shape != want.shape:
        raise ExplainParityError(
            f"the compiled explanations have shape {got.shape} but {library}'s {want.shape}; the model is not "
            f"understood: serve explanations with backend {ensemble.source!r}"
        )
    diff = np.abs(got - want)
    diff[np.isnan(diff)] = np.inf
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    if diff[worst] > EXPLAIN_TOLERANCE:
        row, output, column = (int(i) for i in worst)
        what = "the expected value" if column == ensemble.num_feature else f"feature {names[column]!r}"
        raise ExplainParityError(
            f"the compiled contributions differ from {library}'s by up to {diff[worst]:.3g} (tolerance "
            f"{EXPLAIN_TOLERANCE:g}) on {len(matrix)} rows; worst at row {row}, output {output}, {what}: compiled "
            f"{got[worst]!r}, {library} {want[worst]!r}"
        )
    return float(diff.max())
