"""Side-by-side benchmark: the seed-style handler, this framework with the xgboost backend, and with the
compiled backend, in one run.

    python bench/run.py [--data ../shared/data/wine_concat.csv] [--out FILE]

Each variant runs in fresh interpreters started from this process: cold start is spawn to first
response (median of --cold runs, also pinned to one CPU as on a 1,769 MB Lambda); warm latency is
the handler call (event -> response) for 1, 100 and 10,000 rows. The framework variants run from
exactly what their image holds (a rendered build context: its site-packages and prepared artifact),
with nothing else on the path; the baseline runs in this environment, where xgboost, pandas and
scikit-learn are installed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIZES = {"1": 300, "100": 200, "10000": 15}
MODEL = "wine_quality"
SEED = "seed-style"


@dataclass
class Variant:
    name: str
    command: list[str]
    env: dict[str, str]
    installed_mb: float


def rows_from(data: Path, n: int) -> list[dict]:
    with data.open() as fh:
        reader = list(csv.DictReader(fh))
    features = [c for c in reader[0] if c not in ("quality", "color")]
    rows = []
    for i in range(n):
        src = reader[i % len(reader)]
        row = {f: float(src[f]) for f in features}
        row["color_red"] = int(src["color"] == "red")
        row["color_white"] = int(src["color"] == "white")
        rows.append(row)
    return rows


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def framework_variant(cache: Path, backend: str, artifact: Path | None = None) -> Variant:
    """The framework as its image runs it: the build context's packages and prepared artifact only."""
    from lambda_ml_serve.bundling.context import render_build_context

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    ctx = render_build_context(
        MODEL, cache / backend, python=python, backend=backend, force=True, artifact=artifact
    )
    bootstrap = f"import sys; sys.path[:0] = [{str(ctx.site_packages)!r}, {str(HERE)!r}]; import worker; worker.main()"
    env = {"LAMBDA_ML_SERVE_MODEL": MODEL, "LAMBDA_ML_SERVE_ARTIFACT": str(ctx.artifact),
           "LAMBDA_ML_SERVE_PLUGINS": ctx.plugin, "LAMBDA_ML_SERVE_BACKEND": backend}  # fmt: skip
    # -S -E: no site-packages and no PYTHON* variables, so nothing outside the context is importable.
    size = dir_mb(ctx.site_packages) + ctx.artifact.stat().st_size / 1e6
    return Variant(backend, [sys.executable, "-S", "-E", "-c", bootstrap], env, size)


def lightgbm_model(cache: Path, data: Path) -> Path:
    """A LightGBM regressor trained on the same rows, columns in the schema's order (the wine model is XGBoost)."""
    import lightgbm
    import numpy as np

    rows = rows_from(data, 10_000)
    with data.open() as fh:
        target = [float(r["quality"]) for r in csv.DictReader(fh)]
    matrix = np.array([list(r.values()) for r in rows[: len(target)]], dtype=np.float32)
    params = {"objective": "regression", "num_leaves": 31, "max_depth": 5, "seed": 2, "verbose": -1, "num_threads": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(matrix, label=target), num_boost_round=553)
    path = cache / "wine_lightgbm.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path


def seed_variant() -> Variant:
    import importlib.util

    from lambda_ml_serve.plugins import get_registry

    spec = get_registry().model(MODEL).spec
    installed = sum(
        dir_mb(Path(importlib.util.find_spec(m).origin).parent)
        for m in ("xgboost", "pandas", "sklearn", "numpy", "scipy")
    )
    command = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import worker; worker.main()"]
    return Variant(SEED, command, {"SEED_MODEL": str(spec.artifact_path)}, installed)


def handler_module(variant: Variant) -> str:
    return "seed_handler" if variant.name == SEED else "lambda_ml_serve.runtime.handler"


def cold_start(variant: Variant, body: str, *, pin: bool) -> float:
    command = [*variant.command, handler_module(variant), "cold"]
    if pin:
        command = ["taskset", "-c", "0", *command]
    env = {**os.environ, **variant.env}
    started = time.time()
    proc = subprocess.run(command, input=json.dumps({"1": body}), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant.name} cold start failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)["ready"] - started


def warm(variant: Variant, bodies: dict[str, str]) -> dict:
    command = [*variant.command, handler_module(variant), "warm", json.dumps(SIZES)]
    env = {**os.environ, **variant.env}
    proc = subprocess.run(command, input=json.dumps(bodies), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant.name} warm run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    parser.add_argument("--cold", type=int, default=9, help="cold starts per variant (median)")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    args = parser.parse_args(argv)

    bodies = {n: json.dumps(rows_from(args.data, int(n))) for n in SIZES}
    print("rendering the framework's build contexts ...", file=sys.stderr)
    variants = [
        seed_variant(),
        framework_variant(args.cache, "xgboost"),
        framework_variant(args.cache, "compiled"),
        # The same XGBoost model, converted to ONNX at build time; and a LightGBM model of the same size.
        framework_variant(args.cache, "onnx"),
        framework_variant(args.cache, "lightgbm", lightgbm_model(args.cache, args.data)),
    ]
    results: dict[str, dict] = {}
    for variant in variants:
        print(f"measuring {variant.name} ...", file=sys.stderr)
        # Interleaving is unnecessary here: each cold start is its own fresh process.
        cold = [cold_start(variant, bodies["1"], pin=False) for _ in range(args.cold)]
        pinned = [cold_start(variant, bodies["1"], pin=True) for _ in range(args.cold)]
        results[variant.name] = {"cold": cold, "pinned": pinned, "warm": warm(variant, bodies),
                                 "installed_mb": variant.installed_mb}  # fmt: skip

    table = render(results, args.cold)
    print(table)
    if args.out:
        args.out.write_text(table)


def render(results: dict[str, dict], cold_runs: int) -> str:
    names = list(results)
    others = names[1:]
    lines = [
        "| figure | " + " | ".join(names) + " | " + " | ".join(f"ratio {n}" for n in others) + " |",
        "| --- |" + " ---: |" * (len(names) + len(others)),
    ]

    def row(label: str, pick, unit=fmt_ms) -> None:
        values = [pick(results[n]) for n in names]
        ratios = [f"{values[0] / v:.1f}x" for v in values[1:]]
        lines.append(f"| {label} | " + " | ".join(map(unit, values)) + " | " + " | ".join(ratios) + " |")

    row(f"cold start, median of {cold_runs}", lambda r: statistics.median(r["cold"]))
    row("cold start pinned to 1 CPU", lambda r: statistics.median(r["pinned"]))
    for size in SIZES:
        row(f"warm {size} rows, median", lambda r, s=size: statistics.median(r["warm"][s]))
        row(f"warm {size} rows, p99", lambda r, s=size: percentile(r["warm"][s], 0.99))
    row("peak RSS (warm run)", lambda r: r["warm"]["max_rss_kb"] / 1024, unit=lambda v: f"{v:.0f} MB")
    row("serving packages installed", lambda r: r["installed_mb"], unit=lambda v: f"{v:.0f} MB")
    imported = {n: r["warm"]["modules"] for n, r in results.items()}
    lines += ["", f"pandas/sklearn/boto3 imported while serving: {json.dumps(imported)}", "",
              f"Machine: {machine()}. Ratios are seed-style / variant (higher is better)."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
