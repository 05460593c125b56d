"""A classifier's answer, the same for every backend: a label per row and the class probabilities.

A model whose spec names its ``classes`` is a classifier: its predictor answers one probability row
per input row, in the order of ``classes`` (a binary model may answer the probability of the second
class alone, as XGBoost and LightGBM do; it is widened to two here). The label is the class of the
highest probability, the first one on ties, as the libraries' own ``predict`` picks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The answer's keys beside ``model`` and ``version``.
PREDICTIONS, PROBABILITIES, CLASSES = "predictions", "probabilities", "classes"


def probability_rows(predictions: list[Any], n_classes: int) -> list[list[float]]:
    """One row of ``n_classes`` probabilities per prediction (binary: ``p`` becomes ``[1 - p, p]``)."""
    if not predictions:
        return []
    if n_classes == 2 and not isinstance(predictions[0], list):
        return [[1.0 - p, p] for p in predictions]
    if not all(isinstance(row, list) and len(row) == n_classes for row in predictions):
        raise ValueError(f"the predictor answered rows that are not {n_classes} class probabilities")
    return predictions


def labels_of(probabilities: list[list[float]], classes: Sequence[Any]) -> list[Any]:
    """Each row's most probable class, the first one on ties (numpy's argmax, which the libraries use)."""
    positions = range(len(classes))
    return [classes[max(positions, key=row.__getitem__)] for row in probabilities]


def answer(predictions: list[Any], classes: Sequence[Any]) -> dict[str, Any]:
    """``{"predictions": labels, "probabilities": rows, "classes": classes}`` for a predictor's answer."""
    probabilities = probability_rows(predictions, len(classes))
    return {PREDICTIONS: labels_of(probabilities, classes), PROBABILITIES: probabilities, CLASSES: list(classes)}
