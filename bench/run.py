"""Side-by-side benchmark: the original handler, the seed-style variant and the framework with each backend.

    python bench/run.py [--quick] [--cpu 1] [--models original,project] [--out FILE] [--note TEXT]

For each model file (the original service's and the project's), every variant serves the same model
(the framework through its backend's prepared form of it), pinned to one CPU with ``taskset`` as on a
1,769 MB Lambda:

- cold start: a fresh process to the first answer (a 1-row request), split into interpreter start,
  imports, model load and first answer; the variants take turns, ``--cold`` runs each;
- warm latency of the handler call (event to response) at 1, 10, 100, 1,000 and 10,000 rows: one
  long-lived process per variant, all started at once and taking turns in ``--rounds`` rounds per
  batch size, so a noisy neighbour hits every variant alike; medians and p99;
- peak RSS (VmHWM) after the warm run, the serving packages' size, the heavy modules imported.

Ratios are the original handler's figure over the variant's (higher is better). The markdown report
goes to stdout (and ``--out``), ready for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from variants import FRAMEWORK, REPO, Variant, baselines, environment, framework, models

SIZES = (1, 10, 100, 1_000, 10_000)
#: Timed calls per batch size in a full run (split over the rounds).
REPEATS = {1: 400, 10: 300, 100: 150, 1_000: 40, 10_000: 10}
QUICK_REPEATS = {1: 40, 10: 30, 100: 15, 1_000: 5, 10_000: 2}
STAGES = ("interpreter", "imports", "load", "first answer")


def rows_from(data: Path, n: int) -> list[dict]:
    """``n`` rows of the wine data in the model's feature order (cycling through the file)."""
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine() -> str:
    """The CPU as lscpu names it, the cores, the kernel and Python."""
    cpu = "unknown CPU"
    lscpu = shutil.which("lscpu")
    if lscpu:
        out = subprocess.run([lscpu], capture_output=True, text=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def pinned(command: list[str], cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *command]


def cold_start(variant: Variant, body: str, cpu: int) -> dict[str, float]:
    """One fresh process to its first answer, in stages (seconds)."""
    command = pinned([*variant.command, variant.handler, json.dumps(variant.preload), "cold"], cpu)
    spawned = time.monotonic()
    proc = subprocess.run(command, input=body, capture_output=True, text=True, env=environment(variant))
    if proc.returncode != 0:
        raise SystemExit(f"{variant.label}: cold start failed:\n{proc.stderr[-2000:]}")
    t = json.loads(proc.stdout)
    return {
        "interpreter": t["started"] - spawned,
        "imports": t["imported"] - t["started"],
        "load": t["loaded"] - t["imported"],
        "first answer": t["answered"] - t["loaded"],
        "total": t["answered"] - spawned,
    }


class Worker:
    """A long-lived variant process answering timing commands over its stdin and stdout."""

    def __init__(self, variant: Variant, bodies: dict[str, str], cpu: int) -> None:
        self.variant = variant
        command = pinned([*variant.command, variant.handler, json.dumps(variant.preload), "serve"], cpu)
        # The handler's log lines would drown the progress; its stderr is shown if it fails.
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (lives as long as the worker; closed in finish)
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=environment(variant)
        )
        self.ask(bodies, reply=False)

    def ask(self, payload: object, *, reply: bool = True) -> object:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        if not reply:
            return None
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise SystemExit(
                f"{self.variant.label}: the worker exited (exit {self.proc.wait()}):\n{self.log.read()[-2000:]}"
            )
        return json.loads(line)

    def finish(self) -> dict:
        result = self.ask({"done": True})
        self.proc.wait(timeout=60)
        self.log.close()
        return result


def predictions(body: str) -> list[float]:
    answer = json.loads(body)
    return answer if isinstance(answer, list) else answer["predictions"]


def measure(variants: list[Variant], bodies: dict[str, str], args: argparse.Namespace) -> dict[str, dict]:
    """Every figure for every variant of one model, the variants taking turns throughout."""
    results: dict[str, dict] = {v.label: {"cold": [], "warm": {}} for v in variants}
    for i in range(args.cold):
        for variant in variants[i % len(variants) :] + variants[: i % len(variants)]:
            results[variant.label]["cold"].append(cold_start(variant, bodies["1"], args.cpu))
    workers = [Worker(v, bodies, args.cpu) for v in variants]
    try:
        for size in args.sizes:
            per_round = max(1, args.repeats[size] // args.rounds)
            for r in range(args.rounds):
                for worker in workers[r % len(workers) :] + workers[: r % len(workers)]:
                    times = worker.ask({"run": str(size), "repeats": per_round})
                    results[worker.variant.label]["warm"].setdefault(size, []).extend(times)
        probe = str(min(100, max(args.sizes)))
        for worker in workers:
            results[worker.variant.label]["predictions"] = predictions(worker.ask({"answer": probe}))
    finally:
        finished = [w.finish() if w.proc.poll() is None else {} for w in workers]
    for worker, final in zip(workers, finished, strict=True):
        results[worker.variant.label].update(final, installed_mb=worker.variant.installed_mb)
    return results


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.1f} ms"


def ratio(base: float, value: float) -> str:
    return f"{base / value:.1f}x" if value > 0 else "n/a"


