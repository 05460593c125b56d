"""What a plugin registers: a model spec, and the backend protocol that turns an artifact into a predictor."""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    # Imported where it is used: a built image answers valid requests without pydantic.
    from pydantic import BaseModel

    from lambda_ml_serve.checks import BatchCheck

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: The answer shapes of a prediction: the default object, or the bare array of predictions.
RESPONSES = ("object", "predictions")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the framework needs to serve, document and build one model.

    ``artifact`` and ``card`` are paths relative to the plugin's import ``package``, so they resolve
    the same way from a source checkout, an installed wheel and a Lambda image.
    """

    name: str
    version: str
    backend: str
    package: str
    artifact: str
    schema: type[BaseModel]
    description: str = ""
    output: str = "prediction"
    example: Sequence[Mapping[str, Any]] = ()
    requirements: Sequence[str] = ()
    card: str | None = None
    trainer: str | None = None
    max_rows: int = 10_000
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: ``"object"`` answers ``{"model", "version", "predictions"}``; ``"predictions"`` the bare array, as
    #: handlers that return ``json.dumps(list)`` did. A deployment may override it (``build --response``).
    response: str = "object"
    #: What the schema's validators check, for the fast request path (see ``lambda_ml_serve.checks``).
    #: ``None`` when not declared: a schema with validators is then served by the full path only.
    batch_checks: Sequence[BatchCheck] | None = None
    #: A classifier's labels in the order of its probabilities, in their JSON types (strings stay strings).
    #: Set, every answer gives each row's label and the class probabilities (``predictions``,
    #: ``probabilities``, ``classes``); the backend must answer probabilities (``extra={"predict_proba":
    #: True}`` for scikit-learn). ``None``: each row is answered with what the backend predicts, as before.
    classes: Sequence[Any] | None = None

    def __post_init__(self) -> None:
        from pydantic import BaseModel

        if not _NAME.match(self.name):
            raise ValueError(
                f"model name {self.name!r} is not valid: use lowercase letters, digits and "
                "underscores, starting with a letter (e.g. 'wine_quality')"
            )
        if not (isinstance(self.schema, type) and issubclass(self.schema, BaseModel)):
            raise ValueError(f"model {self.name!r}: schema must be a pydantic BaseModel subclass")
        if self.max_rows < 1:
            raise ValueError(f"model {self.name!r}: max_rows must be >= 1")
        if self.response not in RESPONSES:
            raise ValueError(f"model {self.name!r}: response must be one of {', '.join(RESPONSES)}")
        if self.classes is not None:
            labels = list(self.classes)
            if len(labels) < 2 or not all(type(c) in (str, int, float, bool) for c in labels):
                raise ValueError(f"model {self.name!r}: classes must list two or more labels (strings or numbers)")
            if len(set(map(repr, labels))) != len(labels):
                raise ValueError(f"model {self.name!r}: classes must be unique")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The model's input features in order: each schema field's alias, else its name."""
        return tuple(f.alias or name for name, f in self.schema.model_fields.items())

    def resource(self, relative: str) -> Path:
        """Absolute path of a file shipped inside the plugin package."""
        from importlib import resources  # not at import: a built image's init never resolves plugin files

        return Path(str(resources.files(self.package).joinpath(relative)))

    @property
    def artifact_path(self) -> Path:
        return self.resource(self.artifact)

    def load_card(self) -> dict[str, Any]:
        """The model card (metrics, training details), or an empty dict when none is shipped."""
        if self.card is None:
            return {}
        return json.loads(self.resource(self.card).read_text(encoding="utf-8"))


#: The precisions a predictor may read its batch in (``Predictor.input_type``), and their array typecodes.
INPUT_TYPES = {"float32": "f", "float64": "d"}


@dataclass(frozen=True)
class Batch:
    """Validated rows as one flat buffer in feature order (row-major), in the predictor's precision.

    ``values`` is an ``array('f')`` (float32) for a predictor whose ``input_type`` is ``"float32"``
    (the default), an ``array('d')`` (float64) for one whose ``input_type`` is ``"float64"``. A flat
    array costs nothing to view as a numpy matrix, whichever it is
    (``np.frombuffer(batch.values, dtype=batch.values.typecode)``), and can be handed to native code as
    a pointer, so backends need not agree on numpy.
    """

    values: array
    n_rows: int
    n_features: int


