"""What each request format costs: warm handler latency (event -> response) per format and size.

    taskset -c 1 python bench/formats.py [--data ../shared/data/wine_concat.csv] [--rounds 15]

Every format carries the same rows, so the differences are the cost of turning that format into rows.
Formats are interleaved round by round; each figure is the median of per-call medians. With
``--formats rows,instances,one_row`` it also runs on checkouts that know only those formats (put the
checkout first on PYTHONPATH), which measures what the format dispatch adds to the existing ones.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

from run import REPO, rows_from

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App

SIZES = {1: 300, 1000: 20}


def bodies(rows: list[dict], features: list[str]) -> dict[str, object]:
    values = [[row[f] for f in features] for row in rows]
    columns = {f: [row[f] for row in rows] for f in features}
    return {
        "rows": rows,
        "instances": {"instances": rows},
        "one_row": rows[0],
        "instances_lists": {"instances": values},
        "dataframe_split": {"dataframe_split": {"columns": features, "data": values}},
        "dataframe_records": {"dataframe_records": rows},
        "inputs": {"inputs": columns},
        "pandas_columns": {f: {str(i): v for i, v in enumerate(col)} for f, col in columns.items()},
        "columns": columns,
        "v2": {"inputs": [{"name": f, "shape": [len(c)], "datatype": "FP32", "data": c} for f, c in columns.items()]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "wine_concat.csv")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--formats", help="comma-separated subset of the formats")
    args = parser.parse_args()
    app = App.load("wine_quality", log_stream=io.StringIO())
    features = list(app.spec.feature_names)
    results: dict[tuple[str, int], list[float]] = {}
    events: dict[tuple[str, int], dict] = {}
    for size in SIZES:
        for name, body in bodies(rows_from(args.data, size), features).items():
            if (args.formats and name not in args.formats.split(",")) or (name == "one_row" and size > 1):
                continue
            path = "/v2/models/wine_quality/infer" if name == "v2" else "/"
            headers = [("content-type", "application/json")]
            events[name, size] = to_event("POST", path, headers, json.dumps(body).encode())
            assert app(events[name, size])["statusCode"] == 200, name
    for _ in range(args.rounds):
        for (name, size), event in events.items():
            samples = []
            for _ in range(SIZES[size]):
                started = time.perf_counter()
                app(event)
                samples.append(time.perf_counter() - started)
            results.setdefault((name, size), []).append(statistics.median(samples))
    print("| format | 1 row (µs) | 1,000 rows (ms) |\n| --- | ---: | ---: |")
    for name in dict.fromkeys(n for n, _ in events):
        one = statistics.median(results[name, 1]) * 1e6
        many = f"{statistics.median(results[name, 1000]) * 1e3:.2f}" if (name, 1000) in results else "-"
        print(f"| {name} | {one:.0f} | {many} |")


if __name__ == "__main__":
    main()
