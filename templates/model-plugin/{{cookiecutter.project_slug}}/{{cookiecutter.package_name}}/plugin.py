"""Registers the {{ cookiecutter.model_name }} model with lambda-ml-serve (entry point ``{{ cookiecutter.model_name }}``)."""

import json
from importlib.resources import files

from lambda_ml_serve import hookimpl
from lambda_ml_serve.spec import ModelSpec

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.schema import {{ cookiecutter.__schema_class }}

{%- if cookiecutter.backend == "xgboost" %}

#: An XGBoost booster in JSON; `lambda-ml-serve build` converts it to UBJ for the image.
ARTIFACT = "model.json"
{%- else %}

#: A fitted scikit-learn estimator saved with joblib. It is a pickle: ship only files you made.
ARTIFACT = "model.joblib"
{%- endif %}
CARD = "model_card.json"
#: A request body the model answers: the example in the metadata, the docs and the tests.
EXAMPLE_FILE = "example.json"

EXAMPLE = tuple(json.loads(files(__package__).joinpath(EXAMPLE_FILE).read_text(encoding="utf-8"))["instances"])
{%- if cookiecutter.backend == "sklearn" %}


def trained_with() -> tuple[str, ...]:
    """The scikit-learn release that pickled the model, as train.py recorded it in the model card.

    A pickled estimator is only supported by the release that wrote it, so the image installs
    exactly that one.
    """
    card = files(__package__).joinpath(CARD)
    if not card.is_file():
        return ()  # not trained yet: `lambda-ml-serve list` reports the missing artifact
    return tuple(json.loads(card.read_text(encoding="utf-8"))["requirements"])
{%- endif %}


@hookimpl
def register_models(register):
    register(
        ModelSpec(
            name="{{ cookiecutter.model_name }}",
            version=__version__,
            description={{ cookiecutter.description|tojson }},
            backend="{{ cookiecutter.backend }}",
            package=__package__,
            artifact=ARTIFACT,
            card=CARD,
            schema={{ cookiecutter.__schema_class }},
{%- if cookiecutter.task == "regression" %}
            output="the predicted target value",
{%- else %}
            output="the probability of each class, in the order of `classes` in the model card",
{%- endif %}
            example=EXAMPLE,
{%- if cookiecutter.backend == "sklearn" %}
            requirements=trained_with(),
{%- endif %}
{%- if cookiecutter.backend == "sklearn" and cookiecutter.task == "classification" %}
            # Probabilities rather than labels; drop this to answer the predicted class instead.
            extra={"predict_proba": True},
{%- endif %}
            trainer="{{ cookiecutter.package_name }}.train:train",
        )
    )
