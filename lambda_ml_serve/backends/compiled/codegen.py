"""Build time: the C source of a flat, branch-free kernel for an ensemble, in one of two layouts.

``level``: every tree padded to a complete tree of the ensemble's depth, walked as ``2i + 1 + right``;
the fastest for shallow, balanced ensembles (XGBoost's depth-wise trees), and 2^depth leaves per tree.
``node``: each tree's own nodes with adjacent siblings, each row walked to its own leaf (a block walk
goes on with the rows that have not reached theirs); no padding, so it suits deep or unbalanced
trees (LightGBM grows leaf-wise).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from lambda_ml_serve.backends.compiled.ensemble import Ensemble, Tree

LAYOUTS = ("level", "node")
#: Rows walked together through a tree: their node indices and sums stay in L1 cache.
BLOCK = 128
#: The node layout's block when it has trees deeper than FULL_WALK_DEPTH: such a tree is done for the
#: block when its last row reached its leaf, a tail of a few rows on the deepest paths that a larger
#: block pays for less often (measured on a 500-tree, 127-leaf LightGBM model: 512 rows ~15% faster
#: than 128 at 10,000 rows; 1,024 no better).
NODE_BLOCK = 512
#: A node-layout ensemble with a tree deeper than this walks each row to its own leaf (its trees up to
#: this deep still walk a block to their depth); one without keeps the plain walk of every row to each
#: tree's depth. Measured: the early exit was 1.2x-1.4x slower on depth-6 XGBoost trees (rows go 5-6
#: levels down anyway) and 1.8x faster on LightGBM's 127-leaf trees (depth ~17, rows stop after ~4).
FULL_WALK_DEPTH = 8
#: Levels an early-exit walk takes per visit of a row still above its leaf, the first visit from the root
#: included (a row that reached its leaf on the first stays there: a leaf links to itself). Measured on
#: the 500-tree, 127-leaf LightGBM model (rows reach their leaf after 3.8 levels on average, half of
#: them after 2): 2 and 2 is ~10% faster than 1 and 1, 3 and 3 slower than 2 and 2.
EARLY_EXIT_UNROLL = 2
#: Up to this many rows, walking each row through a tree alone is faster than the level walk (measured:
#: one row, 30% faster; four rows already slower).
ROW_WALK = 1
#: The level layout is not generated past this many padded leaves in all (a few MiB of tables, a
#: few seconds of compiling): padding a deep tree to 2^depth leaves is what the node layout avoids.
MAX_PADDED_LEAVES = 1 << 18
#: Nor when padding multiplies the nodes by more than this (unbalanced trees: it would only be slower).
MAX_PADDING = 8
#: The deepest complete tree the level layout pads to.
MAX_LEVEL_DEPTH = 12


#: The level layout walks every tree to the ensemble's depth; it is chosen only when that costs at most
#: this much more than walking each tree to its own depth (near-complete, depth-wise trees). Measured on
#: XGBoost models of depth 3-8 and LightGBM models of 15-63 leaves, the two layouts are within ~10% of
#: each other wherever both are possible, so a rule on the shapes loses little and never flips.
MAX_LEVEL_STEPS = 1.1


def layouts_for(ensemble: Ensemble) -> list[str]:
    """The layouts that can be generated for ``ensemble``: both, unless padding would explode (or there
    is nothing to pad: trees that are single leaves)."""
    depth = ensemble.max_depth()
    if depth == 0 or depth > MAX_LEVEL_DEPTH:
        return ["node"]
    padded = len(ensemble.trees) << depth
    nodes = sum(len(tree.left) for tree in ensemble.trees)
    if padded > MAX_PADDED_LEAVES or 2 * padded > MAX_PADDING * nodes:
        return ["node"]
    return list(LAYOUTS)


def choose_layout(ensemble: Ensemble) -> tuple[str, str]:
    """The layout for ``ensemble`` and why, decided from the trees' shapes alone (never from a timing,
    so the same model always gives the same library)."""
    depth = ensemble.max_depth()
    if "level" not in layouts_for(ensemble):
        return "node", (
            f"node: padding {len(ensemble.trees)} trees to depth {depth} would exceed the level layout's limits "
            f"(depth {MAX_LEVEL_DEPTH}, {MAX_PADDED_LEAVES} leaves, {MAX_PADDING}x the nodes)" + _walk(ensemble)
        )
    steps = len(ensemble.trees) * depth / max(sum(ensemble.depths), 1)
    if steps <= MAX_LEVEL_STEPS:
        return "level", (
            f"level: walking every tree to depth {depth} takes {steps:.2f}x the steps of each tree's own depth "
            f"(at most {MAX_LEVEL_STEPS})"
        )
    return "node", (
        f"node: walking every tree to depth {depth} would take {steps:.2f}x the steps of each tree's own depth "
        f"(more than {MAX_LEVEL_STEPS})" + _walk(ensemble)
    )


def _walk(ensemble: Ensemble) -> str:
    """How a node kernel walks, said after its layout's reason."""
    if early_exit(ensemble, "node"):
        return f"; each row to its own leaf (trees deeper than {FULL_WALK_DEPTH})"
    return ""


