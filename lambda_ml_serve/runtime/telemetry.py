"""One JSON log line per request that is also a CloudWatch Embedded Metric Format record.

EMF turns chosen fields of a log line into metrics without an API call or a dependency; the other
fields stay searchable in CloudWatch Logs Insights.
"""

from __future__ import annotations

import os
import random as _random
import sys
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO

import msgspec

from lambda_ml_serve.runtime.http import dumps

NAMESPACE = "LambdaMLServe"
#: Lambda sets it in every execution environment; the records then carry the function's name.
FUNCTION_ENV = "AWS_LAMBDA_FUNCTION_NAME"


def metrics(function: str | None = None) -> list[dict[str, Any]]:
    """The EMF metric directive: ``latency_ms`` and ``rows`` per model, per model version, and per
    function when the record names one (so two stacks serving one model have metrics of their own)."""
    dimensions = [["model"], ["model", "version"], *([["function"]] if function else [])]
    return [
        {
            "Namespace": NAMESPACE,
            "Dimensions": dimensions,
            "Metrics": [
                {"Name": "latency_ms", "Unit": "Milliseconds"},
                {"Name": "rows", "Unit": "Count"},
            ],
        }
    ]


#: The directive of records written outside Lambda (no function name).
METRICS = metrics()


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
    function: str | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": metrics(function)},
        "level": "error" if status >= 500 else "info",
        "request_id": request_id,
        "model": model,
        "version": version,
        "status": status,
        "rows": rows,
        "latency_ms": round(latency_ms, 3),
        "model_sha256": model_sha256,
    }
    if function:
        record["function"] = function
    if error is not None:
        record["error"] = error
    return record


