"""SnapStart: what runs before Lambda snapshots an initialised environment, and after it restores one.

With SnapStart, Lambda runs init (the model loads at import of the handler) once per published
version, snapshots the memory, and starts every new environment from that snapshot. So the
snapshot should hold everything warm, and whatever must differ between environments is refreshed
after each restore. The managed runtime runs the callables registered with its
``snapshot_restore_py`` module; where that module is absent (local serving, most containers)
nothing is registered and nothing changes.

A predictor (the object a backend's ``load`` returns) may define ``before_snapshot()`` and
``after_restore()`` for state of its own, e.g. a connection, a seed or a timestamp taken at load.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambda_ml_serve.runtime.app import App


def install(app: App) -> bool:
    """Register ``app``'s snapshot hooks with the runtime when it supports them; whether it did."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(before_snapshot, app)
    register_after_restore(after_restore, app)
    return True


def before_snapshot(app: App) -> None:
    """Answer the model's example rows once, so first-call work (allocations, lazy set-up) is in the snapshot."""
    if app.spec.example:
        app.predict(list(app.spec.example))
    hook = getattr(app.predictor, "before_snapshot", None)
    if hook is not None:
        hook()


def after_restore(app: App) -> None:
    """Refresh per-environment state: every environment restored from one snapshot starts identical."""
    # Without a new seed, each restored copy would draw the same "random" numbers.
    random.seed()
    hook = getattr(app.predictor, "after_restore", None)
    if hook is not None:
        hook()
