"""What scores a chunk of rows: the model in this process, or a deployed Function URL.

Both answer :class:`~lambda_ml_serve.runtime.items.ScoredRows` through the same splitting rule as a
Distributed Map batch (:func:`~lambda_ml_serve.runtime.items.score_rows`), so a bad row fails only
itself wherever the rows are scored.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lambda_ml_serve.runtime.errors import ApiError
from lambda_ml_serve.runtime.items import ScoredRows, score_rows

#: Answers worth another try: throttling (Lambda's 429), and the service's own transient faults.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class LocalModel:
    """How to load the model in a (worker) process: picklable, so a process pool can start from it."""

    model: str
    artifact: Path | None = None
    backend: str | None = None
    max_rows: int = 10_000
    #: Score each row with its explanation: a dict of the prediction and ``shap:`` columns.
    explain: bool = False

    def load(self) -> Callable[[list[Any]], ScoredRows]:
        import io

        from lambda_ml_serve.runtime.app import App

        # The request log lines are for a served function; a batch run reports its own summary.
        app = App.load(
            self.model, artifact=self.artifact, backend=self.backend, max_rows=self.max_rows, log_stream=io.StringIO()
        )
        if self.explain:
            return lambda rows: score_rows(partial(explained_rows, app), rows)
        return lambda rows: score_rows(lambda part: app.predict(part)["predictions"], rows)


def explained_rows(app: Any, rows: list[Any]) -> list[dict[str, Any]]:
    """Each row's prediction and explanation as flat columns: ``shap:<field>`` (``shap:<class>:<field>``
    per class), ``shap:expected_value`` and ``shap:margin``; in slices of the explanation row limit."""
    scored: list[dict[str, Any]] = []
    for start in range(0, len(rows), app.explain_max_rows):
        answer = app.explain(rows[start : start + app.explain_max_rows])
        outputs = answer["explanation"].get("outputs")
        for prediction, row in zip(answer["predictions"], answer["explanations"], strict=True):
            columns: dict[str, Any] = {"prediction": prediction}
            per_output = (
                [row]
                if not isinstance(row["margin"], list)
                else [{key: row[key][k] for key in row} for k in range(len(row["margin"]))]
            )
            for k, part in enumerate(per_output):
                prefix = "shap:" if len(per_output) == 1 else f"shap:{outputs[k] if outputs else k}:"
                columns |= {f"{prefix}{name}": value for name, value in part["contributions"].items()}
                columns |= {f"{prefix}expected_value": part["expected_value"], f"{prefix}margin": part["margin"]}
            scored.append(columns)
    return scored


_worker_score: Callable[[list[Any]], ScoredRows] | None = None


def init_worker(model: LocalModel) -> None:
    """Process-pool initializer: load the model once per worker process, as Lambda does per environment."""
    global _worker_score
    _worker_score = model.load()


def score_in_worker(rows: list[Any]) -> ScoredRows:
    assert _worker_score is not None, "init_worker did not run"
    return _worker_score(rows)


@dataclass
class Retry:
    """Exponential backoff with full jitter (sleep a random time up to the doubled cap), bounded in count."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 20.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


class UrlScorer:
    """Scores rows through a deployed Function URL with the SigV4 client, one client per thread.

    A 422 is split like a local validation error; a 413 (too many rows or bytes) splits the rows
    in halves; 429, 5xx and connection failures or timeouts are retried with :class:`Retry`, and
    when the tries run out the error propagates, so the chunk is not written and ``--resume``
    scores it again. Nothing is counted as scored or rejected unless the server said so.
    """

    def __init__(self, url: str, *, retry: Retry | None = None, **client_options: Any) -> None:
        from lambda_ml_serve.client import FunctionUrlClient

        self._new_client = lambda: FunctionUrlClient(url, **client_options)
        self._new_client()  # configuration errors (region, auth) now, not in a worker thread
        self._local = threading.local()
        self.retry = retry or Retry()
        self.retries = 0

    def __call__(self, rows: list[Any]) -> ScoredRows:
        return score_rows(self._predict, rows)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._new_client()
        return client

    def _predict(self, rows: list[Any]) -> list[Any]:
        from lambda_ml_serve.client import ClientConfigError, FunctionUrlClientError, FunctionUrlError

        attempt = 0
        while True:
            try:
                answer = self._client().predict(rows)
                return answer if isinstance(answer, list) else answer["predictions"]
            except FunctionUrlError as exc:
                if exc.status == 422:
                    raise ApiError("validation_error", exc.message, exc.details) from None
                if exc.status == 413 and len(rows) > 1:
                    middle = len(rows) // 2
                    return self._predict(rows[:middle]) + self._predict(rows[middle:])
                if exc.status not in RETRY_STATUSES:
                    raise
                failure: Exception = exc
            except ClientConfigError:
                raise
            except FunctionUrlClientError as exc:  # refused, reset, timed out, an unreadable answer
                failure = exc
            attempt += 1
            if attempt >= self.retry.attempts:
                raise failure
            self.retries += 1
            self.retry.sleep(self.retry.delay(attempt))
