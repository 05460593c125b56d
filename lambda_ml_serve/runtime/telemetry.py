"""One JSON log line per request that is also a CloudWatch Embedded Metric Format record.

EMF turns chosen fields of a log line into metrics without an API call or a dependency; the other
fields stay searchable in CloudWatch Logs Insights.
"""

from __future__ import annotations

import sys
import time
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO

from lambda_ml_serve.runtime.http import dumps

NAMESPACE = "LambdaMLServe"


METRICS = [
    {
        "Namespace": NAMESPACE,
        "Dimensions": [["model"]],
        "Metrics": [
            {"Name": "latency_ms", "Unit": "Milliseconds"},
            {"Name": "rows", "Unit": "Count"},
        ],
    }
]


def request_record(
    *,
    request_id: str,
    model: str,
    version: str,
    status: int,
    rows: int,
    latency_ms: float,
    model_sha256: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": METRICS},
        "level": "error" if status >= 500 else "info",
        "request_id": request_id,
        "model": model,
        "version": version,
        "status": status,
        "rows": rows,
        "latency_ms": round(latency_ms, 3),
        "model_sha256": model_sha256,
    }
    if error is not None:
        record["error"] = error
    return record


class RequestLog:
    """Writes each request's record for one model, one line of ``dumps(request_record(...))``.

    For the lines without an error trace the parts that never change are encoded once; a request
    fills in its id, status, rows and latency, so the line costs a string format instead of encoding
    a nested dict.
    """

    def __init__(self, model: str, version: str, stream: TextIO | None = None, model_sha256: str | None = None) -> None:
        self._stream = stream
        self._names = (model, version, model_sha256)
        self._head = '{"_aws":{"Timestamp":'
        self._metrics = f',"CloudWatchMetrics":{dumps(METRICS)}}},"level":'
        self._model = f',"model":{dumps(model)},"version":{dumps(version)}'
        self._tail = f',"model_sha256":{dumps(model_sha256)}}}'

    def write(self, request_id: str, status: int, rows: int, latency_ms: float, error: str | None = None) -> None:
        if error is not None:
            model, version, model_sha256 = self._names
            record = request_record(
                request_id=request_id,
                model=model,
                version=version,
                status=status,
                rows=rows,
                latency_ms=latency_ms,
                model_sha256=model_sha256,
                error=error,
            )
            line = dumps(record)
        else:
            level = '"error"' if status >= 500 else '"info"'
            # repr() is what json.dumps writes for a float; encode_basestring_ascii for a string.
            line = (
                f"{self._head}{int(time.time() * 1000)}{self._metrics}{level}"
                f',"request_id":{encode_basestring_ascii(request_id)}{self._model}'
                f',"status":{status},"rows":{rows},"latency_ms":{round(latency_ms, 3)!r}{self._tail}'
            )
        (self._stream or sys.stderr).write(line + "\n")
