{% extends "plugin.py.j2" %}
{%- set m = cookiecutter.model %}
{%- block artifact %}
#: {{ m.format }}, copied unchanged from {{ m.source_file }} (sha256 {{ m.sha256 }}).
ARTIFACT = {{ cookiecutter.artifact|tojson }}
{%- endblock %}
{%- block helpers %}
{%- if m.requirements %}
#: {{ m.requirements_why }}
REQUIREMENTS = {{ m.requirements|tojson }}
{%- endif %}
{%- endblock %}
{%- block output %}{{ m.output|tojson }}{% endblock %}
{%- block options %}
{%- if m.requirements %}
            requirements=REQUIREMENTS,
{%- endif %}
{%- if m.extra %}
            # Probabilities rather than labels; drop this to answer the predicted class instead.
            extra={{ m.extra_literal }},
{%- endif %}
{%- endblock %}
