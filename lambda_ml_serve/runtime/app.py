"""The serving application: load one model once, then answer events top to bottom.

event (any source) -> fast path (decode + validate + pack in one pass), or, for whatever it does not
answer: route -> parse (base64, JSON) -> rows (any format) -> validate -> batch (float32, or float64
for a predictor whose ``input_type`` says so) -> predict -> answer in the request's dialect
-> response in the event source's format + log line

The full path (pydantic, pluggy, the plugin) is imported on first need when the app was loaded
from a serving manifest.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from lambda_ml_serve.errors import ModelLoadError, ModelNotFoundError
from lambda_ml_serve.runtime import classifier, formats, v2
from lambda_ml_serve.runtime import explain as explaining
from lambda_ml_serve.runtime.errors import ApiError
from lambda_ml_serve.runtime.fast import FastPath
from lambda_ml_serve.runtime.formats import MAX_DEPTH, nested_deeper_than
from lambda_ml_serve.runtime.http import Answer, Request, parse_event, request_id_of, respond
from lambda_ml_serve.runtime.items import answer_batch, is_batch_event
from lambda_ml_serve.runtime.manifest import Manifest, find_manifest
from lambda_ml_serve.runtime.settings import (
    ARTIFACT_ENV,
    BACKEND_ENV,
    DOCS_ENV,
    MAX_ROWS_ENV,
    MODEL_ENV,
    RESPONSE_ENV,
    SHA256_ENV,
    check_classes,
    check_features,
    check_response,
)
from lambda_ml_serve.runtime.telemetry import CAPTURE_ENV, Capture, RequestLog, capture_rate
from lambda_ml_serve.runtime.view import ModelView
from lambda_ml_serve.spec import ModelSpec, Predictor, input_typecode

if TYPE_CHECKING:
    from lambda_ml_serve.plugins import RegisteredModel, Registry
    from lambda_ml_serve.runtime.validation import RowValidator

#: Every answer names the model file that answered it.
SHA256_HEADER = "x-model-sha256"
PREDICT_PATHS = frozenset({"/", "/predict"})
#: MLflow's scoring protocol (and SageMaker's container contract): predict, and say the model is up.
INVOCATIONS, PING_PATHS = "/invocations", ("/ping", "/health")
#: KServe's own protocol (its clients' default, "v1"): model readiness, predict and explain.
V1_MODEL_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?P<action>:predict|:explain)?$")
HTML = "text/html; charset=utf-8"
#: The page's script and style are inline and it may only call this origin: nothing is fetched from elsewhere.
DOCS_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
}
#: Methods an answer may name; anything else an event carries is not repeated back.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
NOT_UTF8 = "the body is not UTF-8 encoded JSON"
#: The magic bytes of gzip and of zlib (HTTP's deflate) data, to name the cause when the header is missing.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
TOO_DEEP = f"the body is JSON nested more than {MAX_DEPTH} levels deep; rows are flat objects of feature values"


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
        # A backend's own ModelLoadError names the file and what it is not; anything else is cut to
        # its first line, so a library's multi-line dump stays out of a one-line error.
        reason = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
        reason = next((line.strip() for line in reason.splitlines() if line.strip()), type(exc).__name__)[:500]
        raise ModelLoadError(
            f"{model.plugin}: model {spec.name!r} failed to load {path} with backend {backend or spec.backend!r}: "
            f"{reason}"
        ) from exc
    check_features(predictor, spec.feature_names, f"{model.plugin}: model {spec.name!r}")
    check_classes(predictor, spec.classes, f"{model.plugin}: model {spec.name!r}")
    return predictor


def file_sha256(path: Path) -> str | None:
    """The hex sha256 of a file, or None when there is no such file (an App built around a stand-in)."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


