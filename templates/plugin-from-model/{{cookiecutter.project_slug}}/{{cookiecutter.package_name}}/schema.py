{%- set m = cookiecutter.model -%}
"""The input schema: one row the model predicts for. Field order is the model's feature order.

Generated from {{ m.source_file }}: names from {{ m.names_detail }}; types from {{ m.types_detail }}.
{%- if m.aliased %}
A field several names reach lists them in its validation alias: requests may use any of them
(``{{ m.aliased[0].names|join("``, ``") }}``).
{%- endif %}
{%- if m.data_file %}
The ranges in the descriptions were observed in {{ m.data_file }}; they are not enforced (add
``ge=``/``le=`` to a field to refuse values outside a range).
{%- endif %}
"""

from __future__ import annotations

{% if m.categorical -%}
from typing import Annotated

{% endif -%}
from pydantic import {% if m.aliased %}AliasChoices, {% endif %}BaseModel, ConfigDict, Field
{%- if m.categorical %}

from lambda_ml_serve.fields import Category
{%- endif %}


class {{ cookiecutter.__schema_class }}(BaseModel):
    """One row of {{ cookiecutter.model_name }}'s input."""

    # extra="forbid": a misspelt feature is an error, not a silently missing value.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="{{ cookiecutter.__schema_class }}")
{% for f in m.features %}
    {{ f.field }}: {{ f.annotation }} = Field(
{%- if f.names|length > 1 %}
        alias={{ f.name|tojson }},
        validation_alias=AliasChoices({% for key in f.names %}{{ key|tojson }}{% if not loop.last %}, {% endif %}{% endfor %}),
{%- endif %}
{%- for key, value in f.constraints.items() %}
        {{ key }}={{ value }},
{%- endfor %}
        description={{ f.description|tojson }},
    )
{%- endfor %}


#: Feature names in model order, as requests spell them (a field's alias, else its name).
FEATURES = tuple(field.alias or name for name, field in {{ cookiecutter.__schema_class }}.model_fields.items())
