"""Where a 10,000-row request spends its time, stage by stage, for each backend.

    python bench/breakdown.py [--rows 10000]   (after bench/run.py, which renders the contexts it reads)

Runs in this interpreter with the artifacts bench/run.py prepared (.cache/bench/<backend>/artifacts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from run import REPO, rows_from

from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.runtime.formats import rows_of
from lambda_ml_serve.runtime.http import dumps

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
    predictions = app.predictor.predict(batch)
    return {
        "JSON parse (json.loads)": timed(lambda: json.loads(body), repeats),
        "pydantic validation": timed(lambda: app.validator.validate(rows), repeats),
        "packing into float32": timed(lambda: app.validator.pack(models), repeats),
        "predict": timed(lambda: app.predictor.predict(batch), repeats),
        "response JSON": timed(lambda: dumps({"predictions": predictions}), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    args = parser.parse_args()
    body = json.dumps(rows_from(args.data, args.rows)).encode()
    print(f"| stage ({args.rows:,} rows, median of {args.repeats}) | " + " | ".join(ARTIFACTS) + " |")
    print("| --- |" + " ---: |" * len(ARTIFACTS))
    columns = {}
    for backend, name in ARTIFACTS.items():
        app = App.load("wine_quality", artifact=args.cache / backend / "artifacts" / name, backend=backend)
        columns[backend] = stages(app, body, args.repeats)
    for stage in next(iter(columns.values())):
        print(f"| {stage} | " + " | ".join(f"{columns[b][stage]:.1f} ms" for b in ARTIFACTS) + " |")


if __name__ == "__main__":
    main()
