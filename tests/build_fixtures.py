"""Rendered build contexts for wine_quality, each rendered once per test session.

Use from any test module with ``pytest_plugins = ["build_fixtures"]``: the fixtures are then defined
once, and every module shares the same renders.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from lambda_ml_serve.bundling.context import HOST_ARCH, BuildContext, render_build_context

MODEL = "wine_quality"
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

_rendered: dict[tuple[str, str], BuildContext] = {}


@pytest.fixture(scope="session")
def build_contexts(tmp_path_factory) -> Callable[[str, str], BuildContext]:
    """``build_contexts(arch, python)``: the wine_quality context for that target, rendered on first use."""

    def get(arch: str = "x86_64", python: str = "3.12") -> BuildContext:
        if (arch, python) not in _rendered:
            folder = tmp_path_factory.mktemp(f"context-{arch}-py{python}") / f"{MODEL}-{arch}"
            _rendered[arch, python] = render_build_context(MODEL, folder, arch=arch, python=python)
        return _rendered[arch, python]

    return get


@pytest.fixture(scope="session")
def serving_context(build_contexts) -> BuildContext:
    """The context for this host's architecture and Python, whose site-packages this host can run."""
    return build_contexts(HOST_ARCH, HOST_PYTHON)
