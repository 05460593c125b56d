"""The {{ cookiecutter.model_name }} model plugin for lambda-ml-serve."""

__version__ = "{{ cookiecutter.version }}"
