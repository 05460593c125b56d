"""The memory size `lambda-ml-serve tune` recommends, read from its tune.json for ModelFunction(memory_size=...)."""

from __future__ import annotations

import json
from pathlib import Path

from lambda_ml_serve_cdk.errors import ModelFunctionError
from lambda_ml_serve_cdk.validation import MAX_MEMORY_MB, MIN_MEMORY_MB

KIND = "lambda-ml-serve-tune"
SCHEMA_VERSION = 1


def tuned_memory_size(path: str | Path, *, model: str | None = None, backend: str | None = None) -> int:
    """The recommended memory size (MB) in a tune report, checked.

    ``model`` and ``backend``, when given, must be what the report measured: a size tuned for the
    compiled backend says little about the xgboost one.
    :raises ModelFunctionError: the file is missing, not a tune report, has no recommendation, or
        measured another model or backend; the message names the file and the fix.
    """
    source = Path(path)
    fix = f"run `lambda-ml-serve tune {model or 'MODEL'}` to write it"
    try:
        report = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFunctionError(f"prop 'memory_size': tune report {source} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not JSON"
        raise ModelFunctionError(f"prop 'memory_size': cannot read tune report {source} ({reason}); {fix}") from None
    if not isinstance(report, dict) or report.get("kind") != KIND:
        raise ModelFunctionError(f"prop 'memory_size': {source} is not a lambda-ml-serve tune report; {fix}")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise ModelFunctionError(
            f"prop 'memory_size': {source} has tune schema version {str(report.get('schema_version'))[:20]}, this "
            f"construct reads version {SCHEMA_VERSION}; {fix} with the matching lambda-ml-serve"
        )
    for key, wanted in (("model", model), ("backend", backend)):
        if wanted is not None and report.get(key) != wanted:
            raise ModelFunctionError(
                f"prop 'memory_size': {source} tuned {key} {str(report.get(key))[:60]!r}, not {wanted!r}; "
                f"run `lambda-ml-serve tune {model or 'MODEL'}` for this {key}"
            )
    recommended = report.get("recommended")
    memory = recommended.get("memory_mb") if isinstance(recommended, dict) else None
    if memory is None:
        raise ModelFunctionError(
            f"prop 'memory_size': {source} recommends no size (none fitted, or none met the p99 target); "
            "give memory_size in MB, or tune again with more sizes or a looser --target-p99"
        )
    if isinstance(memory, bool) or not isinstance(memory, int) or not MIN_MEMORY_MB <= memory <= MAX_MEMORY_MB:
        # The value itself only when it is a short whole number: a string could hold anything.
        what = f"{memory} MB" if type(memory) is int and abs(memory) < 10**9 else f"a JSON {_json_type(memory)}"
        raise ModelFunctionError(
            f"prop 'memory_size': {source} recommends {what}, not a whole number of MB from "
            f"{MIN_MEMORY_MB} to {MAX_MEMORY_MB}; {fix}"
        )
    return memory


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type."""
    for kind, name in ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "object"
