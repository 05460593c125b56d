"""Registers the built-in backends through the same hook external plugins use."""

from lambda_ml_serve import hookimpl
from lambda_ml_serve.backends.compiled import CompiledBackend
from lambda_ml_serve.backends.lightgbm import LightGBMBackend
from lambda_ml_serve.backends.onnx import OnnxBackend
from lambda_ml_serve.backends.sklearn import SklearnBackend
from lambda_ml_serve.backends.xgboost import XGBoostBackend


@hookimpl
def register_backends(register):
    register(XGBoostBackend())
    register(CompiledBackend())
    register(SklearnBackend())
    register(OnnxBackend())
    register(LightGBMBackend())
