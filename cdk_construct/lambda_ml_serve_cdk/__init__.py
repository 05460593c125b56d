"""AWS CDK construct for lambda-ml-serve: a model as a Lambda container image behind a Function URL.

Its own distribution, so the CDK libraries never enter the framework's install or the image::

    from lambda_ml_serve_cdk import ModelFunction

    model = ModelFunction(stack, "WineQuality", model="wine_quality")
    model.grant_invoke_url(role)
    scoring = BatchScoring(stack, "Scoring", model_function=model)  # score S3 tables with it
"""

from lambda_ml_serve_cdk.batch import BatchScoring
from lambda_ml_serve_cdk.construct import CONTEXT_ROOT_KEY, LIVE_ALIAS, ModelFunction, default_context_dir
from lambda_ml_serve_cdk.cors import ModelCors
from lambda_ml_serve_cdk.errors import ModelFunctionError
from lambda_ml_serve_cdk.rendering import RenderedContext, RenderedZip, ensure_build_context, ensure_deployment_zip

__version__ = "0.1.0"

__all__ = [
    "CONTEXT_ROOT_KEY",
    "LIVE_ALIAS",
    "BatchScoring",
    "ModelCors",
    "ModelFunction",
    "ModelFunctionError",
    "RenderedContext",
    "RenderedZip",
    "__version__",
    "default_context_dir",
    "ensure_build_context",
    "ensure_deployment_zip",
]
