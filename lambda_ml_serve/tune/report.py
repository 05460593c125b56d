"""The tune report: measured sizes priced and ranked, as JSON (``tune.schema.json``) and as a terminal table.

The recommendation, for each batch size: among the sizes that fit, were measured natively (not under
emulation) and meet the p99 target, the **cheapest** per million requests (cold starts included at
the given rate), and the **fastest** (lowest median) that costs no more than the cheapest + 10 %;
the latter is what ``recommended`` names. The headline recommendation is the one for the first
``--rows`` value: put the batch size your callers send most first.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lambda_ml_serve.tune.cgroups import vcpus
from lambda_ml_serve.tune.cost import US_EAST_1, PriceTable, cost_of
from lambda_ml_serve.tune.measure import SizeResult

SCHEMA_PATH = Path(__file__).with_name("tune.schema.json")
SCHEMA_VERSION = 1
KIND = "lambda-ml-serve-tune"
#: How much more than the cheapest size the recommended (fastest) size may cost.
WITHIN = 0.10


@dataclass(frozen=True)
class Settings:
    """What was asked for: sizes, architectures, batch sizes, counts and the target."""

    memory_mb: tuple[int, ...]
    arches: tuple[str, ...]
    rows: tuple[int, ...]
    requests: int
    cold_starts: int
    cold_start_rate: float
    target_p99_ms: float | None = None


def host() -> dict[str, Any]:
    """The machine the figures come from: its CPU model matters more than anything else here."""
    cpu = "unknown CPU"
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    return {
        "cpu": cpu,
        "cpus": os.cpu_count() or 1,
        "arch": {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
            platform.machine().lower(), platform.machine()
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_report(
    *,
    model: str,
    backend: str,
    label: str,
    target: dict[str, Any],
    settings: Settings,
    results: Sequence[SizeResult],
    limiter: str,
    prices: PriceTable = US_EAST_1,
    host_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report (see ``tune.schema.json``) of measured ``results``."""
    sizes = [_size(result, settings, prices) for result in results]
    recommendations = [_recommend(sizes, rows, settings.target_p99_ms) for rows in settings.rows]
    headline = recommendations[0]["recommended"] if recommendations else None
    return {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "backend": backend,
        "label": label,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": target,
        "host": {**(host_info or host()), "limiter": limiter},
        "settings": {
            "memory_mb": list(settings.memory_mb),
            "arch": list(settings.arches),
            "rows": list(settings.rows),
            "requests": settings.requests,
            "cold_starts": settings.cold_starts,
            "cold_start_rate": settings.cold_start_rate,
            "target_p99_ms": settings.target_p99_ms,
        },
        "prices": prices.to_json(),
        "sizes": sizes,
        "recommendations": recommendations,
        "recommended": (
            {"memory_mb": headline["memory_mb"], "arch": headline["arch"], "rows": recommendations[0]["rows"]}
            if headline
            else None
        ),
    }


def _size(result: SizeResult, settings: Settings, prices: PriceTable) -> dict[str, Any]:
    cold = result.cold_ms
    batches = []
    for rows in settings.rows:
        warm = result.warm_ms.get(rows)
        if not warm:
            continue
        cost = cost_of(result.memory_mb, result.arch, warm, cold or warm, rows, settings.cold_start_rate, prices)
        batches.append(
            {
                "rows": rows,
                "requests": len(warm),
                "median_ms": statistics.median(warm),
                "p99_ms": percentile(warm, 0.99),
                "cost": {
                    "per_million_requests": cost.per_million_requests,
                    "per_million_requests_with_cold_starts": cost.per_million_requests_with_cold_starts,
                    "per_million_predictions": cost.per_million_predictions,
                    "per_million_predictions_with_cold_starts": cost.per_million_predictions_with_cold_starts,
                },
            }
        )
    return {
        "memory_mb": result.memory_mb,
        "arch": result.arch,
        "vcpus": round(vcpus(result.memory_mb), 4),
        "status": result.status,
        "detail": result.detail,
        "emulated": result.emulated,
        "applied": result.applied,
        "peak_memory_mb": None if result.peak_bytes is None else round(result.peak_bytes / 2**20, 1),
        "rss_mb": None if result.rss_bytes is None else round(result.rss_bytes / 2**20, 1),
        "cold_start_ms": (
            {"median": statistics.median(cold), "min": min(cold), "max": max(cold), "runs": cold} if cold else None
        ),
        "batches": batches,
    }


