"""arm64 images under qemu beside the same images built for x86_64: EMULATED timings, not arm64 performance.

    python bench/emulated_arm64.py [--cold 3] [--warm 30] [--out FILE]

Builds wine_quality with the xgboost and compiled backends for both architectures on the stand-in
bases (x86_64 natively; arm64 through BuildKit without emulation), then runs each through the
Runtime Interface Emulator, arm64 under qemu-user (binfmt_misc, .ci/qemu-binfmt): cold start is
`docker run` to the first answer to samples.json (median of --cold fresh containers, images taking
turns), warm is the median client-side latency of --warm further requests. qemu translates every
instruction, so these numbers say what CI's arm64 tests cost, nothing about Graviton.
Needs the stand-ins: tests/container/standin/build.sh, with LMS_STANDIN_ARCH=arm64 for the second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import machine

from lambda_ml_serve.local.container import RieContainer

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent.parent / "shared" / "data" / "samples.json"
STANDIN = os.environ.get("LMS_STANDIN_TAG", "lambda-ml-serve/standin-python:3.11")
STANDIN_ARM64 = os.environ.get("LMS_STANDIN_ARM64_TAG", "lambda-ml-serve/standin-python:3.11-arm64")


def build(arch: str, backend: str, work: Path) -> str:
    tag = f"lambda-ml-serve-bench/emulated:{arch}-{backend}-{os.getpid()}"
    base = STANDIN_ARM64 if arch == "arm64" else STANDIN
    command = [
        sys.executable,
        "-m",
        "lambda_ml_serve.cli",
        "build",
        "wine_quality",
        "--arch",
        arch,
        "--python",
        "3.11",
        "--backend",
        backend,
        "--base-image",
        base,
        "--build-base-image",
        STANDIN,
        "--tag",
        tag,
        "--output",
        str(work / f"{arch}-{backend}"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"building {tag} failed: {result.stderr.strip().splitlines()[-1:]}")
    return tag


def event(body: bytes) -> dict:
    return {
        "version": "2.0",
        "rawPath": "/",
        "body": body.decode(),
        "isBase64Encoded": False,
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/"}, "requestId": "bench"},
    }


def cold_start(tag: str, request: dict) -> float:
    started = time.perf_counter()
    with RieContainer(tag) as function:
        answer = function.invoke(request, timeout=600)
        assert answer["statusCode"] == 200, answer
    return time.perf_counter() - started


def warm(tag: str, request: dict, count: int) -> float:
    with RieContainer(tag) as function:
        function.invoke(request, timeout=600)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            function.invoke(request, timeout=600)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=3)
    parser.add_argument("--warm", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    request = event(SAMPLES.read_bytes())
    with tempfile.TemporaryDirectory(prefix="lms-bench-emulated-") as work:
        images = {
            (arch, backend): build(arch, backend, Path(work))
            for arch in ("x86_64", "arm64")
            for backend in ("xgboost", "compiled")
        }
        try:
            colds: dict[tuple[str, str], list[float]] = {key: [] for key in images}
            for _ in range(args.cold):
                for key, tag in images.items():
                    colds[key].append(cold_start(tag, request))
            results = {
                f"{arch} {backend}": {
                    "cold_start_s": round(statistics.median(colds[arch, backend]), 3),
                    "warm_2_rows_ms": round(warm(tag, request, args.warm) * 1000, 2),
                    "emulated": arch == "arm64",
                }
                for (arch, backend), tag in images.items()
            }
        finally:
            subprocess.run(["docker", "rmi", "-f", *images.values()], capture_output=True)
    report = {"machine": machine(), "cold_runs": args.cold, "warm_requests": args.warm, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
