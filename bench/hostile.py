"""What hostile requests cost the handler: status, answer size, CPU time and memory, one per process.

    taskset -c 1 python bench/hostile.py [--repeats 5]

Each case runs in a fresh interpreter (so peak memory is its own): the app loads, the body is built,
then the event is answered ``--repeats`` times; the figures are the median CPU time of one answer and
the growth of the peak resident set from just before the first call (body built, app loaded).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", REPO.parent / "shared")) / "data" / "samples.json"


def gzip_bomb(size: int, layers: int = 1) -> bytes:
    """``size`` bytes of ``[`` gzip-compressed ``layers`` times, built in steps (never whole in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"[" * (1 << 20)
    data = b"".join(compressor.compress(block) for _ in range(size // len(block))) + compressor.flush()
    for _ in range(layers - 1):
        data = gzip.compress(data, 9, mtime=0)
    return data


def bodies() -> dict[str, Callable[[], bytes | tuple[bytes, dict[str, str]]]]:
    """The hostile bodies, by name, each built only when asked: each a way a client broke a handler.

    A case may also give request headers (a compressed body announces its coding).
    """
    gzipped = {"content-encoding": "gzip"}
    unknown = {f"k{j:02d}": 0 for j in range(60)}
    compact = functools.partial(json.dumps, separators=(",", ":"))
    return {
        "10,000 rows of 60 unknown keys": lambda: compact([unknown] * 10_000).encode(),
        "one 5.5 MB key": lambda: compact([{"k" * 5_500_000: 1}]).encode(),
        "one key of 2,750,000 x é": lambda: compact([{"é" * 2_750_000: 1}], ensure_ascii=False).encode(),
        "2,800 keys of 1,000 x é": lambda: compact(
            [{"é" * 1_000 + str(i): 1 for i in range(2_800)}], ensure_ascii=False
        ).encode(),
        "5.6 MB value of é": lambda: compact([{"pH": "é" * 2_800_000}], ensure_ascii=False).encode(),
        "one row, 500,000 keys": lambda: compact([{f"k{i}": 0 for i in range(500_000)}]).encode(),
        "[ x 100,000": lambda: b"[" * 100_000 + b"]" * 100_000,
        "samples.json in UTF-16 (LE, no BOM)": lambda: SAMPLES.read_text(encoding="utf-8").encode("utf-16-le"),
        "samples.json (valid, 2 rows)": SAMPLES.read_bytes,
        "10,000 valid rows": lambda: compact(json.loads(SAMPLES.read_bytes()) * 5_000).encode(),
        "gzip bomb: 1 GB of [ in 1 MB": lambda: (gzip_bomb(1 << 30), gzipped),
        "gzip bomb twice: 10 GB of [ in 10 KB, gzip, gzip": lambda: (
            gzip_bomb(10 << 30, layers=2),
            {"content-encoding": "gzip, gzip"},
        ),
        "10,000 valid rows, gzip": lambda: (
            gzip.compress(compact(json.loads(SAMPLES.read_bytes()) * 5_000).encode(), 6, mtime=0),
            gzipped,
        ),
    }


def measure(case: str, repeats: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import url_event

    from lambda_ml_serve.runtime.app import App

    app = App.load("wine_quality", log_stream=io.StringIO())
    built = bodies()[case]()
    body, headers = built if isinstance(built, tuple) else (built, {})
    event = url_event(body)
    event["headers"].update(headers)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        started = time.process_time()
        response = app(event)
        times.append(time.process_time() - started)
    return {
        "case": case,
        "body_mb": len(event["body"].encode("utf-8", "surrogatepass")) / 1e6,
        "status": response["statusCode"],
        "answer_bytes": len(response["body"].encode()),
        "cpu_ms": statistics.median(times) * 1000,
        "peak_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", help="answer only this request (by name), in this process; prints JSON")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, args.repeats)))
        return
    print("| request | body | status | answer | CPU per answer | peak memory growth |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case in bodies():
        command = [sys.executable, __file__, "--case", case, "--repeats", str(args.repeats)]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(
            f"| {row['case']} | {row['body_mb']:.2f} MB | {row['status']} | {row['answer_bytes']:,} B "
            f"| {row['cpu_ms']:.1f} ms | {row['peak_growth_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
