"""The {{ cookiecutter.model_name }} model plugin for lambda-ml-serve, generated from {{ cookiecutter.model.source_file }}."""

__version__ = "{{ cookiecutter.version }}"
