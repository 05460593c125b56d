{%- set m = cookiecutter.model -%}
"""Registers the {{ cookiecutter.model_name }} model with lambda-ml-serve (entry point ``{{ cookiecutter.model_name }}``)."""

import json
from importlib.resources import files

from lambda_ml_serve import hookimpl
from lambda_ml_serve.spec import ModelSpec

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.schema import {{ cookiecutter.__schema_class }}

#: {{ m.format }}, copied unchanged from {{ m.source_file }} (sha256 {{ m.sha256 }}).
ARTIFACT = {{ cookiecutter.artifact|tojson }}
CARD = "model_card.json"
#: A request body the model answers: the example in the metadata, the docs and the tests.
EXAMPLE_FILE = "example.json"

EXAMPLE = tuple(json.loads(files(__package__).joinpath(EXAMPLE_FILE).read_text(encoding="utf-8"))["instances"])
{%- if m.requirements %}
#: {{ m.requirements_why }}
REQUIREMENTS = {{ m.requirements|tojson }}
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
            output={{ m.output|tojson }},
            example=EXAMPLE,
{%- if m.requirements %}
            requirements=REQUIREMENTS,
{%- endif %}
{%- if m.extra %}
            # The backend answers class probabilities{% if m.classes_literal %}; the answer adds each row's label{% endif %}.
            extra={{ m.extra_literal }},
{%- endif %}
{%- if m.classes_literal %}
            # A classifier: each row is answered with its label and the class probabilities, in this order.
            classes={{ m.classes_literal }},
{%- endif %}
        )
    )
