"""Batch-level checks: what a schema's validators enforce, stated so the fast request path can run it.

A pydantic validator is arbitrary Python, so the fast path cannot run it row by row without losing its
speed. A plugin whose schema has validators lists in ``ModelSpec.batch_checks`` what they amount to for
the rows the fast decoder accepts (numbers within the schema's bounds, under its own field names); each
check then runs once over the packed batch. A batch that fails a check goes to the full path, whose
pydantic validation writes the error answer.
"""

from __future__ import annotations

import operator
from array import array
from dataclasses import dataclass


@dataclass(frozen=True)
class ExactlyOne:
    """Exactly one of these boolean features is true in every row (e.g. a one-hot pair).

    ``features`` are field names or feature names (aliases) of the schema's ``bool`` fields.
    """

    features: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.features) < 2 or not all(isinstance(f, str) for f in self.features):
            raise ValueError(f"ExactlyOne needs two or more feature names, got {self.features!r}")


#: What ``ModelSpec.batch_checks`` holds.
BatchCheck = ExactlyOne


def exactly_one(values: array, n_features: int, columns: tuple[int, ...]) -> bool:
    """Whether each row's values in ``columns`` (each 0.0 or 1.0) add up to exactly 1."""
    total = values[columns[0] :: n_features]
    for column in columns[1:]:
        total = array(values.typecode, map(operator.add, total, values[column::n_features]))
    return total.count(1.0) == len(total)


#: Each check's name in a serving manifest, and the function that runs it on a packed batch.
CHECK_NAMES = {ExactlyOne: "exactly_one"}
CHECK_RUNNERS = {"exactly_one": exactly_one}