def early_exit(ensemble: Ensemble, layout: str) -> bool:
    """Whether the kernel walks each row to its own leaf: the node layout with a tree deeper than
    FULL_WALK_DEPTH (the others walk every row of a block to each tree's depth, as before)."""
    return layout == "node" and ensemble.max_depth() > FULL_WALK_DEPTH


def render(ensemble: Ensemble, layout: str, metadata: Mapping[str, Any]) -> str:
    """The kernel's C source for ``ensemble`` in ``layout``, with ``metadata`` embedded as JSON."""
    import jinja2
    import numpy as np

    from lambda_ml_serve.backends.compiled.ensemble import CATEGORY_FLOOR

    float_type = ensemble.accumulator
    if layout == "level":
        depth = ensemble.max_depth()
        arrays = [_level_tables(tree, depth) for tree in ensemble.trees]
        tables: dict[str, Any] = {"depth": depth}
        widest_node = 2 ** (depth + 1)
    else:
        arrays = [_node_tables(tree) for tree in ensemble.trees]
        sizes = [len(a["feature"]) for a in arrays]
        tables = {
            "tree_start": _ints(np.cumsum([0, *sizes[:-1]])),
            "tree_depth": _ints(ensemble.depths),
            "left": _ints(np.concatenate([a["link"] >> 2 for a in arrays])),
            "full_walk_depth": FULL_WALK_DEPTH,
        }
        # A link holds a node index and two flags.
        widest_node = 4 * max(sizes) if early_exit(ensemble, layout) else max(sizes)
        if early_exit(ensemble, layout):
            tables["nodes"] = _records(
                np.concatenate([a["threshold"] for a in arrays]),
                np.concatenate([a["link"] for a in arrays]),
                np.concatenate([a["feature"] for a in arrays]),
                np.concatenate([a["default_right"] for a in arrays]),
            )
    categorical = bool(ensemble.category_sets)
    if categorical:
        words = [_bitset(members) for members in ensemble.category_sets]
        tables |= {
            "source": ensemble.source,
            "category_floor": CATEGORY_FLOOR[ensemble.source],
            # 0 for a numerical split, else 1 + the set's index.
            "category_set": _ints(np.concatenate([a["category_set"] for a in arrays]) + 1),
            "set_type": _unsigned(len(words) + 1),
            "set_start": _ints(np.cumsum([0, *[len(w) for w in words[:-1]]])),
            "set_words": _ints([len(w) for w in words]),
            "set_bits": _ints(np.concatenate(words)),
        }
    if ensemble.boundaries is not None:
        points = ensemble.boundaries
        maps = [_near_map(b) for b in points]
        tables |= {
            "bound_start": _ints(np.cumsum([0, *[len(b) for b in points]])),
            # One value at least: C has no empty initialiser (BOUND_START then keeps every feature's empty).
            "bounds": _floats(np.concatenate([*points, [np.inf]]), "double"),
            "map_start": _ints(np.cumsum([0, *[len(words) for words, _ in maps]])),
            "map_shift": _ints([shift for _, shift in maps]),
            "map_bits": _ints(np.concatenate([*[words for words, _ in maps], [0]])),
            "map_hash": NEAR_HASH,
        }
    outputs = [tree.output for tree in ensemble.trees]
    template = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    ).get_template("kernel.c.j2")
    return template.render(
        comment=(
            f"{ensemble.source} tree ensemble: {len(ensemble.trees)} trees, depth {ensemble.max_depth()}, "
            f"{ensemble.num_output} output(s), {len(ensemble.category_sets)} category set(s)"
        ),
        layout=layout,
        n_trees=len(ensemble.trees),
        num_feature=ensemble.num_feature,
        num_output=ensemble.num_output,
        leaf_width=ensemble.leaf_width,
        block=NODE_BLOCK if early_exit(ensemble, layout) else BLOCK,
        early_exit=early_exit(ensemble, layout),
        row_walk=ROW_WALK,
        unroll=EARLY_EXIT_UNROLL,
        accumulator=float_type,
        feature_type=_unsigned(ensemble.num_feature),
        index_type=_unsigned(widest_node),
        feature=_ints(np.concatenate([a["feature"] for a in arrays])),
        threshold=_floats(np.concatenate([a["threshold"] for a in arrays]), "float"),
        default_right=_ints(np.concatenate([a["default_right"] for a in arrays])),
        value=_floats(np.concatenate([a["value"].reshape(-1) for a in arrays]), float_type),
        base_scores=_floats(np.array(ensemble.base_scores, dtype=np.float64), float_type),
        tree_output=_ints(outputs) if any(outputs) else "",
        average=ensemble.average,
        transform=ensemble.transform,
        sigmoid_alpha=_float(ensemble.sigmoid_alpha, "double"),
        categorical=categorical,
        narrow=ensemble.boundaries is not None,
        metadata=_c_string(json.dumps(metadata, ensure_ascii=True, separators=(",", ":"))),
        **tables,
    )


