"""The tune plot, drawn as AWS Lambda Power Tuning draws it: latency and cost against memory size.

Two panels sharing the memory axis: warm median latency above, dollars per million predictions
(cold starts included) below, one line per batch size and per report (a backend, or the original
handler), log scales. Sizes that did not fit are marked on the axis; the recommendation is shaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

LINESTYLES = ("-", "--", ":", "-.")


def plot(reports: Sequence[dict[str, Any]], stem: Path, *, title: str | None = None) -> list[Path]:
    """Write ``stem``.png and ``stem``.svg; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    sizes = sorted({s["memory_mb"] for r in reports for s in r["sizes"]})
    x = {memory: i for i, memory in enumerate(sizes)}
    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(9, 8 if len(reports) > 1 else 7.5), layout="constrained"
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r_index, report in enumerate(reports):
        # One line per architecture measured (an emulated one drawn thin and named so).
        arches = list(dict.fromkeys(s["arch"] for s in report["sizes"] if s["status"] == "ok"))
        for a_index, arch in enumerate(arches):
            for b_index, rows in enumerate(report["settings"]["rows"]):
                color = colors[(b_index if len(reports) == 1 else r_index) % len(colors)]
                style = LINESTYLES[(b_index if len(reports) > 1 else a_index) % len(LINESTYLES)]
                measured = [s for s in report["sizes"] if s["status"] == "ok" and s["arch"] == arch]
                points = [(x[s["memory_mb"]], b) for s in measured for b in s["batches"] if b["rows"] == rows]
                if not points:
                    continue
                label = f"{rows:,} row" + ("" if rows == 1 else "s")
                if len(reports) > 1:
                    label = f"{report['label']}, {label}"
                if len(arches) > 1 or arch != report["host"]["arch"]:
                    label += f", {arch}"
                emulated = any(s["emulated"] for s in measured)
                if emulated:
                    label += " (emulated)"
                xs = [p for p, _ in points]
                for ax, ys in (
                    (top, [b["median_ms"] for _, b in points]),
                    (bottom, [b["cost"]["per_million_predictions_with_cold_starts"] for _, b in points]),
                ):
                    ax.plot(xs, ys, style, marker="o", color=color, label=label, lw=0.8 if emulated else 1.5)
        for size in report["sizes"]:
            if size["status"] == "oom":
                top.annotate(
                    "does not fit" if len(reports) == 1 else f"{report['label']}: does not fit",
                    (x[size["memory_mb"]], 0.02 + 0.06 * r_index),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    fontsize=8,
                    color="tab:red",
                )
        if len(reports) == 1 and report["recommended"]:
            spot = x[report["recommended"]["memory_mb"]]
            for ax in (top, bottom):
                ax.axvspan(spot - 0.3, spot + 0.3, color="tab:green", alpha=0.12, lw=0)
    top.set_yscale("log")
    bottom.set_yscale("log")
    top.set_ylabel("warm latency, median (ms)")
    bottom.set_ylabel("$ per million predictions\n(cold starts included)")
    bottom.set_xlabel("memory size (MB); CPU in proportion, 1,769 MB = 1 vCPU")
    bottom.set_xticks(range(len(sizes)), [f"{m:,}" for m in sizes])
    for ax in (top, bottom):
        ax.grid(True, which="both", alpha=0.3)
    # Below the panels, not over the lines: a dozen lines leave no empty corner.
    handles, labels = top.get_legend_handles_labels()
    if len(reports) == 1 and reports[0]["recommended"]:
        from matplotlib.patches import Patch

        rows = reports[0]["recommended"]["rows"]
        handles.append(Patch(color="tab:green", alpha=0.12))
        labels.append(f"recommended for {rows:,} row{'' if rows == 1 else 's'}")
    if handles:
        ncol = min(3, len(reports)) if len(reports) > 1 else len(labels)
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8)
    else:
        top.text(0.5, 0.5, "no size was measured", transform=top.transAxes, ha="center", color="tab:red")
    first = reports[0]
    fig.suptitle(title or f"{first['label']} on {first['host']['cpu']} (CPU quota per size)", fontsize=11)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        # No timestamps in the files: the same figures draw the same bytes.
        fig.savefig(path, dpi=110, metadata={"Date": None} if suffix == ".svg" else {"Software": None})
        paths.append(path)
    plt.close(fig)
    return paths
