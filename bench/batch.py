"""Batch scoring throughput: `lambda-ml-serve batch` on a 1,000,000-row CSV made from wine_concat.csv.

For each backend (xgboost, compiled) and worker count (1, 2) it runs the real ``score_file`` in a fresh
process, pinned with ``taskset`` to one CPU per worker, and reports rows/s and the peak RSS of the
scoring process and of its workers (``ru_maxrss``). Runs are interleaved over ``--repeat`` rounds and
the medians reported. Prints a markdown table for docs/BENCHMARKS.md.

    python bench/batch.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench" / "batch"

MEASURE = r"""
import json, resource, sys, time
from pathlib import Path
from lambda_ml_serve.batch import score_file
args = json.loads(sys.argv[1])
started = time.perf_counter()
summary = score_file(Path(args["input"]), Path(args["output"]), model="wine_quality", workers=args["workers"],
                     chunk_rows=args["chunk_rows"], backend=args["backend"],
                     artifact=Path(args["artifact"]) if args["artifact"] else None)
seconds = time.perf_counter() - started
print(json.dumps({"rows": summary.rows, "scored": summary.scored, "seconds": seconds,
                  "self_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def make_input(rows: int, source: Path) -> Path:
    """``rows`` data rows: wine_concat.csv's rows repeated in order (cached)."""
    target = CACHE / f"wine-{rows}.csv"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with source.open(newline="") as fh:
        header, *data = list(csv.reader(fh))
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(itertools.islice(itertools.cycle(data), rows))
    tmp.replace(target)
    return target


def compiled_artifact() -> Path:
    """The wine model compiled by the compiled backend's own prepare step (cached per source tree)."""
    from lambda_ml_serve.plugins import get_registry

    registry = get_registry()
    spec = registry.model("wine_quality").spec
    out = CACHE / "compiled"
    out.mkdir(parents=True, exist_ok=True)
    return registry.backend("compiled").prepare(spec.artifact_path, out, spec=spec)


def run_once(input_path: Path, backend: str, workers: int, artifact: Path | None, chunk_rows: int) -> dict:
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[-workers:])
    with tempfile.TemporaryDirectory() as tmp:
        args = {
            "input": str(input_path),
            "output": str(Path(tmp) / "scores.csv"),
            "workers": workers,
            "chunk_rows": chunk_rows,
            "backend": None if backend == "xgboost" else backend,
            "artifact": str(artifact) if artifact else None,
        }
        done = subprocess.run(
            ["taskset", "-c", cpus, sys.executable, "-c", MEASURE, json.dumps(args)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(done.stdout.splitlines()[-1])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    args = parser.parse_args()

    input_path = make_input(args.rows, args.data)
    variants = [("xgboost", None), ("compiled", compiled_artifact())]
    results: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeat):  # interleaved: every variant once per round
        for (backend, artifact), workers in itertools.product(variants, (1, 2)):
            result = run_once(input_path, backend, workers, artifact, args.chunk_rows)
            assert result["rows"] == args.rows, result
            results.setdefault((backend, workers), []).append(result)

    cpu = cpu_model()
    print(f"{args.rows:,} rows, chunks of {args.chunk_rows:,}, median of {args.repeat}; {cpu}, {os.cpu_count()} CPUs\n")
    print("| backend | workers | rows/s | seconds | peak RSS, main process | peak RSS, a worker |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (backend, workers), runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        main_rss = statistics.median(r["self_rss_mb"] for r in runs)
        worker_rss = statistics.median(r["worker_rss_mb"] for r in runs) if workers > 1 else None
        print(
            f"| {backend} | {workers} | {args.rows / seconds:,.0f} | {seconds:.1f} | {main_rss:,.0f} MB | "
            + (f"{worker_rss:,.0f} MB |" if worker_rss else "- |")
        )


if __name__ == "__main__":
    main()
