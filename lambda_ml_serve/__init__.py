"""lambda-ml-serve: serve a trained model from an AWS Lambda container image."""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@hookimpl def register_models(register): ...``
hookimpl = pluggy.HookimplMarker("lambda_ml_serve")

__all__ = ["__version__", "hookimpl"]
