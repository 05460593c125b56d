"""The Lambda entry point: ``lambda_ml_serve.runtime.handler.handler``.

The model loads at import, during Lambda's init phase, once per execution environment (with
SnapStart: once per published version, into the snapshot; see ``snapstart``).
"""

from typing import Any

from lambda_ml_serve.runtime import snapstart
from lambda_ml_serve.runtime.app import App

app = App.load()
snapstart.install(app)


def handler(event: Any, context: Any) -> dict[str, Any]:
    return app(event, context)