#: How an explanation's margin becomes the prediction: the model's link (inverse link) function.
LINKS = ("identity", "logistic", "softmax", "exp")


@dataclass(frozen=True)
class Explanation:
    """Exact SHAP values of a batch: per row and per output, the expected value and one contribution
    per field, in the model's margin (before the link function), so that for every row and output
    ``base_values[r][k] + sum(contributions[r][k]) == margin``.

    A single-output model (a regressor, a binary classifier's positive class) has one output; a
    multi-class model one per class, in the order of ``outputs``.
    """

    #: rows x outputs.
    base_values: list[list[float]]
    #: rows x outputs x fields.
    contributions: list[list[list[float]]]
    #: The fields the contributions belong to when they are not the schema's features in order
    #: (e.g. a pipeline's input fields, with one-hot columns summed back to their source).
    fields: Sequence[str] | None = None
    #: How the margin becomes the prediction (one of ``LINKS``).
    link: str = "identity"
    #: What each output is (class labels) when there are several.
    outputs: Sequence[Any] | None = None
    #: Anything a client should know about how the contributions were computed.
    note: str | None = None


class ExplainUnavailable(Exception):
    """The backend cannot explain this model; the message says what to do instead (answered as 501)."""


@dataclass(frozen=True)
class ServingLibrary:
    """The library a backend predicts with, which the image must carry at the version the build checked.

    ``build`` loads and checks the model with this host's installed ``module`` and pins
    ``distribution`` to that version in the image, so what ships is what was checked.
    """

    #: The distribution the image installs (e.g. ``xgboost-cpu``).
    distribution: str
    #: The import name whose installed version the build checks with (e.g. ``xgboost``).
    module: str
    #: Only these files of the distribution go into the image (globs relative to site-packages), without its
    #: dependencies; empty: the whole distribution with them.
    files: tuple[str, ...] = ()


class Predictor(Protocol):
    """A loaded model.

    Optional attribute ``input_type``: the precision the model compares its inputs in, ``"float32"``
    (the default when absent) or ``"float64"`` (see ``INPUT_TYPES``). Requests are packed in it (the
    ``Batch`` is an ``array('f')`` or an ``array('d')``), so a value a float32 cannot hold exactly (7.4)
    reaches a float64 library as the client wrote it.
    """

    #: Feature names stored in the artifact, if it stores any (checked against the schema).
    feature_names: Sequence[str] | None

    def predict(self, batch: Batch) -> list[Any]:
        """One JSON-serialisable prediction per row."""
        ...

    # Optional: ``explain(batch) -> Explanation`` (exact SHAP values); a predictor without it answers
    # explanation requests with 501.


def input_typecode(predictor: Any) -> str:
    """The array typecode of the batches ``predictor`` reads: ``"f"`` (float32, the default) or ``"d"``."""
    kind = getattr(predictor, "input_type", "float32")
    try:
        return INPUT_TYPES[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"{type(predictor).__name__}.input_type is {kind!r}; it must be one of {', '.join(INPUT_TYPES)}"
        ) from None


class Backend(Protocol):
    """Turns an artifact into a predictor. Build time calls ``prepare``; the runtime only ``load``."""

    name: str
    #: pip requirements the serving image needs for this backend.
    requirements: Sequence[str]
    #: The library it predicts with, pinned at build to the version the build checked with (optional: a
    #: backend without one, e.g. native code needing only the standard library, leaves it None or unset).
    serving_library: ServingLibrary | None

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """Convert the artifact into the fastest form to load; return the path written in out_dir.

        ``arch`` is the image's architecture (``"x86_64"`` or ``"arm64"``) and ``spec`` the model being
        built; a backend whose output depends on neither accepts and ignores them.
        """
        ...

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> Predictor:
        """Load the artifact for serving; ``options`` is the model's ``ModelSpec.extra``."""
        ...
