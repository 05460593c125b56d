"""What the docs page and the OpenAPI document read about a served model: a narrow, read-only view.

Both are built from this view, not from the app, so they depend on nothing that serves requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambda_ml_serve.spec import ModelSpec


@dataclass(frozen=True)
class ModelView:
    """One served model as its documentation sees it."""

    #: The plugin's spec: name, version, description, output, row schema, feature order.
    spec: ModelSpec
    #: What GET / answers (backend, card metrics, input schema, ...).
    metadata: dict[str, Any]
    #: The spec's example rows written in every request format.
    examples: dict[str, Any]
    #: The function's answer to ``examples["instances"]``.
    example_answer: Any
    max_rows: int
    #: The answer shape: ``object`` or ``predictions``.
    response: str
    #: Whether the function serves GET /docs.
    docs: bool
    #: Rows per explanation request at most.
    explain_max_rows: int = 0
    #: The function's explanation of ``examples["instances"]``, or None when the model does not explain.
    example_explanation: Any = None
    #: A classifier's labels (its answers carry labels and probabilities), else None.
    classes: tuple[Any, ...] | None = None
