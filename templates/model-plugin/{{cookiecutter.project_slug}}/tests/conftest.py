"""Shared fixtures: the model is trained once if the package has none yet."""

from importlib.resources import files

import pytest

from {{ cookiecutter.package_name }}.plugin import ARTIFACT


@pytest.fixture(scope="session", autouse=True)
def trained_model() -> None:
    """Projects created where scikit-learn was missing ship no model: train it on synthetic rows."""
    if not files("{{ cookiecutter.package_name }}").joinpath(ARTIFACT).is_file():
        from {{ cookiecutter.package_name }}.train import train

        train()
