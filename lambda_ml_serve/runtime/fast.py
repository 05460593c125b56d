"""The fast request path: decode, validate and pack a JSON body in one pass with msgspec.

The full path (``validation.py``) parses JSON into Python objects, validates each row with pydantic and
packs the models into a batch (float32, or float64 for a predictor that reads float64). The fast path
does the same work for the requests it covers with a msgspec decoder derived from the pydantic schema
(numeric types, bounds, aliases, optional features, unknown fields), straight from the event's body
text to the batch. It answers only requests it fully accepts: anything it rejects or does not cover
returns ``None`` and takes the full path, which alone writes error answers. Both must give the same
answer, byte for byte; the differential property test (``tests/test_fast_path.py``) holds them to it.

``derive`` reads the schema (it imports pydantic) at build or load time; ``FastPath`` needs only the
plan it produces, which a serving manifest stores as JSON, so an image answers valid requests without
importing pydantic or the plugin.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import struct
from array import array
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from itertools import chain, starmap
from typing import TYPE_CHECKING, Annotated, Any, Union

import msgspec
from msgspec.structs import astuple

from lambda_ml_serve.checks import CHECK_NAMES, CHECK_RUNNERS
from lambda_ml_serve.fields import category_of
from lambda_ml_serve.spec import Batch

if TYPE_CHECKING:
    from lambda_ml_serve.spec import ModelSpec

KINDS = {"float": float, "int": int, "bool": bool}
#: A feature sent as one of its category strings, packed as its code (see ``lambda_ml_serve.fields``).
CATEGORY = "category"
BOUNDS = ("ge", "gt", "le", "lt")
#: The top-level key of the ``{"instances": [rows]}`` shape.
INSTANCES = "instances"
#: Leaf keys of pydantic's core schema that change nothing the fast decoder checks.
_INERT_KEYS = frozenset({"type", "metadata", "ref", "serialization", "allow_inf_nan"})


@dataclass(frozen=True)
class FieldPlan:
    """One feature as the fast decoder reads it."""

    #: The keys a row may use, one per spelling (a single key serves every spelling).
    keys: tuple[str, ...]
    kind: str
    bounds: tuple[tuple[str, float], ...] = ()
    strict: bool = False
    nullable: bool = False
    required: bool = True
    #: The value when the key is missing (``None``: XGBoost's missing value, NaN).
    default: float | None = None
    #: A category feature's strings in code order (code = index), and what an unknown string becomes.
    categories: tuple[str, ...] = ()
    unknown: str = "error"

    def key(self, spelling: int) -> str:
        return self.keys[min(spelling, len(self.keys) - 1)]


@dataclass(frozen=True)
class FastPlan:
    """What the fast decoder accepts: a description derived from the schema, stored as JSON."""

    schema: str
    fields: tuple[FieldPlan, ...]
    forbid_unknown: bool
    #: Batch-level checks as (name, column indices), e.g. ("exactly_one", (11, 12)).
    checks: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def spellings(self) -> int:
        return max(len(f.keys) for f in self.fields)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "forbid_unknown": self.forbid_unknown,
            "fields": [
                {
                    "keys": list(f.keys),
                    "kind": f.kind,
                    "bounds": dict(f.bounds),
                    "strict": f.strict,
                    "nullable": f.nullable,
                    "required": f.required,
                    "default": f.default,
                }
                | ({"categories": list(f.categories), "unknown": f.unknown} if f.kind == CATEGORY else {})
                for f in self.fields
            ],
            "checks": [{"check": name, "columns": list(columns)} for name, columns in self.checks],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FastPlan:
        fields = tuple(
            FieldPlan(
                keys=tuple(f["keys"]),
                kind=f["kind"],
                bounds=tuple(f["bounds"].items()),
                strict=f["strict"],
                nullable=f["nullable"],
                required=f["required"],
                default=f["default"],
                categories=tuple(f.get("categories", ())),
                unknown=f.get("unknown", "error"),
            )
            for f in data["fields"]
        )
        checks = tuple((c["check"], tuple(c["columns"])) for c in data["checks"])
        return cls(data["schema"], fields, data["forbid_unknown"], checks)


@dataclass(frozen=True)
class RequestPath:
    """Which path a model's requests take, and why: a plan for the fast path, or the reason it has none."""

    plan: FastPlan | None
    reason: str

    def describe(self) -> dict[str, str]:
        """What ``info`` and ``GET /`` show."""
        return {"path": "fast" if self.plan else "full", "reason": self.reason}

    def to_json(self) -> dict[str, Any]:
        return {**self.describe(), "decoder": self.plan.to_json() if self.plan else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RequestPath:
        decoder = data.get("decoder")
        return cls(FastPlan.from_json(decoder) if decoder else None, data["reason"])


class Unsupported(Exception):
    """The schema uses something the fast decoder cannot express; the message says what."""


def derive(spec: ModelSpec) -> RequestPath:
    """The request path for ``spec``: a fast plan from its schema, or the full path and why."""
    try:
        plan = plan_for(spec)
    except Unsupported as exc:
        return RequestPath(None, f"full path only: {exc}")
    spellings = f", {plan.spellings} spellings of the field names" if plan.spellings > 1 else ""
    checks = f", {len(plan.checks)} batch check(s)" if plan.checks else ""
    reason = f"fast path: msgspec decoder derived from {plan.schema} ({len(plan.fields)} features{spellings}{checks})"
    return RequestPath(plan, reason)


def plan_for(spec: ModelSpec) -> FastPlan:
    """Derive the fast decoder's plan from the spec's pydantic schema; raise Unsupported otherwise.

    The plan is read from pydantic's core schema, what pydantic itself validates with, so a wrapper
    the fast path does not know (a validator, a union, a custom type) refuses the plan instead of
    being skipped.
    """
    schema = spec.schema
    name = schema.__name__
    core = schema.__pydantic_core_schema__
    validators: list[str] = []
    while core["type"].startswith("function-"):
        validators.append(core["function"]["function"].__name__)
        core = core["schema"]
    if core["type"] != "model" or core.get("root_model") or core.get("custom_init") or core.get("post_init"):
        raise Unsupported(f"{name} is not a plain model of fields (root model, custom __init__ or post-init)")
    config = core.get("config", {})
    fields_schema = core["schema"]
    while fields_schema["type"].startswith("function-"):
        validators.append(fields_schema["function"]["function"].__name__)
        fields_schema = fields_schema["schema"]
    if fields_schema["type"] != "model-fields" or fields_schema.get("extras_schema"):
        raise Unsupported(f"{name}'s fields are wrapped in {fields_schema['type']!r}")
    if validators and spec.batch_checks is None:
        raise Unsupported(
            f"{name} has validators ({', '.join(validators)}) that the fast decoder cannot run; "
            "declare what they check as ModelSpec.batch_checks (an empty tuple if nothing)"
        )
    extra = fields_schema.get("extra_behavior") or config.get("extra_fields_behavior", "ignore")
    strict = bool(config.get("strict", False))
    by_alias = config.get("validate_by_alias", True)
    by_name = config.get("validate_by_name", False)
    fields = tuple(
        _field_plan(name, field_name, field, strict=strict, by_alias=by_alias, by_name=by_name)
        for field_name, field in fields_schema["fields"].items()
    )
    keys = [k for f in fields for k in dict.fromkeys(f.keys)]
    if len(keys) != len(set(keys)):
        raise Unsupported(f"{name}: two fields accept the same key")
    if INSTANCES in keys:
        raise Unsupported(f"{name}: a field named {INSTANCES!r} is read as the {{'instances': [rows]}} shape")
    if extra != "forbid" and any(len(f.keys) > 1 for f in fields):
        # With unknown keys ignored, a row could hold two spellings of one field; pydantic picks by
        # preference, a decoder for one spelling would not.
        raise Unsupported(f"{name}: fields with several accepted keys need extra='forbid'")
    return FastPlan(name, fields, extra == "forbid", _checks(spec, fields_schema["fields"], fields))


def _field_plan(model: str, name: str, field: dict, *, strict: bool, by_alias: bool, by_name: bool) -> FieldPlan:
    where = f"{model}.{name}"
    if field["type"] != "model-field":
        raise Unsupported(f"{where} is a {field['type']!r}")
    keys = _keys(where, name, field.get("validation_alias"), by_alias=by_alias, by_name=by_name)
    inner = _unvalidated(where, field["schema"])
    required, default = True, None
    if inner["type"] == "default":
        if "default_factory" in inner or inner.get("validate_default"):
            raise Unsupported(f"{where} has a default factory or a validated default")
        required, default = False, inner["default"]
        inner = _unvalidated(where, inner["schema"])
    nullable = inner["type"] == "nullable"
    if nullable:
        inner = _unvalidated(where, inner["schema"])
    category = category_of(inner)
    if category is not None:
        if default is not None:
            raise Unsupported(f"{where} is a category with a default other than None")
        return FieldPlan(
            keys=keys,
            kind=CATEGORY,
            nullable=nullable,
            required=required,
            categories=tuple(category["categories"]),
            unknown=category["unknown"],
        )
    kind = inner["type"]
    if kind not in KINDS:
        raise Unsupported(f"{where} is a {kind!r}; the fast decoder reads float, int and bool features")
    if default is not None and type(default) not in KINDS.values():
        raise Unsupported(f"{where} defaults to a {type(default).__name__}")
    unknown = set(inner) - _INERT_KEYS - set(BOUNDS) - {"strict"}
    if unknown:
        raise Unsupported(f"{where} has {', '.join(sorted(unknown))}")
    bounds = tuple((b, inner[b]) for b in BOUNDS if b in inner)
    if kind == "int" and any(type(v) is not int for _, v in bounds):
        raise Unsupported(f"{where} is an int with a non-integer bound")
    if kind == "bool" and bounds:
        raise Unsupported(f"{where} is a bool with bounds")
    return FieldPlan(
        keys=keys,
        kind=kind,
        bounds=bounds,
        strict=inner.get("strict", strict),
        nullable=nullable,
        required=required,
        default=None if default is None else float(default),
    )


def _unvalidated(where: str, schema: dict) -> dict:
    if schema["type"].startswith("function-") and category_of(schema) is None:
        raise Unsupported(
            f"{where} has a validator ({schema['function']['function'].__name__}) the fast decoder cannot run"
        )
    return schema


def _keys(where: str, name: str, alias: Any, *, by_alias: bool, by_name: bool) -> tuple[str, ...]:
    """The keys pydantic reads the field from, in its order of preference."""
    if alias is None or not by_alias:
        return (name,)
    # pydantic's core schema: a key, one path (a list of keys and indexes), or a list of paths.
    paths = [[alias]] if isinstance(alias, str) else alias if all(isinstance(p, list) for p in alias) else [alias]
    keys: list[str] = []
    for path in paths:
        if len(path) != 1 or not isinstance(path[0], str):
            raise Unsupported(f"{where} is read from a nested path (AliasPath)")
        keys.append(path[0])
    if by_name:
        keys.append(name)
    return tuple(dict.fromkeys(keys))


def _checks(spec: ModelSpec, core_fields: dict, fields: tuple[FieldPlan, ...]) -> tuple:
    """Resolve the spec's batch checks to column indices of its bool features."""
    names = list(core_fields)
    features = spec.feature_names
    resolved = []
    for check in spec.batch_checks or ():
        if type(check) not in CHECK_NAMES:
            raise Unsupported(f"unknown batch check {check!r}")
        columns = []
        for feature in check.features:
            index = names.index(feature) if feature in names else features.index(feature) if feature in features else -1
            if index < 0 or fields[index].kind != "bool":
                raise Unsupported(f"batch check {check!r}: {feature!r} is not a bool feature of {spec.schema.__name__}")
            columns.append(index)
        resolved.append((CHECK_NAMES[type(check)], tuple(columns)))
    return tuple(resolved)


class _Category(float, enum.Enum):
    """A category's strings as msgspec decodes them (the members' values); each member *is* its code.

    Members are floats, so packing a row into the batch costs what a number does: no per-value call.
    """

    def __new__(cls, code: float, text: str) -> _Category:
        member = float.__new__(cls, code)
        member._value_ = text
        return member

    def __repr__(self) -> str:  # the float mixin's repr cannot show a string value
        return f"<{type(self).__name__}.{self._name_}: {self._value_!r}>"


def category_enum(name: str, categories: tuple[str, ...]) -> type[enum.Enum]:
    """An Enum of the category strings whose members are their codes: decoding maps string to code.

    An unknown string fails decoding, and the request takes the full path, which applies the model's
    rule for unknown categories (a 422, NaN or -1).
    """
    return _Category(name, [(f"c{i}", (float(i), value)) for i, value in enumerate(categories)])  # type: ignore[call-overload]


def _field_type(field: FieldPlan, index: int = 0) -> Any:
    if field.kind == CATEGORY:
        typ = category_enum(f"Category{index}", field.categories)
        return Union[typ, None] if field.nullable else typ  # noqa: UP007
    kind = KINDS[field.kind]
    bounds = dict(field.bounds)
    typ: Any = Annotated[kind, msgspec.Meta(**bounds)] if bounds else kind
    if field.kind == "bool" and not field.strict:
        # pydantic's lax bool also takes the integers 0 and 1 (and strings, which stay on the full path).
        typ = Union[bool, Annotated[int, msgspec.Meta(ge=0, le=1)]]  # noqa: UP007 (a runtime type, not a hint)
    return Union[typ, None] if field.nullable else typ  # noqa: UP007


def _row_struct(plan: FastPlan, spelling: int, *, single: bool) -> type[msgspec.Struct]:
    """A Struct for rows spelled one way; a single-row body also has an ``instances`` slot to detect that shape."""
    fields: list[tuple] = []
    for i, field in enumerate(plan.fields):
        typ = _field_type(field, i)
        fields.append((f"f{i}", typ) if field.required else (f"f{i}", typ, _missing(field)))
    rename = {f"f{i}": field.key(spelling) for i, field in enumerate(plan.fields)}
    if single:
        fields.append(("instances", msgspec.Raw, msgspec.UNSET))
    return msgspec.defstruct(
        f"{plan.schema}Row{spelling}",
        fields,
        rename=rename,
        kw_only=True,
        forbid_unknown_fields=plan.forbid_unknown,
        gc=False,  # rows hold numbers only: nothing for the cycle collector to track
    )


def _missing(field: FieldPlan) -> float:
    return math.nan if field.default is None else field.default


class FastPath:
    """Answers ``batch_of(event)`` for the requests the plan fully accepts; ``None`` means the full path."""

    def __init__(self, plan: FastPlan, max_rows: int, paths: Collection[str], typecode: str = "f") -> None:
        """``typecode`` is the batch's array type, ``"f"`` (float32) or ``"d"`` (float64), as the full path's."""
        self.plan = plan
        self.max_rows = max_rows
        self._paths = paths
        self._n_features = len(plan.fields)
        self._typecode = typecode
        # Chosen once here: struct packs the same IEEE value array would store, row by row in C.
        self._row_format = struct.Struct(f"{self._n_features}{typecode}")
        self._lists, self._singles, self._instances = [], [], []
        self._row_lists: list[Any] = []
        for spelling in range(plan.spellings):
            row = _row_struct(plan, spelling, single=False)
            self._row_lists.append(list[row])
            # Only "instances": the full path refuses any other top-level key beside it.
            instances = msgspec.defstruct(
                f"{plan.schema}Instances{spelling}", [(INSTANCES, list[row])], forbid_unknown_fields=True
            )
            self._lists.append(msgspec.json.Decoder(list[row]))
            self._instances.append(msgspec.json.Decoder(instances))
            self._singles.append(msgspec.json.Decoder(_row_struct(plan, spelling, single=True)))
        self._checks = [(CHECK_RUNNERS[name], columns) for name, columns in plan.checks]

    def batch_of(self, event: Any) -> Batch | None:
        """The batch for a Function URL POST the fast decoder fully accepts, else ``None``."""
        body = self._body(event)
        return None if body is None else self.batch_of_body(body)

    def batch_of_body(self, body: str | bytes) -> Batch | None:
        """The batch for a JSON body (any prediction route's) the fast decoder fully accepts, else ``None``."""
        rows = self._rows(body)
        if rows is None or not rows or len(rows) > self.max_rows:
            return None
        values = self._pack(rows)
        if not all(check(values, self._n_features, columns) for check, columns in self._checks):
            return None
        return Batch(values, len(rows), self._n_features)

    def batch_of_rows(self, rows: list[Any]) -> Batch | None:
        """The batch for rows already read from another format (MLflow, CSV, v2 tensors), else ``None``.

        Rows made of JSON's types convert exactly as the JSON decoder reads them. Values JSON cannot
        carry (NaN, infinity: a binary tensor or a CSV cell may) are left to the full path to judge.
        """
        if not rows or len(rows) > self.max_rows:
            return None
        for row_list in self._row_lists:
            try:
                converted = msgspec.convert(rows, row_list)
            except msgspec.ValidationError:
                continue  # another spelling may fit
            except (UnicodeError, RecursionError, OverflowError):
                return None  # text msgspec cannot hold (lone surrogates) or deep nesting: the full path says why
            values = self._pack(converted)
            # The sum of finite float32 values is finite in float64: NaN or infinity anywhere shows here.
            # Finite float64 values may add up past the range: such rows take the full path, which
            # packs the same values.
            if not math.isfinite(sum(values)):
                return None
            if not all(check(values, self._n_features, columns) for check, columns in self._checks):
                return None
            return Batch(values, len(converted), self._n_features)
        return None

    def _body(self, event: Any) -> str | bytes | None:
        """The body of a POST to a prediction route, as Lambda hands it over (no copy for plain text)."""
        if not isinstance(event, dict):
            return None
        context = event.get("requestContext")
        http = context.get("http") if isinstance(context, dict) else None
        if not isinstance(http, dict) or http.get("method") != "POST":
            return None
        path = event.get("rawPath") or http.get("path") or "/"
        if not isinstance(path, str) or path not in self._paths:
            return None
        body = event.get("body")
        if not isinstance(body, str) or not body:
            return None
        headers = event.get("headers")
        # A compressed or CSV body is read by the full path, which decodes it first.
        if type(headers) is dict and ("content-encoding" in headers or "csv" in str(headers.get("content-type"))):
            return None
        if not event.get("isBase64Encoded"):
            return body
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None

    def _rows(self, body: str | bytes) -> list | None:
        head = body[:64].lstrip()
        if head[:1] in ("[", b"["):
            decoders = self._lists
        elif head[:1] in ("{", b"{"):
            rest = head[1:].lstrip()
            first_instances = rest.startswith('"instances"' if isinstance(rest, str) else b'"instances"')
            decoders = self._instances + self._singles if first_instances else self._singles + self._instances
        else:
            return None
        for decoder in decoders:
            try:
                decoded = decoder.decode(body)
            except msgspec.ValidationError:
                continue  # another spelling or shape may fit
            except (msgspec.DecodeError, UnicodeError, RecursionError):
                return None  # not JSON msgspec reads: the full path says why, or reads it itself
            if isinstance(decoded, list):
                return decoded
            if type(decoded).__struct_fields__ == (INSTANCES,):
                return decoded.instances
            if decoded.instances is not msgspec.UNSET:
                return None  # a row with an "instances" key is the instances shape to the full path
            return [astuple(decoded)[:-1]]
        return None

    def _pack(self, rows: list) -> array:
        """The rows' values in feature order, converted to the batch's type exactly as the full path does."""
        values = array(self._typecode)
        try:
            values.frombytes(b"".join(starmap(self._row_format.pack, _tuples(rows))))
        except (struct.error, OverflowError):
            # null for an optional feature (XGBoost's missing value, NaN), or a value beyond float32,
            # which struct may refuse and array, like the full path, makes infinite.
            values = array(self._typecode, [math.nan if v is None else v for v in chain.from_iterable(_tuples(rows))])
        return values


def _tuples(rows: list) -> Iterable[tuple]:
    """Each row's values: decoded Structs, or the one row of a single-row body, already a tuple."""
    return rows if type(rows[0]) is tuple else map(astuple, rows)