def render(title: str, variants: list[Variant], results: dict[str, dict], args: argparse.Namespace) -> str:
    """The markdown tables for one model."""
    base = next(v for v in variants if v.baseline).label
    labels = [v.label for v in variants]

    def cold(label: str, stage: str) -> float:
        return statistics.median(run[stage] for run in results[label]["cold"])

    def warm(label: str, size: int, q: float | None = None) -> float:
        times = results[label]["warm"][size]
        return statistics.median(times) if q is None else percentile(times, q)

    out = [f"#### {title}", ""]
    out += [f"Cold start, median of {args.cold} (pinned to CPU {args.cpu}); ratio on the total:", ""]
    out += ["| variant | " + " | ".join(STAGES) + " | total | max | ratio |", "| --- |" + " ---: |" * (len(STAGES) + 3)]
    for label in labels:
        total = cold(label, "total")
        worst = max(run["total"] for run in results[label]["cold"])
        stages = " | ".join(fmt_ms(cold(label, s)) for s in STAGES)
        out.append(f"| {label} | {stages} | {fmt_ms(total)} | {fmt_ms(worst)} | {ratio(cold(base, 'total'), total)} |")
    sizes = " | ".join(_rows(s) for s in args.sizes)
    for heading, q in (("median", None), ("p99", 0.99)):
        out += ["", f"Warm handler call, {heading} (ratio):", "", f"| variant | {sizes} |"]
        out.append("| --- |" + " ---: |" * len(args.sizes))
        for label in labels:
            cells = (f"{fmt_ms(warm(label, s, q))} ({ratio(warm(base, s, q), warm(label, s, q))})" for s in args.sizes)
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{_rows(s)}: {len(results[base]['warm'][s])}" for s in args.sizes)
    reference = results[base]["predictions"]
    out += ["", f"Timed calls per variant ({counts}), in {args.rounds} interleaved rounds.", ""]
    out += [
        "| variant | peak RSS | ratio | serving packages | heavy modules imported | answers vs the original's |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for label in labels:
        r = results[label]
        rss = r["rss_kb"] / 1024
        diff = max(abs(a - b) for a, b in zip(r["predictions"], reference, strict=True))
        out.append(
            f"| {label} | {rss:.0f} MB | {ratio(results[base]['rss_kb'], r['rss_kb'])} | "
            f"{r['installed_mb']:.0f} MB | {', '.join(r['modules']) or 'none'} | {diff:.2g} |"
        )
    goals = [(v.label, key, goal) for v in variants for key, goal in v.goals.items()]
    if goals:
        out += ["", "| goal (ratio against the original handler) | measured | |", "| --- | ---: | --- |"]
        for label, key, goal in goals:
            if key == "cold":
                name, got = "cold start", cold(base, "total") / cold(label, "total")
            elif int(key) in args.sizes:
                name, got = f"{_rows(int(key))} (median)", warm(base, int(key)) / warm(label, int(key))
            else:
                continue
            out.append(f"| {label}: {name} >= {goal:g}x | {got:.1f}x | {'met' if got >= goal else '**missed**'} |")
    return "\n".join(out) + "\n"


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls and 3 cold starts")
    parser.add_argument("--cold", type=int, help="cold starts per variant (default 9, quick 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    parser.add_argument("--sizes", help="comma-separated batch sizes (default 1,10,100,1000,10000)")
    parser.add_argument("--models", default="original,project", help="comma-separated: original, project")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU every measured process is pinned to")
    parser.add_argument("--note", default="", help="a sentence about the conditions, put in the report")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    args = parser.parse_args(argv)
    args.cold = args.cold or (3 if args.quick else 9)
    args.repeats = QUICK_REPEATS if args.quick else REPEATS
    args.sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(SIZES)
    if 1 not in args.sizes:
        parser.error("--sizes must include 1 (the cold start's request)")
    if shutil.which("taskset") is None:
        parser.error("taskset is needed to pin the processes (Debian: apt-get install util-linux)")
    started = time.monotonic()

    bodies = {str(n): json.dumps(rows_from(args.data, n)) for n in args.sizes}
    chosen = [m for m in models(args.cache) if m.key in args.models.split(",")]
    sections = []
    for model in chosen:
        variants = [*baselines(model), *(framework(f, model, args.cache) for f in FRAMEWORK)]
        print(f"measuring {len(variants)} variants on {model.key} ...", file=sys.stderr)
        sections.append(render(model.title, variants, measure(variants, bodies, args), args))
    publish("bench/run.py", sections, args, started)


def publish(script: str, sections: list[str], args: argparse.Namespace, started: float, *notes: str) -> None:
    """Print the markdown report (machine, pinning, ``notes``, ``args.note``, the sections, the run's
    duration) and write it to ``args.out`` when given."""
    header = [f"Machine: {machine()}. Every measured process pinned to CPU {args.cpu} with taskset.", *notes]
    if args.note:
        header.append(args.note)
    elapsed = time.monotonic() - started
    command = f"python {script}" + (" --quick" if args.quick else "")
    report = "\n".join([" ".join(header), "", *sections, f"`{command}` took {elapsed:.0f} s.", ""])
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