#: The multiplier of the near map's hash (Knuth's: 2^32 / the golden ratio).
NEAR_HASH = 2654435761
#: Bits per point in a feature's near map: a value with no point near it is told so by one bit, and is
#: sent on to the exact search about once in 16 (one bit in 16 set).
NEAR_BITS_PER_POINT = 16


def _near_map(points: np.ndarray) -> tuple[np.ndarray, int]:
    """A feature's near map: bit ``hash(ceil32(B))`` set for each point ``B``, as 32-bit words, and the
    hash's shift. A float64 value x has a point between it and its nearest float32 only if some point
    has the same ``ceil32`` (the smallest float32 at or above it) as x; -0.0 counts as 0.0."""
    import numpy as np

    if not len(points):
        return np.empty(0, dtype=np.uint64), 0
    with np.errstate(over="ignore"):  # past float32's range: infinite, as the C's conversion
        nearest = points.astype(np.float32)
    ceil = np.where(nearest.astype(np.float64) < points, np.nextafter(nearest, np.float32(np.inf)), nearest)
    ceil = np.where(ceil == 0, np.float32(0), ceil).astype(np.float32)
    n_bits = 1 << max(5, min(24, int(len(points) * NEAR_BITS_PER_POINT - 1).bit_length()))
    shift = 32 - (n_bits.bit_length() - 1)
    hashed = (ceil.view(np.uint32).astype(np.uint64) * NEAR_HASH) & 0xFFFFFFFF
    index = hashed >> np.uint64(shift)
    words = np.zeros(n_bits // 32, dtype=np.uint64)
    np.bitwise_or.at(words, (index >> np.uint64(5)).astype(np.int64), np.uint64(1) << (index & np.uint64(31)))
    return words, shift


def _bitset(members: np.ndarray) -> np.ndarray:
    """A set of category codes as 32-bit words (bit c of word c // 32), at least one word."""
    import numpy as np

    words = np.zeros(max(int(members.max()) // 32 + 1 if len(members) else 1, 1), dtype=np.uint64)
    for code in members.tolist():
        words[code // 32] |= np.uint64(1 << (code % 32))
    return words


def _template_source(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _level_tables(tree: Tree, depth: int) -> dict[str, np.ndarray]:
    """A tree padded to a complete tree of ``depth`` levels, in heap order.

    A leaf above the last level is pushed down by copying it into both children of a padding node,
    so every path through the padding ends on the same value.
    """
    import numpy as np

    n_inner = 2**depth - 1
    source = np.zeros(1, dtype=np.int64)  # the tree's node at each heap position of the current level
    feature, threshold, default_right, category_set = [], [], [], []
    for _ in range(depth):
        inner = tree.left[source] >= 0
        feature.append(np.where(inner, tree.feature[source], 0))
        threshold.append(np.where(inner, tree.threshold[source], np.float32(0)))
        default_right.append(np.where(inner, ~tree.default_left[source], False))
        category_set.append(np.where(inner, tree.category_set[source], -1))
        left = np.where(inner, tree.left[source], source)
        right = np.where(inner, tree.right[source], source)
        source = np.stack([left, right], axis=1).reshape(-1)
    tables = {
        "feature": np.concatenate(feature) if depth else np.empty(0, np.int64),
        "threshold": np.concatenate(threshold) if depth else np.empty(0, np.float32),
        "default_right": np.concatenate(default_right) if depth else np.empty(0, bool),
        "category_set": np.concatenate(category_set) if depth else np.empty(0, np.int32),
        "value": tree.value[source],
    }
    assert len(tables["feature"]) == n_inner and len(tables["value"]) == n_inner + 1
    return tables


def _node_tables(tree: Tree) -> dict[str, np.ndarray]:
    """A tree's nodes renumbered breadth-first with siblings adjacent, and each node's link: its left
    child's index times 4, plus 1 if that child is a leaf, plus 2 if the right one is (a leaf's left
    child is itself minus one, both flags set)."""
    import numpy as np

    order = [0]  # old node ids in their new order
    link = []
    for old in order:  # grows while it is walked: a breadth-first queue
        left, right = int(tree.left[old]), int(tree.right[old])
        if left >= 0:
            link.append(len(order) << 2 | int(tree.left[left] < 0) | int(tree.left[right] < 0) << 1)
            order += [left, right]
        else:
            # Itself minus one (right is always taken); a root leaf has depth 0 and is never walked.
            link.append(max(len(link) - 1, 0) << 2 | 3)
    old = np.array(order)
    leaf = tree.left[old] < 0
    return {
        "link": np.array(link),
        "feature": np.where(leaf, 0, tree.feature[old]),
        "threshold": np.where(leaf, np.float32(np.nan), tree.threshold[old]),
        "default_right": np.where(leaf, True, ~tree.default_left[old]),
        "category_set": np.where(leaf, -1, tree.category_set[old]),
        "value": np.where(leaf[:, None], tree.value[old], 0.0),
    }


def _unsigned(limit: int) -> str:
    """The smallest unsigned C type that holds every value below ``limit``."""
    for bits in (8, 16, 32):
        if limit <= 1 << bits:
            return f"uint{bits}_t"
    return "uint64_t"


def _ints(values: Any) -> str:
    return ",".join(str(int(v)) for v in values)


def _float(value: float, c_type: str) -> str:
    """An exact C literal (hexadecimal) of ``value`` as ``c_type`` (float or double)."""
    import math

    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return value.hex() + ("f" if c_type == "float" else "")


def _floats(values: np.ndarray, c_type: str) -> str:
    import numpy as np

    narrow = values.astype(np.float32 if c_type == "float" else np.float64)
    if not len(narrow) or not np.isfinite(narrow).all():
        return ",".join(_float(float(v), c_type) for v in narrow)
    suffix = "f," if c_type == "float" else ","
    return suffix.join(map(float.hex, narrow.tolist())) + suffix.rstrip(",")


def _records(threshold: np.ndarray, link: np.ndarray, feature: np.ndarray, default_right: np.ndarray) -> str:
    """Node records ``{threshold, link, feature, default_right}`` as C initialisers."""
    thresholds = _floats(threshold, "float").split(",")
    return ",".join(
        f"{{{t},{int(k)},{int(f)},{int(d)}}}"
        for t, k, f, d in zip(thresholds, link.tolist(), feature.tolist(), default_right.tolist(), strict=True)
    )


def _c_string(text: str) -> str:
    """ASCII JSON escaped for a C string literal (``?`` too: trigraphs)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("?", "\\?")
