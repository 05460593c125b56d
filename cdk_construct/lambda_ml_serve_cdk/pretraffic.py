"""The pre-traffic check: a new version must answer the model's example rows as ``build`` recorded.

CodeDeploy calls :func:`handler` before it moves any traffic to the version the deployment
published. The check invokes that version with the example rows as a Function URL request, and
fails the deployment when the version errs, answers with another status, serves another model file
(its ``x-model-sha256``), answers differently from the recorded answers, or is slower than a bound.

This file is the hook function's whole code: standard library and boto3 (both in Lambda's Python
runtime), nothing else. The construct copies it into the hook's asset beside ``expected.json``.
The logic is :func:`check_version`, which takes any Lambda client, so it runs against the Runtime
Interface Emulator as well as against Lambda; :func:`handler` only adds the CodeDeploy report.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The file beside this one that holds the rows, the recorded answers and the model's identity.
EXPECTED_FILE = "expected.json"
#: Environment variables the construct sets on the hook function.
TARGET_ENV = "LAMBDA_ML_SERVE_CHECK_TARGET"
MAX_LATENCY_ENV = "LAMBDA_ML_SERVE_CHECK_MAX_LATENCY_MS"
#: A generous default: the bound is on the fastest of the invocations, the first one includes the cold start.
DEFAULT_MAX_LATENCY_MS = 2000.0
DEFAULT_INVOCATIONS = 3
#: Relative tolerance for float answers (JSON round trips, float32 kernels); a backend may declare more.
REL_TOLERANCE = 1e-5
#: The longest reason reported: CodeDeploy and the log get one bounded line.
MAX_REASON = 300


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one version: passed or not, why, and the fastest invocation's latency."""

    passed: bool
    reason: str
    latency_ms: float | None = None