def _recommend(sizes: list[dict[str, Any]], rows: int, target_p99_ms: float | None) -> dict[str, Any]:
    candidates = []
    for size in sizes:
        batch = next((b for b in size["batches"] if b["rows"] == rows), None)
        if size["status"] != "ok" or size["emulated"] or batch is None:
            continue
        candidates.append(
            {
                "memory_mb": size["memory_mb"],
                "arch": size["arch"],
                "median_ms": batch["median_ms"],
                "p99_ms": batch["p99_ms"],
                "per_million_requests": batch["cost"]["per_million_requests_with_cold_starts"],
                "per_million_predictions": batch["cost"]["per_million_predictions_with_cold_starts"],
            }
        )
    meeting = [c for c in candidates if target_p99_ms is None or c["p99_ms"] <= target_p99_ms]
    if not meeting:
        if candidates:
            why = f"no size meets the p99 target of {target_p99_ms:g} ms"
        elif any(s["emulated"] and s["status"] == "ok" for s in sizes):
            why = "no size was measured natively (emulated figures are never recommended)"
        else:
            why = "no size was measured"
        return {"rows": rows, "cheapest": None, "fastest_within_10_percent": None, "recommended": None, "note": why}
    cheapest = min(meeting, key=lambda c: (c["per_million_requests"], c["median_ms"]))
    affordable = [c for c in meeting if c["per_million_requests"] <= cheapest["per_million_requests"] * (1 + WITHIN)]
    fastest = min(affordable, key=lambda c: (c["median_ms"], c["per_million_requests"]))
    note = "cheapest size" + (f" with p99 <= {target_p99_ms:g} ms" if target_p99_ms is not None else "")
    return {
        "rows": rows,
        "cheapest": cheapest,
        "fastest_within_10_percent": fastest,
        "recommended": fastest,
        "note": note,
    }


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def schema() -> dict[str, Any]:
    """The JSON Schema of the report."""
    return json.loads(SCHEMA_PATH.read_text())


def _ms(value: float | None) -> str:
    """Milliseconds in at most seven characters: 380 µs, 4.5 ms, 403 ms, 1.88 s."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} µs"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def table(report: dict[str, Any]) -> Any:
    """A rich table: one line per size and batch size, with what each costs."""
    from rich import box
    from rich.table import Table

    rate = report["settings"]["cold_start_rate"]
    out = Table(
        box=box.SIMPLE_HEAD,
        title=f"{report['label']}: latency and cost by memory size",
        caption=(
            f"best: the recommended size (the fastest within 10 % of the cheapest); emulated: under qemu, "
            f"never recommended. cold: start to first answer, median. $: {report['prices']['region']} list "
            f"prices as of {report['prices']['as_of']}, cold starts in {rate:.2%} of requests. "
            f"CPU: {report['host']['cpu']} under a quota of each size's vCPU share (memory / 1,769 MB): "
            "Lambda's share, not Lambda's CPUs."
        ),
    )
    # Numbers never wrap; the note column takes what width is left (80 columns fit the rest).
    for name in ("memory", "cold", "rows", "median", "p99", "$/1M pred.", "peak"):
        out.add_column(name, justify="right", no_wrap=True)
    out.add_column("", justify="left", overflow="fold")
    recommended = report["recommended"] or {}
    for size in report["sizes"]:
        memory = f"{size['memory_mb']:,} MB" + (" arm64" if size["arch"] == "arm64" else "")
        cold = size["cold_start_ms"]
        known = [v for v in (size["peak_memory_mb"], size["rss_mb"]) if v is not None]
        peak = f"{max(known):.0f} MB" if known else "-"
        if size["status"] != "ok":
            label = {"oom": "does not fit", "error": "failed", "not-measured": "not measured"}.get(size["status"])
            out.add_row(memory, "-", "-", "-", "-", "-", peak, f"[red]{label}[/]: {size['detail']}")
            out.add_section()
            continue
        for i, batch in enumerate(size["batches"]):
            marks = []
            if size["emulated"]:
                marks.append("[yellow]emulated[/]")
            if (
                recommended.get("memory_mb") == size["memory_mb"]
                and recommended.get("arch") == size["arch"]
                and recommended.get("rows") == batch["rows"]
            ):
                marks.append("[green]best[/]")
            out.add_row(
                memory if i == 0 else "",
                _ms(cold["median"]) if (i == 0 and cold) else "",
                f"{batch['rows']:,}",
                _ms(batch["median_ms"]),
                _ms(batch["p99_ms"]),
                _usd(batch["cost"]["per_million_predictions_with_cold_starts"]),
                peak if i == 0 else "",
                ", ".join(marks),
            )
        out.add_section()
    return out


def _per_request(rows: int) -> str:
    return f"{rows:,} row{'' if rows == 1 else 's'} per request"


def summary(report: dict[str, Any]) -> list[str]:
    """The recommendation in sentences, one per batch size."""
    lines = []
    for rec in report["recommendations"]:
        cheap, best = rec["cheapest"], rec["recommended"]
        if best is None:
            lines.append(f"{_per_request(rec['rows'])}: {rec['note']}.")
            continue
        lines.append(
            f"{_per_request(rec['rows'])}: {best['memory_mb']:,} MB ({best['arch']}), median "
            f"{_ms(best['median_ms'])}, p99 {_ms(best['p99_ms'])}, {_usd(best['per_million_predictions'])} per "
            f"million predictions ({_usd(best['per_million_requests'])} per million requests); the {rec['note']} "
            f"is {cheap['memory_mb']:,} MB at {_usd(cheap['per_million_predictions'])}."
        )
    return lines
