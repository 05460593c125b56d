"""What data capture costs a request: the handler's time per answer with capture off, sampled, and on.

    taskset -c 1 python bench/capture.py [--rounds 15] [--calls 200]

One process, one model loaded three times (off, ``capture=0.05``, ``capture=1``), capture records
written to an in-memory stream as the function's log would take them. Rounds interleave the
variants (off, 5 %, 100 %, off, ...) so drift of the machine hits them alike; each round times
``--calls`` answers of one request per variant, and the figures are the medians over rounds of the
time per answer, with the ratio to capture off. Requests: the 2 sample rows, and 1,000 rows.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", REPO.parent / "shared")) / "data" / "samples.json"


class Sink(io.TextIOBase):
    """A log stream that keeps only the byte count: the cost measured is encoding, not a growing buffer."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text)
        return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import url_event

    from lambda_ml_serve.runtime.app import App

    samples = json.loads(SAMPLES.read_bytes())
    requests = {"2 rows": samples, "1,000 rows": samples * 500}
    variants = {"off": 0.0, "5 %": 0.05, "100 %": 1.0}
    apps = {
        name: App.load("wine_quality", log_stream=Sink(), capture=rate, capture_stream=Sink())
        for name, rate in variants.items()
    }
    print(f"{'request':<12} {'capture':<8} {'median µs/answer':>17} {'vs off':>7}")
    for label, rows in requests.items():
        event = url_event(json.dumps(rows).encode())
        timings: dict[str, list[float]] = {name: [] for name in variants}
        for app in apps.values():  # warm up: first answers build caches
            for _ in range(20):
                app(event)
        for _ in range(args.rounds):
            for name, app in apps.items():
                started = time.perf_counter()
                for _ in range(args.calls):
                    app(event)
                timings[name].append((time.perf_counter() - started) / args.calls * 1e6)
        off = statistics.median(timings["off"])
        for name in variants:
            median = statistics.median(timings[name])
            print(f"{label:<12} {name:<8} {median:>17.1f} {median / off:>7.2f}")
    # The work capture adds to a captured request, on its own: decoding the body again, naming the
    # rows' values, encoding the record. Best and median of --rounds timings of --calls each.
    print(f"\n{'request':<12} {'capture work alone':<20} {'best µs':>9} {'median µs':>10}")
    app = apps["100 %"]
    for label, rows in requests.items():
        event = url_event(json.dumps(rows).encode())
        answer = app(event)
        from lambda_ml_serve.runtime.http import Answer, parse_event

        request = parse_event(event, "bench")
        done = Answer(200, json.loads(answer["body"]), {})
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            for _ in range(args.calls):
                app._capture_request(request, done, "bench")
            times.append((time.perf_counter() - started) / args.calls * 1e6)
        print(f"{label:<12} {'decode + record':<20} {min(times):>9.1f} {statistics.median(times):>10.1f}")


if __name__ == "__main__":
    main()
