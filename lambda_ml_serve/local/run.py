"""A model run on this machine: its metadata and OpenAPI document, one invocation, a local Function URL."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.plugins import Registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.settings import DOCS_ENV, MODEL_ENV


def model_info(registry: Registry, model: str, artifact: Path | None = None) -> dict[str, Any]:
    """The model's metadata (without schema and example), its plugin, artifact and requirements."""
    registered = registry.model(model)
    app = App.load(model, registry=registry, artifact=artifact)
    spec = registered.spec
    backend = registry.backend(spec.backend)
    info = {k: v for k, v in app.metadata.items() if k not in ("input_schema", "example")}
    return info | {
        "plugin": registered.plugin.name,
        "distribution": f"{registered.plugin.distribution} {registered.plugin.version}",
        "artifact": str(artifact.absolute() if artifact else spec.artifact_path),
        "requirements": [*backend.requirements, *spec.requirements],
    }


def openapi_document(registry: Registry, model: str) -> dict[str, Any]:
    """The model's OpenAPI 3.1 document, as GET /openapi.json answers it."""
    return App.load(model, registry=registry, log_stream=sys.stderr).openapi


def invoke(registry: Registry, model: str, body: bytes, path: str = "/", artifact: Path | None = None) -> dict:
    """The handler's whole response to a Function URL event that POSTs ``body`` to ``path``."""
    app = App.load(model, registry=registry, log_stream=sys.stderr, artifact=artifact)
    return app(to_event("POST", path, [("content-type", "application/json")], body))


def error_line(response: dict[str, Any]) -> str | None:
    """``status type: message`` of an error response, None for a success."""
    if response["statusCode"] < 400:
        return None
    error = json.loads(response["body"])["error"]
    return f"{response['statusCode']} {error['type']}: {error['message']}"


def serve(
    registry: Registry,
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    image: str | None = None,
    concurrency: int = 1,
    artifact: Path | None = None,
    log_format: str = "auto",
    cors_origins: tuple[str, ...] = (),
    announce: Callable[[str], None] = print,
) -> None:
    """Serve ``model`` on a local Function URL until Ctrl+C or SIGTERM: in-process, or ``image`` under the RIE.

    ``log_format`` is ``text`` (an access line per request), ``json`` (the function's JSON log lines) or
    ``auto`` (text on a terminal); ``cors_origins`` are the web origins allowed to call it.
    """
    from lambda_ml_serve.local.server import Cors, FunctionUrlServer, access_log_for, listen

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # uvicorn re-raises SIGTERM after its shutdown: remove the containers first

    signal.signal(signal.SIGTERM, stop)
    access_log = access_log_for(log_format, sys.stderr)
    listen(host, port).close()  # a busy port or an unknown host fails before the model loads
    with ExitStack() as stack:
        if image:
            from lambda_ml_serve.local.container import RieContainer

            env = {MODEL_ENV: model, DOCS_ENV: "1"}
            environments = [
                stack.enter_context(RieContainer(image, env=env, log_stream=sys.stderr)).invoke
                for _ in range(concurrency)
            ]
        else:
            environments = [
                App.load(model, registry=registry, log_stream=access_log or sys.stderr, docs=True, artifact=artifact)
                for _ in range(concurrency)
            ]
        cors = Cors(cors_origins) if cors_origins else None
        server = FunctionUrlServer(environments, host, port, cors=cors, access_log=access_log)
        stack.callback(server.close)
        where = f"image {image}" if image else "in-process"
        announce(f"Serving {model} ({where}, {concurrency} environment(s)) on {server.url} (Ctrl+C to stop)")
        with suppress(KeyboardInterrupt):
            server.serve_forever()
