"""One JSON log line per request that is also a CloudWatch Embedded Metric Format record.

EMF turns chosen fields of a log line into metrics without an API call or a dependency; the other
fields stay searchable in CloudWatch Logs Insights.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from lambda_ml_serve.runtime.http import dumps

NAMESPACE = "LambdaMLServe"


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
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["model"]],
                    "Metrics": [
                        {"Name": "latency_ms", "Unit": "Milliseconds"},
                        {"Name": "rows", "Unit": "Count"},
                    ],
                }
            ],
        },
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


def emit(record: dict[str, Any], stream: TextIO | None = None) -> None:
    (stream or sys.stderr).write(dumps(record) + "\n")
