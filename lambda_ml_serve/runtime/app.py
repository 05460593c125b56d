"""The serving application: load one model once, then answer events top to bottom.

event -> parse (base64, JSON) -> rows -> validate -> float32 batch -> predict -> response + log line
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from lambda_ml_serve.errors import ModelLoadError, ModelNotFoundError
from lambda_ml_serve.plugins import RegisteredModel, Registry, get_registry
from lambda_ml_serve.runtime.errors import ApiError
from lambda_ml_serve.runtime.http import Request, http_response, is_http_event, parse_event, request_id_of
from lambda_ml_serve.runtime.telemetry import emit, request_record
from lambda_ml_serve.runtime.validation import RowValidator, rows_of
from lambda_ml_serve.spec import ModelSpec, Predictor

MODEL_ENV = "LAMBDA_ML_SERVE_MODEL"
#: Set by `build` to the prepared artifact (e.g. UBJ) inside the image.
ARTIFACT_ENV = "LAMBDA_ML_SERVE_ARTIFACT"
MAX_ROWS_ENV = "LAMBDA_ML_SERVE_MAX_ROWS"
#: Set by `build` when the image serves the artifact with another backend than the spec's (e.g. compiled).
BACKEND_ENV = "LAMBDA_ML_SERVE_BACKEND"
PREDICT_PATHS = frozenset({"/", "/predict"})


def choose_model(registry: Registry, name: str | None) -> RegisteredModel:
    """The named model, or the only installed one when no name is given."""
    if name:
        return registry.model(name)
    if len(registry.models) == 1:
        return next(iter(registry.models.values()))
    known = ", ".join(sorted(registry.models)) or "none installed"
    raise ModelNotFoundError(f"set {MODEL_ENV} to choose a model ({known})")


def load_predictor(
    model: RegisteredModel, registry: Registry, artifact: Path | None = None, backend: str | None = None
) -> Predictor:
    """Load the model through its backend and check its features against the schema."""
    spec = model.spec
    path = artifact or spec.artifact_path
    try:
        predictor = registry.backend(backend or spec.backend).load(path, options=spec.extra)
    except Exception as exc:
        raise ModelLoadError(
            f"{model.plugin}: model {spec.name!r} failed to load {path} with backend "
            f"{backend or spec.backend!r}: {type(exc).__name__}: {exc}"
        ) from exc
    stored = predictor.feature_names
    if stored is not None and tuple(stored) != spec.feature_names:
        missing = [f for f in stored if f not in spec.feature_names]
        unknown = [f for f in spec.feature_names if f not in stored]
        what = (
            f"schema lacks {missing} and has {unknown} that the model does not know"
            if missing or unknown
            else "same names, different order"
        )
        raise ModelLoadError(
            f"{model.plugin}: model {spec.name!r}: schema fields do not match the artifact's "
            f"features ({what}); the artifact expects {list(stored)}. Reorder or rename the "
            "schema fields (or their aliases) to match."
        )
    return predictor


class App:
    """Answers Function URL events and direct invocations for one loaded model."""

    def __init__(
        self,
        spec: ModelSpec,
        predictor: Predictor,
        *,
        max_rows: int | None = None,
        log_stream: TextIO | None = None,
        backend: str | None = None,
    ) -> None:
        self.spec = spec
        self.predictor = predictor
        self.backend = backend or spec.backend
        self.validator = RowValidator(spec, max_rows or spec.max_rows)
        self._log_stream = log_stream

    @classmethod
    def load(
        cls,
        model: str | None = None,
        *,
        artifact: Path | None = None,
        backend: str | None = None,
        registry: Registry | None = None,
        **kwargs: Any,
    ) -> App:
        """Load a model from the installed plugins; environment variables fill what is not given.

        ``artifact`` replaces the plugin's own file (e.g. a prepared UBJ, or a model trained elsewhere);
        ``backend`` loads it with another backend than the spec's (e.g. ``compiled``).
        """
        registry = registry or get_registry()
        chosen = choose_model(registry, model or os.environ.get(MODEL_ENV))
        if artifact is None and os.environ.get(ARTIFACT_ENV):
            artifact = Path(os.environ[ARTIFACT_ENV])
        backend = backend or os.environ.get(BACKEND_ENV) or None
        predictor = load_predictor(chosen, registry, artifact, backend)
        if "max_rows" not in kwargs and os.environ.get(MAX_ROWS_ENV):
            kwargs["max_rows"] = int(os.environ[MAX_ROWS_ENV])
        return cls(chosen.spec, predictor, backend=backend, **kwargs)

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """What GET / answers; built on first use to keep it out of cold start."""
        spec = self.spec
        card = spec.load_card()
        return {
            "model": spec.name,
            "version": spec.version,
            "description": spec.description,
            "backend": self.backend,
            "features": list(spec.feature_names),
            "output": spec.output,
            "max_rows": self.validator.max_rows,
            "input_schema": spec.schema.model_json_schema(by_alias=True),
            "example": {"instances": list(spec.example)},
            "metrics": card.get("metrics", {}),
        } | ({"classes": classes} if (classes := getattr(self.predictor, "classes", None)) is not None else {})

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        started = time.perf_counter()
        is_http = is_http_event(event)
        request_id = request_id_of(event, getattr(context, "aws_request_id", None) or str(uuid.uuid4()))
        rows, error_log = 0, None
        try:
            status, payload, headers = self._route(parse_event(event, request_id))
            rows = len(payload.get("predictions", ()))
        except ApiError as exc:
            status, payload, headers, rows = exc.status, exc.to_dict(), exc.headers, exc.rows
        except Exception as exc:  # the client gets no stack trace; the log keeps it
            error_log = "".join(traceback.format_exception(exc)).rstrip()
            error = ApiError("internal_error", f"internal error; quote request id {request_id}")
            status, payload, headers = error.status, error.to_dict(), {}
        emit(
            request_record(
                request_id=request_id,
                model=self.spec.name,
                version=self.spec.version,
                status=status,
                rows=rows,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=error_log,
            ),
            self._log_stream,
        )
        return http_response(status, payload, request_id, headers) if is_http else payload

    def _route(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not request.http:
            return 200, self.predict(request.payload), {}
        if request.path not in PREDICT_PATHS:
            raise ApiError(
                "not_found", f"no route {request.path!r}; POST / or /predict to predict, GET / for metadata"
            )
        if request.method == "POST":
            return 200, self.predict(self._parse_body(request.body)), {}
        if request.method == "GET" and request.path == "/":
            return 200, self.metadata, {}
        allowed = "GET, POST" if request.path == "/" else "POST"
        raise ApiError(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; use {allowed}",
            headers={"allow": allowed},
        )

    @staticmethod
    def _parse_body(body: bytes) -> Any:
        if not body.strip():
            raise ApiError("bad_request", 'the request body is empty; send JSON such as [{"feature": 1.0}]')
        try:
            # The stdlib parser measured faster than pydantic_core's here for row lists.
            return json.loads(body)
        except UnicodeDecodeError:
            raise ApiError("bad_request", "the body is not UTF-8 encoded JSON") from None
        except ValueError as exc:
            # The parser's message gives the position, never the payload itself.
            raise ApiError("bad_request", f"the body is not valid JSON: {exc}") from None

    def predict(self, payload: Any) -> dict[str, Any]:
        rows = rows_of(payload)
        try:
            batch = self.validator.to_batch(rows)
        except ApiError as exc:
            exc.rows = len(rows)  # the log line counts the rows sent, answered or not
            raise
        predictions = self.predictor.predict(batch)
        return {"model": self.spec.name, "version": self.spec.version, "predictions": predictions}