class App:
    """Answers Function URL events and direct invocations for one loaded model."""

    def __init__(
        self,
        spec: ModelSpec | Manifest,
        predictor: Predictor,
        *,
        max_rows: int | None = None,
        log_stream: TextIO | None = None,
        backend: str | None = None,
        response: str | None = None,
        docs: bool = False,
        model_sha256: str | None = None,
        capture: float = 0.0,
        capture_stream: Any = None,
    ) -> None:
        """``spec`` is the plugin's spec, or a built image's serving manifest (the spec then loads on first need).

        ``capture`` is the share of answered prediction requests written as capture records, to
        ``capture_stream`` (default: the log stream); 0 captures nothing.
        """
        if isinstance(spec, Manifest):
            self.manifest = spec
        else:
            self.spec = spec
            self.manifest = Manifest.of(spec, backend or spec.backend)
        self.predictor = predictor
        self.backend = self.manifest.backend
        #: The sha256 of the model file served (the plugin's, or the one given instead of it).
        self.model_sha256 = model_sha256 or (file_sha256(spec.artifact_path) if isinstance(spec, ModelSpec) else None)
        self.max_rows = max_rows or self.manifest.max_rows
        #: Explanation requests carry at most this many rows (413 beyond).
        self.explain_max_rows = explaining.max_rows(self.max_rows)
        self.response = check_response(response or self.manifest.response)
        #: A classifier's labels: answers carry a label and the class probabilities per row.
        self.classes = self.manifest.classes
        self.docs = docs
        self.request_path = self.manifest.request_path
        #: The batch's array type, from the predictor's precision (``input_type``), chosen once here.
        self.typecode = input_typecode(predictor)
        plan = self.request_path.plan
        self.fast = FastPath(plan, self.max_rows, PREDICT_PATHS, self.typecode) if plan else None
        self._log = RequestLog(self.manifest.model, self.manifest.version, log_stream, self.model_sha256)
        self._capture = (
            Capture(
                capture, self.manifest.model, self.manifest.version, self.model_sha256, capture_stream or log_stream
            )
            if capture_rate(capture) > 0
            else None
        )
        self._identity = {SHA256_HEADER: self.model_sha256} if self.model_sha256 else {}
        self._routes = {
            "/": {"GET": self._get_metadata, "POST": self._post_predict},
            "/predict": {"POST": self._post_predict},
            explaining.EXPLAIN_PATH: {"POST": self._post_explain},
            INVOCATIONS: {"POST": self._post_invocations},
            **{path: {"GET": self._get_ping} for path in PING_PATHS},
            "/openapi.json": {"GET": self._get_openapi},
            "/docs": {"GET": self._get_docs},
            "/v2": {"GET": self._v2_server},
            "/v2/health/live": {"GET": self._v2_health},
            "/v2/health/ready": {"GET": self._v2_health},
        }

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

        Given nothing, in a built image, the serving manifest beside ``LAMBDA_ML_SERVE_ARTIFACT`` is
        read instead, when it describes what the environment asks for: no plugin is loaded then.
        ``artifact`` replaces the plugin's own file (e.g. a prepared UBJ, or a model trained elsewhere);
        ``backend`` loads it with another backend than the spec's (e.g. ``compiled``).
        """
        if "max_rows" not in kwargs and os.environ.get(MAX_ROWS_ENV):
            kwargs["max_rows"] = int(os.environ[MAX_ROWS_ENV])
        if "response" not in kwargs and os.environ.get(RESPONSE_ENV):
            kwargs["response"] = os.environ[RESPONSE_ENV]
        if "docs" not in kwargs:
            kwargs["docs"] = os.environ.get(DOCS_ENV, "") == "1"
        if "capture" not in kwargs and os.environ.get(CAPTURE_ENV):
            kwargs["capture"] = capture_rate(os.environ[CAPTURE_ENV])
        # A built image: what build resolved is data beside the artifact, no entry-point scan needed.
        manifest = find_manifest() if model is artifact is backend is registry is None else None
        if manifest is not None:
            sha256 = os.environ.get(SHA256_ENV) or None
            return cls(manifest, manifest.load_predictor(), model_sha256=sha256, **kwargs)
        from lambda_ml_serve.plugins import get_registry

        registry = registry or get_registry()
        chosen = choose_model(registry, model or os.environ.get(MODEL_ENV))
        sha256 = None
        if artifact is None and os.environ.get(ARTIFACT_ENV):
            artifact = Path(os.environ[ARTIFACT_ENV])
            # The image's prepared file comes with the sha256 of the model file it was built from.
            sha256 = os.environ.get(SHA256_ENV) or None
        backend = backend or os.environ.get(BACKEND_ENV) or None
        predictor = load_predictor(chosen, registry, artifact, backend)
        sha256 = sha256 or file_sha256(artifact or chosen.spec.artifact_path)
        return cls(chosen.spec, predictor, backend=backend, model_sha256=sha256, **kwargs)

    @cached_property
    def spec(self) -> ModelSpec:
        """The plugin's spec; an app loaded from a manifest imports the plugin here, on first need."""
        return self.manifest.load_spec()

    @cached_property
    def validator(self) -> RowValidator:
        """The full path's pydantic validation, built on first need."""
        from lambda_ml_serve.runtime.validation import RowValidator

        return RowValidator(self.spec, self.max_rows, self.typecode)

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
            "model_sha256": self.model_sha256,
            "features": list(spec.feature_names),
            "output": spec.output,
            "max_rows": self.max_rows,
            "request_path": self.request_path.describe(),
            "input_schema": spec.schema.model_json_schema(by_alias=True),
            "example": {"instances": list(spec.example)},
            "metrics": card.get("metrics", {}),
            "explain": self.explain_metadata,
        } | ({"classes": list(classes)} if (classes := self._classes_known()) is not None else {})

    def _classes_known(self) -> Sequence[Any] | None:
        return self.classes if self.classes is not None else getattr(self.predictor, "classes", None)

    @property
    def explain_metadata(self) -> dict[str, Any]:
        """Whether this model explains its predictions, where, and which backends can."""
        return {
            # A predictor may have ``explain`` and still not explain this model (``explains`` False).
            "available": callable(getattr(self.predictor, "explain", None))
            and bool(getattr(self.predictor, "explains", True)),
            "route": f"POST {explaining.EXPLAIN_PATH} (or ?explain=true; v2: parameters.explain)",
            "max_rows": self.explain_max_rows,
            "backends": list(explaining.EXPLAINING_BACKENDS),
        }

    @cached_property
    def examples(self) -> dict[str, Any]:
        """The spec's example rows written in every request format, keyed by feature name."""
        rows = [
            self.spec.schema.model_validate(row).model_dump(mode="json", by_alias=True) for row in self.spec.example
        ]
        return formats.examples(rows, self.spec.feature_names)

    @cached_property
    def view(self) -> ModelView:
        """What the docs page and the OpenAPI document read about the model."""
        examples = self.examples
        return ModelView(
            spec=self.spec,
            metadata=self.metadata,
            examples=examples,
            example_answer=self.predict(examples["instances"]),
            max_rows=self.max_rows,
            response=self.response,
            docs=self.docs,
            explain_max_rows=self.explain_max_rows,
            example_explanation=self.explain(examples["instances"]) if self.explain_metadata["available"] else None,
            classes=self.classes,
        )

    @cached_property
    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of this model's routes (GET /openapi.json)."""
        from lambda_ml_serve.runtime.openapi import openapi_document

        return openapi_document(self.view)

    def __call__(self, event: Any, context: Any = None) -> Any:
        started = time.perf_counter()
        request_id = request_id_of(event, "") or getattr(context, "aws_request_id", None) or str(uuid.uuid4())
        request = parse_event(event, request_id)
        rows, error_log = 0, None
        try:
            # The fast path answers what it fully accepts; anything else, errors included, takes the full path.
            # Explanations take the full path: their cost is the explanation, not the decoding.
            batch = self.fast.batch_of(event) if self.fast and not explaining.requested(event) else None
            if batch is not None:
                answer, rows = Answer(200, self._answer(self.predictor.predict(batch)), {}), batch.n_rows
            else:
                answer, rows = self._route(request)
        except ApiError as exc:
            answer = Answer(exc.status, self._error_body(request, exc), exc.headers)
            rows = exc.rows
        except Exception as exc:  # the client gets no stack trace; the log keeps it
            error_log = "".join(traceback.format_exception(exc)).rstrip()
            error = ApiError("internal_error", f"internal error; quote request id {request_id}")
            answer = Answer(error.status, self._error_body(request, error), {})
        self._log.write(request_id, answer.status, rows, (time.perf_counter() - started) * 1000, error_log)
        # Answered predictions only: an error answer's body is never captured, nor its rows.
        if self._capture is not None and answer.status == 200 and rows and self._capture.sampled():
            self._capture_request(request, answer, request_id)
        return respond(request, answer, self._identity)

    def _capture_request(self, request: Request, answer: Answer, request_id: str) -> None:
        """Write the request's rows and predictions as a capture record; never fails the request."""
        try:
            if request.http:
                if request.path not in PREDICT_PATHS or request.method != "POST":
                    return
                payload = msgspec.json.decode(request.body())  # the body was valid JSON: it was answered
            elif is_batch_event(request.payload):
                return  # batch scoring's items are read from S3 and written back: no capture
            else:
                payload = request.payload
            predictions = answer.payload["predictions"] if isinstance(answer.payload, dict) else answer.payload
            features = self.manifest.features
            rows = [
                row if isinstance(row, dict) else dict(zip(features, row, strict=False))
                for row in formats.rows_of(payload, features)
            ]
            self._capture.write(request_id, rows, predictions)
        except Exception as exc:  # capture is a side channel: the answer stands whatever happens here
            print(f"capture failed for request {request_id}: {type(exc).__name__}", file=sys.stderr)

    def _route(self, request: Request) -> tuple[Answer, int]:
        if not request.http:
            if is_batch_event(request.payload):
                return self._score_batch(request.payload)
            return self._predict_answer(request.payload)
        routes = (
            self._routes.get(request.path) or self._v2_model_routes(request.path) or self._v1_model_routes(request.path)
        )
        if routes is None:
            raise ApiError(
                "not_found",
                "no such path; POST / or /predict to predict, GET / for metadata, GET /openapi.json for the API",
            )
        # HEAD wherever GET works: the same answer's headers (respond() leaves out the body).
        handler = routes.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            allowed = ", ".join(method for m in routes for method in ((m, "HEAD") if m == "GET" else (m,)))
            raise ApiError(
                "method_not_allowed",
                f"{request.method if request.method in HTTP_METHODS else 'this method'} is not allowed on "
                f"{request.path}; use {allowed}",
                headers={"allow": allowed},
            )
        return handler(request)

    def _error_body(self, request: Request, error: ApiError) -> dict[str, Any]:
        return v2.error_body(error) if request.path.startswith("/v2/") else error.to_dict()

    @staticmethod
    def _parse_body(body: bytes) -> Any:
        if not body.strip():
            raise ApiError("bad_request", 'the request body is empty; send JSON such as [{"feature": 1.0}]')
        if body.startswith(COMPRESSED_MAGIC):
            raise ApiError(
                "bad_request", f"{NOT_UTF8}; it looks compressed: send Content-Encoding: gzip (or deflate) with it"
            )
        # JSON forbids raw NUL bytes; UTF-16 and UTF-32 text is full of them (json.loads on bytes would
        # guess such an encoding and accept it).
        if b"\x00" in body:
            raise ApiError("bad_request", f"{NOT_UTF8}; it has NUL bytes, as UTF-16 and UTF-32 text does")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError("bad_request", f"{NOT_UTF8}; byte {exc.start} is not valid UTF-8") from None
        try:
            # The stdlib parser measured faster than pydantic_core's here for row lists.
            return json.loads(text)
        except RecursionError:
            raise ApiError("bad_request", TOO_DEEP) from None
        except ValueError as exc:
            # The parser's message gives the position, never the payload itself.
            raise ApiError("bad_request", f"the body is not valid JSON: {exc}") from None

    def predictions(self, rows: list[Any]) -> list[Any]:
        """Validate rows (all errors at once, as one 422) and predict them."""
        batch = self.fast.batch_of_rows(rows) if self.fast else None
        if batch is not None:
            return self.predictor.predict(batch)
        try:
            batch = self.validator.to_batch(rows)
        except ApiError as exc:
            exc.rows = len(rows)  # the log line counts the rows sent, answered or not
            raise
        return self.predictor.predict(batch)

    def predict(self, payload: Any) -> Any:
        """The answer to a body in any accepted format: the default object, or the bare array."""
        try:
            return self._answer(self.predictions(formats.rows_of(payload, self.spec.feature_names)))
        except ApiError as exc:
            # Valid rows are flat, so nesting is measured only on the way to an error answer.
            if exc.type == "validation_error" and nested_deeper_than(payload, MAX_DEPTH):
                raise ApiError("bad_request", TOO_DEEP) from None
            raise

    def _answer(self, predictions: list[Any]) -> Any:
        if self.classes is not None:
            answer = classifier.answer(predictions, self.classes)
            if self.response == "predictions":
                return answer[classifier.PREDICTIONS]
            return {"model": self.manifest.model, "version": self.manifest.version, **answer}
        if self.response == "predictions":
            return predictions
        return {"model": self.manifest.model, "version": self.manifest.version, "predictions": predictions}

    def _item_predictions(self, rows: list[Any]) -> list[Any]:
        """Batch items: a classifier's item answers its label and probabilities."""
        predictions = self.predictions(rows)
        if self.classes is None:
            return predictions
        answer = classifier.answer(predictions, self.classes)
        return [
            {"label": label, classifier.PROBABILITIES: row}
            for label, row in zip(answer[classifier.PREDICTIONS], answer[classifier.PROBABILITIES], strict=True)
        ]

    def _predict_answer(self, payload: Any) -> tuple[Answer, int]:
        answer = self.predict(payload)
        rows = len(answer if isinstance(answer, list) else answer["predictions"])
        return Answer(200, answer, {}), rows

    def _score_batch(self, payload: Any) -> tuple[Answer, int]:
        """A Distributed Map batch: every item scored on its own, a bad item failing only itself."""
        answer = answer_batch(self._item_predictions, payload, self.max_rows)
        body = {"model": self.manifest.model, "version": self.manifest.version} | answer
        return Answer(200, body, {}), len(answer["results"])

    def _post_predict(self, request: Request) -> tuple[Answer, int]:
        options = explaining.options_from_query(request.query, len(self.spec.feature_names), explain_path=False)
        if options is not None:
            return self._explain_answer(self._parse_body(request.body()), options)
        if request.media_type in formats.CSV_TYPES:
            return self._rows_answer(self._csv_rows(request), self._answer)
        body = request.body()
        # A compressed body reaches here without the fast path's try: give it one on the decoded bytes.
        batch = self.fast.batch_of_body(body) if self.fast and request.encoded else None
        if batch is not None:
            return Answer(200, self._answer(self.predictor.predict(batch)), {}), batch.n_rows
        return self._predict_answer(self._parse_body(body))

    def _post_invocations(self, request: Request) -> tuple[Answer, int]:
        """MLflow's ``POST /invocations``: any accepted JSON format or CSV, answered ``{"predictions": [...]}``."""
        if request.media_type in formats.CSV_TYPES:
            return self._rows_answer(self._csv_rows(request), self._mlflow_answer)
        body = request.body()
        batch = self.fast.batch_of_body(body) if self.fast else None
        if batch is not None:
            return Answer(200, self._mlflow_answer(self.predictor.predict(batch)), {}), batch.n_rows
        return self._rows_answer(self._rows(self._parse_body(body)), self._mlflow_answer)

    def _rows(self, payload: Any) -> list[Any]:
        """The rows of a body in any accepted format; a shape error on a deeply nested body is a 400."""
        try:
            return formats.rows_of(payload, self.spec.feature_names)
        except ApiError as exc:
            # Valid rows are flat, so nesting is measured only on the way to an error answer.
            if exc.type == "validation_error" and nested_deeper_than(payload, MAX_DEPTH):
                raise ApiError("bad_request", TOO_DEEP) from None
            raise

    def _mlflow_answer(self, predictions: list[Any]) -> dict[str, Any]:
        """MLflow's response shape; a classifier answers its labels there, as MLflow's own predict does."""
        if self.classes is None:
            return {"predictions": predictions}
        return {"predictions": classifier.answer(predictions, self.classes)[classifier.PREDICTIONS]}

    def _rows_answer(self, rows: list[Any], shape: Any) -> tuple[Answer, int]:
        predictions = self.predictions(rows)
        return Answer(200, shape(predictions), {}), len(predictions)

    def _csv_rows(self, request: Request) -> list[Any]:
        body = request.body()
        if not body.strip():
            raise ApiError("bad_request", "the request body is empty; send CSV with a header row naming the columns")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError("bad_request", f"the CSV body is not UTF-8 text; byte {exc.start} is not valid") from None
        return formats.rows_of_csv(text, self.column_types)

    @cached_property
    def column_types(self) -> dict[str, str]:
        """Each field's JSON type, by which CSV cells are typed."""
        return formats.column_types(self.metadata["input_schema"])

    def _get_ping(self, request: Request) -> tuple[Answer, int]:
        # The model loaded at init, so a function that answers is healthy.
        return Answer(200, {"status": "ok"}, {}), 0

    def _post_explain(self, request: Request) -> tuple[Answer, int]:
        options = explaining.options_from_query(request.query, len(self.spec.feature_names), explain_path=True)
        assert options is not None
        return self._explain_answer(self._parse_body(request.body()), options)

    def explain(self, payload: Any, options: explaining.ExplainOptions | None = None) -> dict[str, Any]:
        """The answer to an explanation request: the predictions' answer with each row's explanation."""
        _, predictions, explained = self._explained(self._rows(payload), options or explaining.ExplainOptions())
        answer = self._answer(predictions)
        if not isinstance(answer, dict):  # the bare-array response: an explanation is always an object
            answer = {"model": self.manifest.model, "version": self.manifest.version, "predictions": predictions}
        return answer | explained

    def _explained(self, rows: list[Any], options: explaining.ExplainOptions) -> tuple[Any, list[Any], dict[str, Any]]:
        explaining.check_rows(len(rows), self.explain_max_rows)
        try:
            batch = self.validator.to_batch(rows)
        except ApiError as exc:
            exc.rows = len(rows)
            raise
        explanation = explaining.explain_batch(self.predictor, batch, self.backend)
        predictions = self.predictor.predict(batch)
        classes = getattr(self, "classes", None) or getattr(self.predictor, "classes", None)
        explained = explaining.explanation_answer(explanation, self.spec.feature_names, classes, options)
        return batch, predictions, explained

    def _explain_answer(self, payload: Any, options: explaining.ExplainOptions) -> tuple[Answer, int]:
        answer = self.explain(payload, options)
        return Answer(200, answer, {}), len(answer["explanations"])

    def _get_metadata(self, request: Request) -> tuple[Answer, int]:
        return Answer(200, self.metadata, {}), 0

    def _get_openapi(self, request: Request) -> tuple[Answer, int]:
        return Answer(200, self.openapi, {}), 0

    def _get_docs(self, request: Request) -> tuple[Answer, int]:
        if not self.docs:
            raise ApiError("not_found", f"the docs page is off; set {DOCS_ENV}=1 (build --docs) to serve it")
        from lambda_ml_serve.runtime.docs import docs_page

        return Answer(200, docs_page(self.view), DOCS_HEADERS, content_type=HTML), 0

    def _v2_server(self, request: Request) -> tuple[Answer, int]:
        from lambda_ml_serve import __version__

        server = {"name": "lambda-ml-serve", "version": __version__, "extensions": list(v2.EXTENSIONS)}
        return Answer(200, server, {}), 0

    def _v2_health(self, request: Request) -> tuple[Answer, int]:
        # The model loaded at init, so a function that answers is live and ready.
        return Answer(200, {"live" if request.path.endswith("live") else "ready": True}, {}), 0

    def _v2_model_routes(self, path: str) -> dict[str, Any] | None:
        match = v2.MODEL_PATH.match(path)
        if match is None:
            return None
        name, version, action = match["name"], match["version"], match["action"]
        if name != self.spec.name or version not in (None, self.spec.version):
            raise ApiError(
                "not_found",
                f"no such model or version; this function serves {self.spec.name!r} version {self.spec.version!r}",
            )
        if action == "/infer":
            return {"POST": self._v2_infer}
        if action == "/ready":
            return {"GET": self._v2_health}
        return {"GET": self._v2_metadata}

    def _v1_model_routes(self, path: str) -> dict[str, Any] | None:
        match = V1_MODEL_PATH.match(path)
        if match is None:
            return None
        if match["name"] != self.spec.name:
            raise ApiError("not_found", f"no such model; this function serves {self.spec.name!r}")
        if match["action"] == ":predict":
            return {"POST": self._v1_predict}
        if match["action"] == ":explain":
            return {"POST": self._post_explain}
        return {"GET": self._v1_ready}

    def _v1_ready(self, request: Request) -> tuple[Answer, int]:
        return Answer(200, {"name": self.spec.name, "ready": True}, {}), 0

    def _v1_predict(self, request: Request) -> tuple[Answer, int]:
        """KServe's ``:predict``: ``{"instances": [...]}`` (or any accepted format) -> ``{"predictions": [...]}``."""
        body = request.body()
        batch = self.fast.batch_of_body(body) if self.fast else None
        if batch is not None:
            return Answer(200, self._v1_answer(self.predictor.predict(batch)), {}), batch.n_rows
        return self._rows_answer(self._rows(self._parse_body(body)), self._v1_answer)

    def _v1_answer(self, predictions: list[Any]) -> dict[str, Any]:
        """``predictions`` as KServe's v1 answers them; a classifier's labels, probabilities and classes."""
        if self.classes is None:
            return {"predictions": predictions}
        return classifier.answer(predictions, self.classes)

    def _v2_metadata(self, request: Request) -> tuple[Answer, int]:
        meta = v2.model_metadata(
            self.spec.name, self.spec.version, self.backend, self.metadata["input_schema"], self.classes
        )
        return Answer(200, meta, {}), 0

    def _v2_infer(self, request: Request) -> tuple[Answer, int]:
        body = request.body()
        length = request.headers.get(v2.HEADER_LENGTH)
        header, data = v2.split_binary(body, length)
        if length is None and b"\x00" in body and body.lstrip()[:1] == b"{":
            raise ApiError(
                "bad_request",
                "the body holds binary tensor data but the request has no Inference-Header-Content-Length "
                "header giving the length of its JSON part",
            )
        try:
            payload = self._parse_body(header)
        except ApiError as exc:
            if length is None:
                raise
            raise ApiError(
                "bad_request", f"the inference header (the first {len(header)} bytes) is invalid: {exc.message}"
            ) from None
        if not isinstance(payload, dict):
            raise ApiError("validation_error", v2.INFER_SHAPE)
        v2.attach_binary(payload, data)
        options = explaining.options_from_parameters(payload.get("parameters"), len(self.spec.feature_names))
        rows = v2.rows_of_infer(payload, self.spec.feature_names)
        explained = None
        if options is not None:
            if options.top is not None:
                raise ApiError("bad_request", "parameters.top is not taken by v2: its tensors carry every contribution")
            _, predictions, explained = self._explained(rows, options)
        else:
            predictions = self.predictions(rows)
        request_id = payload.get("id") if isinstance(payload.get("id"), str) else None
        answer = v2.infer_response(self.spec.name, self.spec.version, predictions, request_id, self.classes)
        if explained is not None:
            answer["outputs"] += v2.explanation_outputs(explained)
        if v2.wants_binary(payload):
            binary, header_length = v2.binary_response(answer)
            headers = {v2.HEADER_LENGTH: str(header_length)}
            return Answer(200, binary, headers, content_type=v2.BINARY), len(predictions)
        return Answer(200, answer, {}), len(predictions)
