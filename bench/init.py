"""Cold start with and without the serving manifest: process start to the first answer, pinned to one CPU.

    python bench/init.py [--runs 15] [--cpu 1] [--extra LABEL=ROOT ...]
    (after bench/run.py, which renders the contexts it reads: .cache/bench/<backend>)

For each backend, fresh interpreters run the image's handler (through ``lambda_ml_serve/tune/worker.py``)
from the context's site-packages only (``-S -E``), taking turns: with the manifest build wrote beside the artifact, and
with the same artifact in a folder without it (the registry init: entry points, pluggy, pydantic, the
plugin). ``--extra LABEL=ROOT`` adds ``ROOT/<backend>/site-packages``, served the registry way, e.g.
an earlier build's contexts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import rows_from
from variants import MODEL, REPO, worker_command

ARTIFACTS = {"xgboost": "model.ubj", "compiled": "model.so"}


def first_answer(site: Path, artifact: Path, backend: str, body: str, cpu: int) -> tuple[float, float]:
    """Seconds from spawning the interpreter to the handler's first answer, and the CPU seconds it used.

    The CPU time (user + system) hardly changes when other processes share the CPU; the wall time does.
    """
    command = ["taskset", "-c", str(cpu), *worker_command(sys.executable, [site], isolated=True)]
    command += ["lambda_ml_serve.runtime.handler", "[]", "cold"]
    env = {
        **os.environ,
        "LAMBDA_ML_SERVE_MODEL": MODEL,
        "LAMBDA_ML_SERVE_ARTIFACT": str(artifact),
        "LAMBDA_ML_SERVE_PLUGINS": MODEL,
        "LAMBDA_ML_SERVE_BACKEND": backend,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(command, input=body, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{site} ({artifact.name}) failed:\n{proc.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return json.loads(proc.stdout)["answered"] - started, cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    parser.add_argument(
        "--extra", action="append", default=[], help="LABEL=ROOT: ROOT/<backend>/site-packages, served the registry way"
    )
    args = parser.parse_args()
    body = json.dumps(rows_from(args.data, 1))
    print(f"| backend | variant | start to first answer, median of {args.runs} | min | max | CPU time, median |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as plain:
        for backend, name in ARTIFACTS.items():
            context = args.cache / backend
            artifact = context / "artifacts" / name
            bare = Path(plain) / backend / name  # the same artifact, with no manifest beside it
            bare.parent.mkdir()
            shutil.copy(artifact, bare)
            site = context / "site-packages"
            variants = {"manifest": (site, artifact), "registry": (site, bare)}
            for extra in args.extra:
                label, _, tree = extra.partition("=")
                variants[label] = (Path(tree) / backend / "site-packages", bare)
            times: dict[str, list[tuple[float, float]]] = {label: [] for label in variants}
            for _ in range(args.runs):  # interleaved: each round runs every variant once
                for label, (tree, path) in variants.items():
                    times[label].append(first_answer(tree, path, backend, body, args.cpu))
            for label, samples in times.items():
                ms = [wall * 1000 for wall, _ in samples]
                cpu = statistics.median(used * 1000 for _, used in samples)
                print(
                    f"| {backend} | {label} | {statistics.median(ms):.1f} ms | {min(ms):.1f} ms | {max(ms):.1f} ms "
                    f"| {cpu:.1f} ms |"
                )


if __name__ == "__main__":
    main()
