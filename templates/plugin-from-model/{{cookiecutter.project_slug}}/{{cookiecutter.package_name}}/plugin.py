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
            # The backend answers class probabilities{% if m.classes_literal %}; the answer adds each row's label{% endif %}.
            extra={{ m.extra_literal }},
{%- endif %}
{%- if m.classes_literal %}
            # A classifier: each row is answered with its label and the class probabilities, in this order.
            classes={{ m.classes_literal }},
{%- endif %}
{%- endblock %}
