"""``lambda-ml-serve train``: run a model plugin's own trainer on a data file."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.plugins import Registry


class TrainingError(LambdaMLServeError):
    """The plugin has no trainer, its extras are missing, or the trainer refused the data."""


def train(registry: Registry, model: str, data: Path, output: Path | None = None) -> dict[str, Any]:
    """Train ``model`` on ``data`` into ``output`` (default: beside the plugin's artifact); its model card."""
    spec = registry.model(model).spec
    if spec.trainer is None:
        raise TrainingError(f"model {model!r} does not ship a trainer")
    if not data.is_file():
        raise TrainingError(f"--data {data}: no such file; give the path of a CSV file to train on")
    module_name, _, func_name = spec.trainer.partition(":")
    try:
        trainer = getattr(importlib.import_module(module_name), func_name)
    except ImportError as exc:
        raise TrainingError(
            f"the trainer for {model!r} needs packages that are missing ({exc.name}); "
            "install the plugin's 'train' extra"
        ) from None
    try:
        return trainer(data=data, output_dir=output or spec.artifact_path.parent)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        # A trainer's own checks (missing columns, a wrong target) raise these with the fix in the
        # message; anything deeper is still one line, and the trace is for the plugin's author.
        raise TrainingError(f"training {model!r} on {data} failed: {one_line(exc)}") from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one bounded line (pandas and scikit-learn messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing column or key {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
