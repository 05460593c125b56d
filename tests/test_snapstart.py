"""SnapStart hooks: registered with the runtime's snapshot_restore_py, and doing what they promise when run."""

from __future__ import annotations

import importlib
import random
import sys

import pytest
import snapshot_restore_py

from lambda_ml_serve.runtime import snapstart
from lambda_ml_serve.runtime.app import App


class CountingPredictor:
    """The real predictor, counting the hook calls and predictions it gets."""

    def __init__(self, inner):
        self.inner = inner
        self.feature_names = inner.feature_names
        self.calls = {"before_snapshot": 0, "after_restore": 0, "predict": 0}

    def predict(self, batch):
        self.calls["predict"] += 1
        return self.inner.predict(batch)

    def before_snapshot(self):
        self.calls["before_snapshot"] += 1

    def after_restore(self):
        self.calls["after_restore"] += 1


def run(registry: list) -> None:
    """What the managed runtime does with the registered hooks."""
    for func, args, kwargs in registry:
        func(*args, **kwargs)


@pytest.fixture
def hooks(monkeypatch):
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])
    return snapshot_restore_py


def test_hooks_warm_the_model_before_the_snapshot_and_reseed_after_restore(hooks, wine_app):
    predictor = CountingPredictor(wine_app.predictor)
    app = App(wine_app.spec, predictor)
    assert snapstart.install(app) is True
    run(hooks.get_before_snapshot())
    assert predictor.calls == {"before_snapshot": 1, "after_restore": 0, "predict": 1}

    random.seed(1234)
    snapshot_draw = random.random()
    random.seed(1234)  # as every environment restored from one snapshot would be
    run(hooks.get_after_restore())
    assert random.random() != snapshot_draw
    assert predictor.calls["after_restore"] == 1


def test_without_the_runtime_module_nothing_is_registered(monkeypatch, wine_app):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # what `import` finds absent
    assert snapstart.install(wine_app) is False


def test_the_handler_registers_its_hooks_at_init(hooks, monkeypatch):
    monkeypatch.setenv("LAMBDA_ML_SERVE_MODEL", "wine_quality")
    monkeypatch.delitem(sys.modules, "lambda_ml_serve.runtime.handler", raising=False)
    handler = importlib.import_module("lambda_ml_serve.runtime.handler")
    try:
        assert [func for func, _, _ in hooks.get_before_snapshot()] == [snapstart.before_snapshot]
        assert [args for _, args, _ in hooks.get_after_restore()] == [(handler.app,)]
    finally:
        sys.modules.pop("lambda_ml_serve.runtime.handler", None)
