"""The hooks a plugin can implement. Each takes a ``register`` callable and calls it once per item."""

import pluggy

hookspec = pluggy.HookspecMarker("lambda_ml_serve")


@hookspec
def register_models(register):
    """Register models: call ``register(ModelSpec(...))`` once for each model the plugin provides."""


@hookspec
def register_backends(register):
    """Register backends: call ``register(backend)`` with an object following ``Backend``."""
