"""Deployment zip sizes: what `lambda-ml-serve build --package zip` writes, measured by building it.

    python bench/zips.py [--out FILE] [--python 3.12] [--builds xgboost/x86_64,compiled/x86_64]

Builds wine_quality's zip for each backend and architecture below (the same call as the command) into
a temporary folder and prints the markdown table of docs/guides/build.md: the zip's size and the sum
of its members' sizes unzipped (what Lambda's 250 MB limit counts), in MB of 2**20 bytes as `build`
prints them, and whether bytecode is in (only when this host has the target's pythonX.Y). A size is a
count of bytes, not a timing: it does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from lambda_ml_serve.bundling.deployment_zip import build_zip
from lambda_ml_serve.errors import LambdaMLServeError

MODEL = "wine_quality"
#: (backend, arch): the compiled backend builds arm64 only with a cross compiler, so it is measured on x86_64.
BUILDS = [("xgboost", "x86_64"), ("xgboost", "arm64"), ("compiled", "x86_64")]


def measure(python: str, builds: list[tuple[str, str]] = BUILDS) -> str:
    rows = []
    work = Path(tempfile.mkdtemp(prefix="lms-zips-"))
    try:
        for backend, arch in builds:
            print(f"zips: {backend} {arch} python{python}", file=sys.stderr)
            try:
                built = build_zip(MODEL, work / f"{backend}-{arch}.zip", arch=arch, python=python, backend=backend)
            except LambdaMLServeError as exc:
                rows.append(f"| {backend} | {arch} | not built: {exc} | | |")
                continue
            rows.append(
                f"| {backend} | {arch} | {built.zipped_bytes / 2**20:.1f} MB | {built.unzipped_bytes / 2**20:.1f} MB "
                f"| {'yes' if built.bytecode else 'no'} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return "\n".join(
        [
            f"Measured for {MODEL}, Python {python}, by `python bench/zips.py` (host Python "
            f"{platform.python_version()}: bytecode only when the host has python{python}):",
            "",
            "| backend | arch | zipped | unzipped (Lambda's limit: 250 MB) | bytecode |",
            "| --- | --- | ---: | ---: | --- |",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--python", default="3.12", help="the managed runtime's Python (default 3.12)")
    parser.add_argument(
        "--builds", help="comma-separated BACKEND/ARCH (default: " + ",".join(map("/".join, BUILDS)) + ")"
    )
    args = parser.parse_args(argv)
    builds = [tuple(b.split("/", 1)) for b in args.builds.split(",")] if args.builds else BUILDS
    table = measure(args.python, builds)
    print(table)
    if args.out:
        args.out.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
