"""Where a request spends its time, stage by stage, for each backend: the full path and the fast path.

    python bench/breakdown.py [--rows 10000 1]   (after bench/run.py, which renders the contexts it reads)

Runs in this interpreter with the artifacts bench/run.py prepared (.cache/bench/<backend>/artifacts).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import time
from pathlib import Path

from run import rows_from
from variants import REPO

from lambda_ml_serve.checks import exactly_one
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.formats import rows_of
from lambda_ml_serve.runtime.http import dumps
from lambda_ml_serve.runtime.telemetry import RequestLog, request_record
from lambda_ml_serve.tune.worker import event

ARTIFACTS = {"xgboost": "model.ubj", "compiled": "model.so"}


def timed(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def stages(app: App, body: bytes, repeats: int) -> dict[str, float]:
    """Median milliseconds of each stage of the request path, run on its own."""
    rows = rows_of(json.loads(body), app.spec.feature_names)
    models = app.validator.validate(rows)
    batch = app.validator.pack(models)
    answer = app._answer(app.predictor.predict(batch))
    url_event = event(body.decode())
    assert app.fast.batch_of(url_event).values == batch.values
    full = copy.copy(app)
    full.fast = None
    log, stream = RequestLog(app.manifest.model, app.manifest.version, io.StringIO()), io.StringIO()
    record = {"request_id": "bench", "model": "wine_quality", "version": "1.0.0", "status": 200, "rows": len(rows)}
    return {
        "full path: JSON parse (json.loads)": timed(lambda: json.loads(body), repeats),
        "full path: pydantic validation": timed(lambda: app.validator.validate(rows), repeats),
        "full path: packing into float32": timed(lambda: app.validator.pack(models), repeats),
        "fast path: decode + validate + pack (msgspec)": timed(lambda: app.fast.batch_of(url_event), repeats),
        "fast path: of which the colour check": timed(lambda: exactly_one(batch.values, 13, (11, 12)), repeats),
        "predict": timed(lambda: app.predictor.predict(batch), repeats),
        "response JSON, json.dumps (before)": timed(
            lambda: json.dumps(answer, separators=(",", ":"), allow_nan=False), repeats
        ),
        "response JSON, now": timed(lambda: dumps(answer), repeats),
        "log line, json.dumps of the record (before)": timed(
            lambda: stream.write(json.dumps(request_record(**record, latency_ms=1.0), separators=(",", ":")) + "\n"),
            repeats,
        ),
        "log line, now": timed(lambda: log.write("bench", 200, len(rows), 1.0), repeats),
        "handler call, full path only": timed(lambda: full(url_event), repeats),
        "handler call, fast path": timed(lambda: app(url_event), repeats),
    }


def fmt(ms: float) -> str:
    return f"{ms * 1000:.1f} µs" if ms < 1 else f"{ms:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1])
    parser.add_argument("--repeats", type=int, default=15, help="at 10,000 rows; more for smaller requests")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    args = parser.parse_args()
    apps = {
        backend: App.load(
            "wine_quality",
            artifact=args.cache / backend / "artifacts" / name,
            backend=backend,
            log_stream=io.StringIO(),
        )
        for backend, name in ARTIFACTS.items()
    }
    for n_rows in args.rows:
        body = json.dumps(rows_from(args.data, n_rows)).encode()
        repeats = max(args.repeats, args.repeats * 10_000 // n_rows // 10)
        print(f"\n| stage ({n_rows:,} rows, median of {repeats}) | " + " | ".join(ARTIFACTS) + " |")
        print("| --- |" + " ---: |" * len(ARTIFACTS))
        columns = {backend: stages(app, body, repeats) for backend, app in apps.items()}
        for stage in next(iter(columns.values())):
            print(f"| {stage} | " + " | ".join(fmt(columns[b][stage]) for b in ARTIFACTS) + " |")


if __name__ == "__main__":
    main()
