"""The function's settings: the environment variables ``build`` and the CDK construct set, and their checks.

A small leaf module: the app, the manifest loader, bundling and the construct all read these names
from here, so none of them needs to import the app for a constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import RESPONSES

if TYPE_CHECKING:
    from lambda_ml_serve.spec import Predictor

#: The model to serve, when several plugins are installed.
MODEL_ENV = "LAMBDA_ML_SERVE_MODEL"
#: Set by `build` to the prepared artifact (e.g. UBJ) inside the image.
ARTIFACT_ENV = "LAMBDA_ML_SERVE_ARTIFACT"
MAX_ROWS_ENV = "LAMBDA_ML_SERVE_MAX_ROWS"
#: Set by `build` when the image serves the artifact with another backend than the spec's (e.g. compiled).
BACKEND_ENV = "LAMBDA_ML_SERVE_BACKEND"
#: Set by `build` to the sha256 of the model file it was given, so the image never hashes at init.
SHA256_ENV = "LAMBDA_ML_SERVE_MODEL_SHA256"
#: Set by `build --response` (or the CDK prop): "predictions" answers the bare array.
RESPONSE_ENV = "LAMBDA_ML_SERVE_RESPONSE"
#: Set by `build --docs` (or the CDK prop) to "1": the function serves GET /docs.
DOCS_ENV = "LAMBDA_ML_SERVE_DOCS"


def check_features(predictor: Predictor, features: Sequence[str], who: str) -> None:
    """The artifact's stored feature names (if any) must be the schema's, in order."""
    stored = predictor.feature_names
    if stored is not None and tuple(stored) != tuple(features):
        missing = [f for f in stored if f not in features]
        unknown = [f for f in features if f not in stored]
        what = (
            f"schema lacks {missing} and has {unknown} that the model does not know"
            if missing or unknown
            else "same names, different order"
        )
        raise ModelLoadError(
            f"{who}: schema fields do not match the artifact's "
            f"features ({what}); the artifact expects {list(stored)}. Reorder or rename the "
            "schema fields (or their aliases) to match."
        )


def check_classes(predictor: Predictor, classes: Sequence[Any] | None, who: str) -> None:
    """A classifier's labels must be the ones its predictor knows (when it knows any), in its order."""
    known = getattr(predictor, "classes", None)
    if classes is None or known is None:
        return
    if list(known) == list(range(len(classes))):
        return  # a predictor that knows class indices only (as XGBoost and LightGBM files do) takes the labels
    if [repr(c) for c in known] != [repr(c) for c in classes]:
        raise ModelLoadError(
            f"{who}: ModelSpec.classes {list(classes)} are not the model's own classes {list(known)} (same "
            "labels, same types, same order); set classes to the model's"
        )


def check_response(response: str) -> str:
    """The response shape option: ``object`` (the default) or ``predictions`` (the bare array)."""
    if response not in RESPONSES:
        raise ModelLoadError(f"{RESPONSE_ENV}: response must be one of {', '.join(RESPONSES)}; got {response!r}")
    return response
