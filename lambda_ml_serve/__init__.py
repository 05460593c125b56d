"""lambda-ml-serve: serve a trained model from an AWS Lambda container image."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    """``hookimpl``, the decorator for plugin hook implementations (``@hookimpl def register_models(register)``).

    Made on first use, so that serving from a manifest never imports pluggy.
    """
    if name == "hookimpl":
        import pluggy

        globals()["hookimpl"] = pluggy.HookimplMarker("lambda_ml_serve")
        return globals()["hookimpl"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
