"""What the clients' encodings cost: warm latency of one 10,000-row request, per encoding.

    taskset -c 1 python bench/clients.py [--data ../shared/data/wine_concat.csv] [--rounds 9] [--repeats 5]

The same 10,000 rows go to the handler (Function URL event -> response, in-process, xgboost backend)
as plain JSON, as JSON gzip-compressed (with and without a gzip answer), as MLflow's /invocations JSON
and CSV, and as Open Inference Protocol v2 JSON and binary tensors (with JSON or binary outputs); beside
them, the original service's handler code (``pd.read_json`` into ``XGBRegressor.predict``, run here
with this environment's pandas and xgboost). Encodings are interleaved round by round; each figure is
the median over rounds of per-round medians.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

from run import REPO, rows_from

from lambda_ml_serve.local.events import to_event
from lambda_ml_serve.runtime.app import App

ROWS = 10_000
INFER = "/v2/models/wine_quality/infer"


def events(rows: list[dict], features: list[str]) -> dict[str, dict]:
    """The rows in every encoding, as Function URL events."""
    json_body = json.dumps(rows).encode()
    columns = {f: [row[f] for row in rows] for f in features}
    v2_json = {"inputs": [{"name": f, "shape": [len(c)], "datatype": "FP32", "data": c} for f, c in columns.items()]}
    for tensor in v2_json["inputs"]:
        if tensor["name"].startswith("color_"):
            tensor["datatype"], tensor["data"] = "BOOL", [bool(v) for v in tensor["data"]]
    # As GET /v2/models/wine_quality advertises: FP32 features, BOOL colour flags.
    types = {f: ("BOOL", "?", 1) if f.startswith("color_") else ("FP32", "f", 4) for f in features}
    header = {
        "inputs": [
            {
                "name": f,
                "shape": [len(c)],
                "datatype": types[f][0],
                "parameters": {"binary_data_size": types[f][2] * len(c)},
            }
            for f, c in columns.items()
        ]
    }
    data = b"".join(struct.pack(f"<{len(c)}{types[f][1]}", *c) for f, c in columns.items())
    binary_out = header | {"parameters": {"binary_data_output": True}}
    csv = "\n".join([",".join(features), *(",".join(str(row[f]) for f in features) for row in rows)]) + "\n"
    plain = [("content-type", "application/json")]
    gzipped = [*plain, ("content-encoding", "gzip")]
    octets = [("content-type", "application/octet-stream")]

    def binary(h: dict) -> dict:
        text = json.dumps(h).encode()
        return to_event("POST", INFER, [*octets, ("inference-header-content-length", str(len(text)))], text + data)

    return {
        "JSON, POST /": to_event("POST", "/", plain, json_body),
        "JSON gzip-compressed": to_event("POST", "/", gzipped, gzip.compress(json_body, 6)),
        "JSON gzip, gzip answer": to_event(
            "POST", "/", [*gzipped, ("accept-encoding", "gzip")], gzip.compress(json_body, 6)
        ),
        "MLflow /invocations JSON": to_event(
            "POST", "/invocations", plain, json.dumps({"dataframe_records": rows}).encode()
        ),
        "MLflow /invocations CSV": to_event("POST", "/invocations", [("content-type", "text/csv")], csv.encode()),
        "v2 JSON tensors": to_event("POST", INFER, plain, json.dumps(v2_json).encode()),
        "v2 binary tensors, JSON answer": binary(header),
        "v2 binary tensors, binary answer": binary(binary_out),
    }


def original_handler(model_file: Path) -> Callable[[dict, object], dict]:
    import pandas as pd
    import xgboost as xgb

    model = xgb.XGBRegressor()
    model.load_model(str(model_file))

    def handler(event: dict, context: object) -> dict:
        df = pd.read_json(io.StringIO(event["body"]))
        return {"statusCode": 200, "body": json.dumps(model.predict(df).tolist())}

    return handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "wine_concat.csv")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    app = App.load("wine_quality", log_stream=io.StringIO())
    features = list(app.spec.feature_names)
    rows = rows_from(args.data, ROWS)
    cases: dict[str, tuple[Callable, dict]] = {name: (app, event) for name, event in events(rows, features).items()}
    original = original_handler(app.spec.artifact_path)
    plain = cases["JSON, POST /"][1]
    cases = {"original handler (JSON)": (original, plain), **cases}
    for name, (handler, event) in cases.items():
        response = handler(event, None)
        assert response["statusCode"] == 200, (name, str(response["body"])[:300])
        body = base64.b64decode(response["body"]) if response.get("isBase64Encoded") else response["body"].encode()
        cases[name] = (handler, event, len(body))  # type: ignore[assignment]
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, (handler, event, _) in cases.items():  # type: ignore[misc]
            samples = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                handler(event, None)
                samples.append(time.perf_counter() - started)
            results.setdefault(name, []).append(statistics.median(samples))
    base = statistics.median(results["original handler (JSON)"])
    print("| request (10,000 rows) | request body | answer body | warm latency (ms) | vs the original |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (_, event, answer_bytes) in cases.items():  # type: ignore[misc]
        median = statistics.median(results[name])
        size = len(event["body"]) * 3 // 4 if event.get("isBase64Encoded") else len(event["body"].encode())
        sizes = f"{size / 1e6:.2f} MB | {answer_bytes / 1e3:.0f} KB"
        print(f"| {name} | {sizes} | {median * 1e3:.1f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
