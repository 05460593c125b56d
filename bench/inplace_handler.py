"""The framework's handler with the xgboost backend's previous run time: the xgboost package's ``inplace_predict``.

The same request path as ``lambda_ml_serve.runtime.handler``; only the predictor differs (the one the
build's parity check uses as its reference), so the two xgboost variants compare the C API through
ctypes with the Python package on the same model.
"""

import os
from pathlib import Path

from lambda_ml_serve.backends.xgboost.prepare import InplacePredictor
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.settings import ARTIFACT_ENV, MODEL_ENV

app = App(get_registry().model(os.environ[MODEL_ENV]).spec, InplacePredictor(Path(os.environ[ARTIFACT_ENV])))


def handler(event, context):
    return app(event, context)
