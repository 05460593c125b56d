"""Power tuning of the framework's backends beside the original handler, under the same CPU quotas and memory limits.

    python bench/tune.py [--memory 128,256,512,1024,1769,3008] [--rows 1,100,10000] [--requests 30]
                         [--cold-starts 3] [--out docs/guides/img] [--note TEXT]

What ``lambda-ml-serve tune`` measures, for three functions serving the project's wine_quality model:
the framework with the xgboost backend and with the compiled backend (each from its rendered build
context, as the image runs), and the original handler (``bench/original_handler.py`` in
bench/.venv-original, with the same model file). Sizes are the outer loop and the three take turns at
each size, so a noisy neighbour hits them alike. Writes one tune report (JSON) per function, one plot
of the three (PNG and SVG), and a markdown summary to stdout (and ``--out``/tune.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from run import machine, rows_from
from variants import DATA, MODEL, ORIGINAL_VENV, REPO, legacy_readable, original_python

from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve.tune.cgroups import Limits, detect
from lambda_ml_serve.tune.measure import ProcessTarget, context_target, measure_process
from lambda_ml_serve.tune.plot import plot
from lambda_ml_serve.tune.report import Settings, build_report, host, write_json
from lambda_ml_serve.tune.session import prepare_context

HERE = Path(__file__).resolve().parent
BACKENDS = ("xgboost", "compiled")


def original_target(cache: Path) -> ProcessTarget:
    """The original handler in its own venv, serving the project's model (written as XGBoost 1.6 reads it)."""
    python = original_python()
    model = legacy_readable(get_registry().model(MODEL).spec.artifact_path, cache)
    return ProcessTarget(
        label="original handler",
        paths=(HERE,),
        # The venv's own site-packages, and nothing from this environment's PYTHONPATH.
        env={"BENCH_MODEL": str(model), "PYTHONPATH": ""},
        python=python,
        handler="original_handler",
        isolated=False,
    )


def usd(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def ms(value: float) -> str:
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:,.1f} ms"


def markdown(reports: dict[str, dict], rows: list[int]) -> str:
    """Per function and size: cold start, median latency and $ per million predictions at each batch size."""
    head = " | ".join(f"{n:,} row{'' if n == 1 else 's'}: median, $/1M pred." for n in rows)
    out = [
        f"| function | memory | cold start | {head} | peak memory |",
        "| --- | ---: | ---: |" + " ---: |" * (len(rows) + 1),
    ]
    for report in reports.values():
        for size in report["sizes"]:
            peak = max(v for v in (size["peak_memory_mb"], size["rss_mb"], 0) if v is not None)
            if size["status"] != "ok":
                cells = " | ".join("-" for _ in rows)
                status = "**does not fit**" if size["status"] == "oom" else f"**{size['status']}**"
                detail = f"{status} ({size['detail']})"
                out.append(f"| {report['label']} | {size['memory_mb']:,} MB | - | {cells} | {detail} |")
                continue
            by_rows = {b["rows"]: b for b in size["batches"]}
            cells = " | ".join(
                f"{ms(by_rows[n]['median_ms'])}, {usd(by_rows[n]['cost']['per_million_predictions_with_cold_starts'])}"
                for n in rows
            )
            cold = ms(size["cold_start_ms"]["median"])
            out.append(f"| {report['label']} | {size['memory_mb']:,} MB | {cold} | {cells} | {peak:.0f} MB |")
    out += ["", "| function | batch size | recommended | median | p99 | $ per million predictions | cheapest size |"]
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for report in reports.values():
        for rec in report["recommendations"]:
            best, cheap = rec["recommended"], rec["cheapest"]
            if best is None:
                out.append(f"| {report['label']} | {rec['rows']:,} | none: {rec['note']} | | | | |")
                continue
            out.append(
                f"| {report['label']} | {rec['rows']:,} | {best['memory_mb']:,} MB | {ms(best['median_ms'])} | "
                f"{ms(best['p99_ms'])} | {usd(best['per_million_predictions'])} | {cheap['memory_mb']:,} MB "
                f"({usd(cheap['per_million_predictions'])}) |"
            )
    return "\n".join(out) + "\n"


def draw(reports: dict[str, dict], out: Path) -> list[Path]:
    cpu = next(iter(reports.values()))["host"]["cpu"]
    title = f"{MODEL}: the framework's backends and the original handler, CPU quota per size ({cpu})"
    return plot(list(reports.values()), out / f"tune-{MODEL}", title=title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", default="128,256,512,1024,1769,3008")
    parser.add_argument("--rows", default="1,100,10000")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--cold-start-rate", type=float, default=0.01)
    parser.add_argument("--target-p99", type=float)
    parser.add_argument("--data", type=Path, default=DATA / "wine_concat.csv")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    parser.add_argument("--out", type=Path, default=REPO / "docs/guides/img")
    parser.add_argument("--note", default="")
    parser.add_argument("--replot", action="store_true", help="redraw the plot and summary from the JSON in --out")
    args = parser.parse_args()
    if args.replot:
        reports = {
            key: json.loads((args.out / f"tune-{MODEL}-{key}.json").read_text()) for key in (*BACKENDS, "original")
        }
        draw(reports, args.out)
        print(markdown(reports, reports["original"]["settings"]["rows"]))
        return
    started = time.monotonic()
    settings = Settings(
        memory_mb=tuple(int(m) for m in args.memory.split(",")),
        arches=(host()["arch"],),
        rows=tuple(int(n) for n in args.rows.split(",")),
        requests=args.requests,
        cold_starts=args.cold_starts,
        cold_start_rate=args.cold_start_rate,
        target_p99_ms=args.target_p99,
    )
    bodies = {n: json.dumps(rows_from(args.data, n)) for n in settings.rows}
    targets = {}
    for backend in BACKENDS:
        context = prepare_context(MODEL, backend, host()["arch"], root=args.cache / "tune", rerender=False, say=print)
        targets[backend] = (backend, context_target(context, label=f"framework, {backend} backend"))
    targets["original"] = ("xgboost 1.6.2 + pandas", original_target(args.cache))
    results: dict[str, list] = {key: [] for key in targets}
    for memory in settings.memory_mb:
        for key, (_, target) in targets.items():
            print(f"{memory} MB: {target.label} ...", file=sys.stderr)
            results[key].append(
                measure_process(
                    target, Limits(memory), bodies, cold_starts=settings.cold_starts, requests=settings.requests
                )
            )
    reports = {}
    for key, (backend, target) in targets.items():
        reports[key] = build_report(
            model=MODEL,
            backend=backend,
            label=target.label,
            target={"kind": "process", "image": None, "context": None},
            settings=settings,
            results=results[key],
            limiter=f"cgroup {detect()}",
        )
        write_json(reports[key], args.out / f"tune-{MODEL}-{key}.json")
    images = draw(reports, args.out)
    elapsed = time.monotonic() - started
    text = (
        f"Machine: {machine()}. {args.note}\n\n{markdown(reports, list(settings.rows))}\n"
        f"`python bench/tune.py` ({settings.requests} requests per size and batch size, {settings.cold_starts} "
        f"cold starts per size) took {elapsed:.0f} s; plot: {', '.join(p.name for p in images)}.\n"
    )
    (args.out / f"tune-{MODEL}.md").write_text(text)
    print(text)
    print(f"(the original handler ran in {ORIGINAL_VENV})", file=sys.stderr)


if __name__ == "__main__":
    main()