def function_url_event(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A Function URL (payload 2.0) ``POST /`` event carrying ``rows``: how callers reach the model."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "user-agent": "lambda-ml-serve-pretraffic"},
        "requestContext": {
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": f"pretraffic-{uuid.uuid4()}",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
        "body": json.dumps(rows),
    }


def _fail(reason: str, latency_ms: float | None = None) -> CheckResult:
    return CheckResult(False, reason[:MAX_REASON], latency_ms)


def compare(got: Any, want: Any, tolerance: float = 0.0, where: str = "") -> str | None:
    """Where ``got`` differs from ``want`` (numbers up to the tolerance), or None when they agree."""
    if isinstance(want, bool) or isinstance(got, bool):
        same = type(got) is type(want) and got == want  # True == 1 in Python, not in an answer
        return None if same else f"{where or 'answer'} differs"
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        if math.isclose(got, want, rel_tol=REL_TOLERANCE, abs_tol=max(1e-9, tolerance)):
            return None
        return f"{where or 'answer'} is {got!r}, build recorded {want!r}"
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return f"{where or 'answer'} has {len(got)} items, build recorded {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if (found := compare(g, w, tolerance, f"{where}[{i}]" if where else f"row {i}")) is not None:
                return found
        return None
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return f"{where or 'answer'} has keys {sorted(got)}, build recorded {sorted(want)}"
        for key in want:
            if (found := compare(got[key], want[key], tolerance, f"{where}.{key}")) is not None:
                return found
        return None
    return None if got == want else f"{where or 'answer'} differs from what build recorded"


def _answer_of(result: Any) -> tuple[int | None, dict[str, str], Any]:
    """(status, lower-cased headers, decoded body) of a Function URL response."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return None, {}, None
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        body = base64.b64decode(body)
    try:
        return result["statusCode"], headers, json.loads(body)
    except ValueError:
        return result["statusCode"], headers, None


def check_answer(result: Any, expected: dict[str, Any]) -> str | None:
    """Why one invocation's response fails the check, or None when it is the recorded answer."""
    status, headers, body = _answer_of(result)
    if status is None:
        return "the function did not answer as a Function URL does (no statusCode)"
    if status != 200:
        error = body.get("error") if isinstance(body, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        return f"the example rows were answered with HTTP {status}" + (f" ({kind})" if kind else "")
    sha256 = expected.get("model_sha256")
    served = headers.get("x-model-sha256")
    if sha256 and served != sha256:
        return f"the version serves model file {str(served)[:12]}..., build recorded {sha256[:12]}..."
    predictions = body.get("predictions") if isinstance(body, dict) else body
    if isinstance(body, dict):
        for key in ("model", "version"):
            if expected.get(key) is not None and body.get(key) != expected[key]:
                return f"the answer names {key} {str(body.get(key))[:60]!r}, expected {expected[key]!r}"
    if not isinstance(predictions, list) or len(predictions) != len(expected["rows"]):
        return f"the answer does not hold one prediction per example row ({len(expected['rows'])} rows)"
    return compare(predictions, expected["predictions"], float(expected.get("tolerance") or 0.0))


def check_version(
    client: Any,
    function: str,
    expected: dict[str, Any],
    *,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
    invocations: int = DEFAULT_INVOCATIONS,
) -> CheckResult:
    """Invoke ``function`` (a name or version ARN) ``invocations`` times with the example rows.

    ``client`` is a boto3 Lambda client (``endpoint_url`` may point at the Runtime Interface
    Emulator). Every answer must be the recorded one; the fastest invocation must take at most
    ``max_latency_ms``, measured around the Invoke call.
    """
    if not expected.get("rows"):
        return _fail("no example rows were recorded at build: the model spec declares no example")
    payload = json.dumps(function_url_event(expected["rows"])).encode()
    latencies = []
    for _ in range(max(1, invocations)):
        started = time.perf_counter()
        try:
            response = client.invoke(FunctionName=function, Payload=payload)
            raw = response["Payload"].read()
        except Exception as exc:  # botocore's errors (throttled, not found, timeouts) all fail the check
            return _fail(f"invoking {function} failed: {type(exc).__name__}: {exc}")
        latencies.append((time.perf_counter() - started) * 1000)
        try:
            result = json.loads(raw) if raw else None
        except ValueError:
            return _fail("the function's response is not JSON")
        if response.get("FunctionError") or (isinstance(result, dict) and "errorType" in result):
            kind = result.get("errorType") if isinstance(result, dict) else None
            return _fail(f"the function failed ({response.get('FunctionError') or 'error'}: {kind or 'unknown'})")
        if (reason := check_answer(result, expected)) is not None:
            return _fail(reason, min(latencies))
    fastest = min(latencies)
    if fastest > max_latency_ms:
        return _fail(
            f"too slow: the fastest of {len(latencies)} answers took {fastest:.0f} ms, bound {max_latency_ms:g}"
        )
    return CheckResult(True, f"{len(latencies)} answers as recorded at build, fastest {fastest:.1f} ms", fastest)


def load_expected(folder: Path | None = None) -> dict[str, Any]:
    """The ``expected.json`` the construct wrote beside this file."""
    folder = folder or Path(__file__).resolve().parent
    return json.loads((folder / EXPECTED_FILE).read_text(encoding="utf-8"))


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """CodeDeploy's BeforeAllowTraffic hook: check the new version, then report the verdict."""
    import boto3  # in Lambda's runtime; imported here so check_version's tests need no AWS set-up

    target = os.environ[TARGET_ENV]
    try:
        result = check_version(
            boto3.client("lambda"),
            target,
            load_expected(),
            max_latency_ms=float(os.environ.get(MAX_LATENCY_ENV, DEFAULT_MAX_LATENCY_MS)),
        )
    except Exception as exc:  # a broken check must fail the deployment, never leave it waiting
        result = _fail(f"the check itself failed: {type(exc).__name__}: {exc}")
    print(json.dumps({"check": "pretraffic", "target": target, "passed": result.passed, "reason": result.reason}))
    boto3.client("codedeploy").put_lifecycle_event_hook_execution_status(
        deploymentId=event["DeploymentId"],
        lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
        status="Succeeded" if result.passed else "Failed",
    )
    return {"passed": result.passed, "reason": result.reason}
