{% extends "plugin.py.j2" %}
{%- block artifact %}
{%- if cookiecutter.backend == "xgboost" %}
#: An XGBoost booster in JSON; `lambda-ml-serve build` converts it to UBJ for the image.
ARTIFACT = "model.json"
{%- else %}
#: A fitted scikit-learn estimator saved with joblib. It is a pickle: ship only files you made.
ARTIFACT = "model.joblib"
{%- endif %}
{%- endblock %}
{%- block helpers %}
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
{%- endblock %}
{%- block output %}
{%- if cookiecutter.task == "regression" %}"the predicted target value"
{%- else %}"the probability of each class, in the order of `classes` in the model card"
{%- endif %}
{%- endblock %}
{%- block options %}
{%- if cookiecutter.backend == "sklearn" %}
            requirements=trained_with(),
{%- endif %}
{%- if cookiecutter.backend == "sklearn" and cookiecutter.task == "classification" %}
            # Probabilities rather than labels; drop this to answer the predicted class instead.
            extra={"predict_proba": True},
{%- endif %}
            trainer="{{ cookiecutter.package_name }}.train:train",
{%- endblock %}
