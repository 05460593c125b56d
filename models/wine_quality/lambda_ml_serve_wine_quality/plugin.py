"""Registers the wine quality model with lambda-ml-serve (entry point ``wine_quality``)."""

from lambda_ml_serve import hookimpl
from lambda_ml_serve.checks import ExactlyOne
from lambda_ml_serve.spec import ModelSpec
from lambda_ml_serve_wine_quality import __version__
from lambda_ml_serve_wine_quality.schema import WineSample

EXAMPLE = (
    {
        "fixed acidity": 6.6,
        "volatile acidity": 0.24,
        "citric acid": 0.28,
        "residual sugar": 1.8,
        "chlorides": 0.028,
        "free sulfur dioxide": 39.0,
        "total sulfur dioxide": 132.0,
        "density": 0.99182,
        "pH": 3.34,
        "sulphates": 0.46,
        "alcohol": 11.4,
        "color_red": 0,
        "color_white": 1,
    },
    {
        "fixed acidity": 8.7,
        "volatile acidity": 0.78,
        "citric acid": 0.51,
        "residual sugar": 1.7,
        "chlorides": 0.415,
        "free sulfur dioxide": 12.0,
        "total sulfur dioxide": 66.0,
        "density": 0.99623,
        "pH": 3.0,
        "sulphates": 1.17,
        "alcohol": 9.2,
        "color_red": 1,
        "color_white": 0,
    },
)


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="wine_quality",
            version=__version__,
            description=(
                "Predicts the sensory quality score (3-9) of a red or white wine from 11 "
                "physico-chemical measurements (UCI Wine Quality data)."
            ),
            backend="xgboost",
            package="lambda_ml_serve_wine_quality",
            artifact="model.json",
            card="model_card.json",
            schema=WineSample,
            output="predicted quality score, roughly 3 to 9 (higher is better)",
            example=EXAMPLE,
            trainer="lambda_ml_serve_wine_quality.train:train",
            # For the rows the fast path decodes (no "color" key: that spelling is an unknown field to
            # it), the schema's validators check only that the row is red or white, not both.
            batch_checks=(ExactlyOne(("color_red", "color_white")),),
        )
    )
