"""The serving manifest: what ``build`` resolved about a model, written next to its artifact as data.

The handler's init reads it instead of scanning entry points, importing pluggy, pydantic and the
plugin, and deriving the fast decoder: model name, version, backend (and the class that loads it),
feature order, the request path with the fast decoder's plan, and the artifact. The plugin's
``ModelSpec`` is still found through the registry, on first need: a request the fast path does not
answer, or ``GET /``.

Without a manifest (local ``serve``, ``invoke``, tests) the app loads through the registry as before.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.runtime.fast import RequestPath, derive
from lambda_ml_serve.runtime.settings import ARTIFACT_ENV, BACKEND_ENV, MODEL_ENV, check_classes, check_features

if TYPE_CHECKING:
    from lambda_ml_serve.spec import Backend, ModelSpec, Predictor

#: Written by ``build`` into the artifacts folder; found next to ``LAMBDA_ML_SERVE_ARTIFACT``.
MANIFEST_NAME = "serving.json"
#: Version of the file's layout; a manifest of another format is ignored (the registry loads instead).
FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """One model as the image serves it."""

    model: str
    version: str
    backend: str
    features: tuple[str, ...]
    max_rows: int
    request_path: RequestPath
    #: ``module:Class`` of the backend, made without arguments; None when the registry must make it.
    backend_class: str | None = None
    #: The model's ``ModelSpec.extra``, handed to the backend's ``load``.
    options: Mapping[str, Any] = field(default_factory=dict)
    artifact: Path | None = None
    #: The model's answer shape (``ModelSpec.response``); ``LAMBDA_ML_SERVE_RESPONSE`` may still override it.
    response: str = "object"
    #: A classifier's labels (``ModelSpec.classes``): answers carry labels and probabilities.
    classes: tuple[Any, ...] | None = None

    @classmethod
    def of(cls, spec: ModelSpec, backend_name: str, backend: Backend | None = None, artifact: Path | None = None):
        """Describe ``spec`` served with ``backend_name`` (derives the request path: imports pydantic)."""
        backend_class = f"{type(backend).__module__}:{type(backend).__qualname__}" if backend is not None else None
        return cls(
            model=spec.name,
            version=spec.version,
            backend=backend_name,
            features=spec.feature_names,
            max_rows=spec.max_rows,
            request_path=derive(spec),
            backend_class=backend_class,
            options=dict(spec.extra),
            artifact=artifact,
            response=spec.response,
            classes=None if spec.classes is None else tuple(spec.classes),
        )

    def write(self, path: Path) -> None:
        """Write the manifest; the artifact must be in the same folder (the image moves them together)."""
        if self.artifact is None or self.artifact.parent != path.parent:
            raise ValueError(f"the artifact must sit beside the manifest in {path.parent}")
        data = {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "backend": self.backend,
            "backend_class": self.backend_class,
            "options": dict(self.options),
            "features": list(self.features),
            "max_rows": self.max_rows,
            "artifact": self.artifact.name,
            "request_path": self.request_path.to_json(),
            "response": self.response,
            "classes": None if self.classes is None else list(self.classes),
        }
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        """The manifest at ``path``, or None when there is none of this format."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        return cls(
            model=data["model"],
            version=data["version"],
            backend=data["backend"],
            features=tuple(data["features"]),
            max_rows=data["max_rows"],
            request_path=RequestPath.from_json(data["request_path"]),
            backend_class=data["backend_class"],
            options=data["options"],
            artifact=path.parent / data["artifact"],
            response=data.get("response", "object"),
            classes=None if data.get("classes") is None else tuple(data["classes"]),
        )

    def load_predictor(self) -> Predictor:
        """Load the artifact with the backend class the manifest names, and check its features."""
        module, _, name = (self.backend_class or "").partition(":")
        try:
            backend = getattr(importlib.import_module(module), name)()
            predictor = backend.load(self.artifact, options=self.options)
        except Exception as exc:
            raise ModelLoadError(
                f"model {self.model!r} failed to load {self.artifact} with backend {self.backend!r} "
                f"({self.backend_class}): {type(exc).__name__}: {exc}"
            ) from exc
        check_features(predictor, self.features, f"model {self.model!r}")
        check_classes(predictor, self.classes, f"model {self.model!r}")
        return predictor

    def load_spec(self) -> ModelSpec:
        """The plugin's spec, through the registry (imports pluggy, pydantic and the plugin)."""
        from lambda_ml_serve.plugins import get_registry

        return get_registry().model(self.model).spec


def find_manifest(environ: Mapping[str, str] = os.environ) -> Manifest | None:
    """The manifest beside ``LAMBDA_ML_SERVE_ARTIFACT``, if it describes what the environment asks for.

    A model, artifact or backend chosen in the environment other than the manifest's means the image
    is asked to serve something else, so the registry loads that instead.
    """
    artifact = environ.get(ARTIFACT_ENV)
    if not artifact:
        return None
    manifest = Manifest.read(Path(artifact).parent / MANIFEST_NAME)
    if manifest is None or manifest.backend_class is None or manifest.artifact != Path(artifact):
        return None
    if environ.get(MODEL_ENV, manifest.model) != manifest.model:
        return None
    if (environ.get(BACKEND_ENV) or manifest.backend) != manifest.backend:
        return None
    return manifest
