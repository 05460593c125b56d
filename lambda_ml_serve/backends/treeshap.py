"""Exact path-dependent TreeSHAP (Lundberg et al., 2020, algorithm 2) over plain node arrays, in numpy.

Written per leaf rather than as the paper's recursion, which computes the same sums: a leaf ``l``
with value ``v`` reached through the unique features ``D`` (``d`` of them, each merged over all its
splits on the path) gives feature ``i`` of ``D``

    v * (o_i - z_i) * sum over S in D-{i} of |S|!(d-|S|-1)!/d! * prod_{j in S} o_j * prod_{j in D-{i}-S} z_j

where ``o_j`` is 1 when the row satisfies every split on ``j`` along the path and ``z_j`` the
product of the path's cover ratios on ``j``; the expected value is the sum of ``v * prod z``.
The sum over ``S`` is the coefficient-weighted sum of the polynomial ``prod_j (o_j y + z_j)``
without its factor ``i``. The compiled backend's generated C (``compiled/shap.py``) computes the
same formula; this module is the scikit-learn backend's explainer and the compiled backend's
build-time reference for its tables.

A split sends a row left when ``goes_left(x)`` (a threshold test given per tree, or membership of a
node's set of category codes, see :class:`TreeArrays`), and a missing value (NaN) the node's default way.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NodeArrays:
    """One tree as node arrays (node 0 is the root; a leaf has ``left == -1``)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    #: Where a missing value (NaN) goes.
    default_left: np.ndarray
    #: Leaf values (0 on inner nodes).
    value: np.ndarray


@dataclass(frozen=True)
class TreeArrays(NodeArrays):
    """A tree with its covers, for TreeSHAP.

    ``le`` says how a split compares: ``x <= threshold`` goes left (scikit-learn) rather than
    ``x < threshold`` (the compiled backend's float32 form).
    """

    cover: np.ndarray
    le: bool = False
    #: Categorical splits (HistGradientBoosting's): per node, the category codes that go left (every
    #: other code goes right), or None for a numerical split; None when the tree has none.
    left_categories: tuple[np.ndarray | None, ...] | None = None


@dataclass(frozen=True)
class LeafPath:
    """A leaf's path: its unique features in order of first appearance, merged splits and cover ratios."""

    value: float
    #: The unique features on the path (``d`` of them).
    features: np.ndarray
    #: Per unique feature: the product of the path's cover ratios on it.
    zero: np.ndarray
    #: Per split on the path: the index (into ``features``) of its feature, its node, and whether the path goes left.
    splits: list[tuple[int, int, bool]]


def leaf_paths(tree: TreeArrays) -> list[LeafPath]:
    """Every leaf's path from the root, in depth-first order."""
    paths: list[LeafPath] = []
    # (node, unique features so far, their zero fractions, splits so far)
    stack: list[tuple[int, list[int], list[float], list[tuple[int, int, bool]]]] = [(0, [], [], [])]
    while stack:
        node, features, zero, splits = stack.pop()
        left = int(tree.left[node])
        if left < 0:
            paths.append(LeafPath(float(tree.value[node]), np.array(features, dtype=np.int64), np.array(zero), splits))
            continue
        feature = int(tree.feature[node])
        cover = float(tree.cover[node])
        for child, went_left in ((int(tree.right[node]), False), (left, True)):
            ratio = float(tree.cover[child]) / cover if cover > 0 else 0.0
            if feature in features:
                k = features.index(feature)
                z = [*zero]
                z[k] *= ratio
                stack.append((child, features, z, [*splits, (k, node, went_left)]))
            else:
                k = len(features)
                stack.append((child, [*features, feature], [*zero, ratio], [*splits, (k, node, went_left)]))
    return paths


def shapley_weights(d: int) -> np.ndarray:
    """``w[s] = s!(d-s-1)!/d!`` for subsets of ``s`` of the other ``d - 1`` features (``w[d] = 0``)."""
    w = np.zeros(d + 1)
    for s in range(d):
        w[s] = factorial(s) * factorial(d - s - 1) / factorial(d)
    return w


def goes_left(tree: TreeArrays, node: int, x: np.ndarray) -> np.ndarray:
    """Whether each value of ``x`` (a column) goes left at ``node``; NaN goes the default way."""
    members = tree.left_categories[node] if tree.left_categories is not None else None
    if members is not None:
        test = np.isin(x, members)
    else:
        t = tree.threshold[node]
        test = (x <= t) if tree.le else (x < t)
    return np.where(np.isnan(x), bool(tree.default_left[node]), test)


def tree_expected_value(paths: list[LeafPath]) -> float:
    """The cover-weighted mean of the leaves: the tree's part of the expected value."""
    return float(sum(p.value * float(np.prod(p.zero)) for p in paths))


def explain_tree(tree: TreeArrays, paths: list[LeafPath], x: np.ndarray, phi: np.ndarray, scale: float = 1.0) -> None:
    """Add ``scale`` times the tree's SHAP values for the rows ``x`` (n x features) to ``phi`` (n x features)."""
    n = len(x)
    # Every split's decision for every row, once per tree.
    decisions: dict[int, np.ndarray] = {}
    for path in paths:
        d = len(path.features)
        if d == 0:
            continue
        one = np.ones((n, d), dtype=bool)
        for k, node, went_left in path.splits:
            if node not in decisions:
                decisions[node] = goes_left(tree, node, x[:, int(tree.feature[node])])
            one[:, k] &= decisions[node] == went_left
        o = one.astype(np.float64)
        z = path.zero
        # The polynomial prod_j (o_j y + z_j), per row: coefficient s is the weight of subsets of size s.
        poly = np.zeros((n, d + 1))
        poly[:, 0] = 1.0
        for j in range(d):
            shifted = np.zeros_like(poly)
            shifted[:, 1:] = poly[:, :-1]
            poly = shifted * o[:, [j]] + poly * z[j]
        w = shapley_weights(d)
        for i in range(d):
            # Divide out the factor (o_i y + z_i): top-down when o_i is 1 (multiplies by z_i <= 1,
            # so no error grows), by the constant z_i when o_i is 0.
            quotient = np.zeros((n, d))
            carry = poly[:, d].copy()
            for s in range(d - 1, -1, -1):
                quotient[:, s] = carry
                carry = poly[:, s] - z[i] * carry
            with np.errstate(divide="ignore", invalid="ignore"):
                by_constant = np.where(z[i] > 0, poly[:, :d] / z[i], 0.0)
            quotient = np.where(one[:, [i]], quotient, by_constant)
            total = quotient @ w[:d]
            phi[:, path.features[i]] += scale * path.value * (o[:, i] - z[i]) * total


def explain_trees(
    trees: list[TreeArrays], x: np.ndarray, *, scale: float = 1.0, paths: list[list[LeafPath]] | None = None
) -> tuple[np.ndarray, float]:
    """The SHAP values (n x features) of the sum of ``trees`` times ``scale``, and its expected value."""
    x = np.asarray(x, dtype=np.float64) if trees and trees[0].le else np.asarray(x, dtype=np.float32)
    phi = np.zeros(x.shape, dtype=np.float64)
    expected = 0.0
    for t, tree in enumerate(trees):
        tree_paths = paths[t] if paths is not None else leaf_paths(tree)
        explain_tree(tree, tree_paths, x, phi, scale)
        expected += scale * tree_expected_value(tree_paths)
    return phi, expected


def as_float_array(values: Any) -> np.ndarray:
    """A contiguous float64 copy (the arrays a library exposes may be views of its own memory)."""
    return np.ascontiguousarray(values, dtype=np.float64)
