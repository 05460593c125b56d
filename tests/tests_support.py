"""Paths shared by tests that need no fixtures."""

from conftest import LEGACY_MODELS

LEGACY_MODEL = LEGACY_MODELS["1.6.2"]
