"""The one error the construct raises for props it cannot deploy."""

from lambda_ml_serve.errors import LambdaMLServeError


class ModelFunctionError(LambdaMLServeError, ValueError):
    """A prop of :class:`~lambda_ml_serve_cdk.ModelFunction` cannot work; the message names it and the fix.

    Raised while the app is synthesised, before anything reaches AWS.
    """