class RequestLog:
    """Writes each request's record for one model, one line of ``dumps(request_record(...))``.

    For the lines without an error trace the parts that never change are encoded once; a request
    fills in its id, status, rows and latency, so the line costs a string format instead of encoding
    a nested dict.
    """

    def __init__(
        self,
        model: str,
        version: str,
        stream: TextIO | None = None,
        model_sha256: str | None = None,
        function: str | None = None,
    ) -> None:
        """``function`` defaults to Lambda's ``AWS_LAMBDA_FUNCTION_NAME`` (none outside Lambda)."""
        function = function if function is not None else os.environ.get(FUNCTION_ENV) or None
        self._stream = stream
        self._names = (model, version, model_sha256, function)
        self._head = '{"_aws":{"Timestamp":'
        self._metrics = f',"CloudWatchMetrics":{dumps(metrics(function))}}},"level":'
        self._model = f',"model":{dumps(model)},"version":{dumps(version)}'
        named = f',"function":{dumps(function)}' if function else ""
        self._tail = f',"model_sha256":{dumps(model_sha256)}{named}}}'

    def write(self, request_id: str, status: int, rows: int, latency_ms: float, error: str | None = None) -> None:
        if error is not None:
            model, version, model_sha256, function = self._names
            record = request_record(
                request_id=request_id,
                model=model,
                version=version,
                status=status,
                rows=rows,
                latency_ms=latency_ms,
                model_sha256=model_sha256,
                error=error,
                function=function,
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


_encode = msgspec.json.Encoder().encode
#: The sampling rate of data capture (0 to 1); unset or 0: nothing is captured.
CAPTURE_ENV = "LAMBDA_ML_SERVE_CAPTURE"
#: The ``type`` of a capture record: request records have none, so a log filter tells them apart.
CAPTURE_TYPE = "capture"
#: At most this many bytes per capture record, under CloudWatch Logs' 256 KB per event (and Firehose's
#: 1,000 KB per record); a request beyond it is captured in part, ``rows_total`` telling how much.
MAX_CAPTURE_BYTES = 200_000


def capture_rate(value: str | float | None) -> float:
    """A sampling rate from ``value`` (the environment's text, or a number): 0 to 1, else ValueError."""
    if value is None or value == "":
        return 0.0
    rate = float(value)
    if not 0.0 <= rate <= 1.0:  # also refuses NaN
        raise ValueError(f"{CAPTURE_ENV} must be a number from 0 to 1 (the share of requests captured); got {value!r}")
    return rate


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


class Capture:
    """Writes a sampled share of the answered requests as capture records, one JSON line each.

    A record holds the request id, the time, the model's name, version and file sha256, the rows as
    the model received them (feature name -> value) and the predictions. Whether a request is
    captured is one ``random()`` call; only a captured request pays for encoding its rows. The
    record goes to ``stream`` (the function's log, where a subscription filter picks it out by its
    ``type``), or to a sink's ``write`` (``serve --capture DIR``).
    """

    def __init__(
        self,
        rate: float,
        model: str,
        version: str,
        model_sha256: str | None = None,
        stream: TextIO | None = None,
        *,
        max_bytes: int = MAX_CAPTURE_BYTES,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.rate = capture_rate(rate)
        self._stream = stream
        self._max_bytes = max_bytes
        self._random = random or _random.random
        self._head = f'{{"type":"{CAPTURE_TYPE}","request_id":'
        self._model = f',"model":{dumps(model)},"version":{dumps(version)},"model_sha256":{dumps(model_sha256)}'

    def sampled(self) -> bool:
        """Whether this request is captured: a coin of weight ``rate``."""
        return self.rate >= 1.0 or (self.rate > 0.0 and self._random() < self.rate)

    def record(self, request_id: str, rows: list[Any], predictions: list[Any], now: float | None = None) -> str:
        """The capture record's JSON line (without newline), cut to at most ``max_bytes`` of rows."""
        head = (
            f"{self._head}{encode_basestring_ascii(request_id)},"
            f'"time":"{_utc(time.time() if now is None else now)}"{self._model}'
        )
        # msgspec encodes a whole request's rows in one call (the per-value encoder of answers is
        # far slower on dicts); NaN becomes null. Only a request over the bound is cut, row by row.
        rows_text, predictions_text = _encode(rows), _encode(predictions)
        if len(head) + len(rows_text) + len(predictions_text) + 64 <= self._max_bytes:
            return f'{head},"rows":{rows_text.decode()},"predictions":{predictions_text.decode()}}}'
        # Over the bound: leading rows that fit, their number first estimated from the whole
        # request's size (rows are alike), then lowered until the encoded prefix fits.
        budget = self._max_bytes - len(head) - 64  # the keys, brackets, rows_total and truncated
        total = len(rows_text) + len(predictions_text)
        kept = min(len(rows), len(predictions), len(rows) * budget // total)
        while True:
            rows_text, predictions_text = _encode(rows[:kept]), _encode(predictions[:kept])
            if kept == 0 or len(rows_text) + len(predictions_text) <= budget:
                break
            kept = kept * 9 // 10
        return (
            f'{head},"rows":{rows_text.decode()},"predictions":{predictions_text.decode()}'
            f',"rows_total":{len(rows)},"truncated":true}}'
        )

    def write(self, request_id: str, rows: list[Any], predictions: list[Any]) -> None:
        line = self.record(request_id, rows, predictions) + "\n"
        stream = self._stream or sys.stderr
        stream.write(line)


class CaptureFiles:
    """A sink for ``serve --capture DIR``: JSON Lines files per UTC day, ``capture-YYYY-MM-DD.jsonl``.

    Environments serving side by side share one sink; a lock keeps each line whole.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        import threading

        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        self._lock = threading.Lock()

    def path_for(self, seconds: float) -> str:
        return os.path.join(self.folder, time.strftime("capture-%Y-%m-%d.jsonl", time.gmtime(seconds)))

    def write(self, line: str) -> None:
        with self._lock, open(self.path_for(time.time()), "a", encoding="utf-8") as file:
            file.write(line)
