{%- set m = cookiecutter.model -%}
"""The input schema: one row the model predicts for. Field order is the model's feature order.

Generated from {{ m.source_file }}: names from {{ m.names_detail }}; types from {{ m.types_detail }}.
{%- if m.aliased %}
A name that is not a Python identifier is the field's alias: requests use the original name
(``{{ m.aliased[0].name }}``) or the field's own (``{{ m.aliased[0].field }}``).
{%- endif %}
{%- if m.data_file %}
The ranges in the descriptions were observed in {{ m.data_file }}; they are not enforced (add
``ge=``/``le=`` to a field to refuse values outside a range).
{%- endif %}
"""

from __future__ import annotations

from pydantic import {% if m.aliased %}AliasChoices, {% endif %}BaseModel, ConfigDict, Field


class {{ cookiecutter.__schema_class }}(BaseModel):
    """One row of {{ cookiecutter.model_name }}'s input."""

    # extra="forbid": a misspelt feature is an error, not a silently missing value.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="{{ cookiecutter.__schema_class }}")
{% for f in m.features %}
    {{ f.field }}: {{ f.annotation }} = Field(
{%- if f.field != f.name %}
        alias={{ f.name|tojson }},
        validation_alias=AliasChoices({{ f.name|tojson }}, {{ f.field|tojson }}),
{%- endif %}
{%- for key, value in f.constraints.items() %}
        {{ key }}={{ value }},
{%- endfor %}
        description={{ f.description|tojson }},
    )
{%- endfor %}


#: Feature names in model order, as requests spell them (a field's alias, else its name).
FEATURES = tuple(field.alias or name for name, field in {{ cookiecutter.__schema_class }}.model_fields.items())
