"""The drift report as one self-contained HTML page: inline CSS and SVG plots, nothing fetched.

matplotlib draws the plots (Agg, SVG with glyphs as paths, so no font is needed to view them); the
page is readable at a glance: the verdict first, the PSI of every feature, then one small plot per
feature of the reference's and the captured shares per bin or category.
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

from lambda_ml_serve.monitor.drift import DriftReport, FeatureDrift

REFERENCE_COLOUR = "#8c9bab"
CAPTURED_COLOUR = "#1f6fb4"
DRIFT_COLOUR = "#c0392b"
OK_COLOUR = "#2e8540"

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5a6372;font-size:13px}
.verdict{display:inline-block;padding:6px 12px;border-radius:6px;color:#fff;font-weight:600;margin:12px 0}
.ok{background:#2e8540}.drift{background:#c0392b}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 10px;border-bottom:1px solid #e3e6ea;text-align:right}
th:first-child,td:first-child,td.flags{text-align:left}tr.flagged td{background:#fdecea}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:8px}.card h3{font-size:14px;margin:0 0 4px}
.card.flagged{border-color:#c0392b}.card p{font-size:12px;margin:2px 0;color:#5a6372}
svg{max-width:100%;height:auto}
"""


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # drop the XML declaration and DOCTYPE: inline SVG needs neither
    # The RDF metadata names the creator and the time of drawing: the page states what it shows.
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)


def _setup() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Stable ids and no timestamp: the same report gives the same bytes.
    matplotlib.rcParams.update({"svg.hashsalt": "lambda-ml-serve", "svg.fonttype": "path", "font.size": 9})
    matplotlib.rcParams["svg.id"] = None
    return plt


def psi_figure(report: DriftReport) -> str:
    plt = _setup()
    items = [*report.features, *([report.predictions] if report.predictions else [])]
    figure, axes = plt.subplots(figsize=(7.5, 0.28 * len(items) + 0.9))
    names = [f.name for f in items]
    values = [f.psi for f in items]
    colours = [DRIFT_COLOUR if f.drifted else CAPTURED_COLOUR for f in items]
    axes.barh(range(len(items)), values, color=colours)
    axes.set_yticks(range(len(items)), names)
    axes.invert_yaxis()
    axes.axvline(report.threshold, color=DRIFT_COLOUR, linestyle="--", linewidth=1)
    axes.text(report.threshold, -0.7, f" threshold {report.threshold:g}", color=DRIFT_COLOUR, va="bottom")
    axes.set_xlabel("PSI (population stability index)")
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def feature_figure(drift: FeatureDrift) -> str:
    plt = _setup()
    figure, axes = plt.subplots(figsize=(4.2, 2.3))
    positions = list(range(len(drift.bins)))
    width = 0.4
    axes.bar(
        [p - width / 2 for p in positions], drift.reference_shares, width, color=REFERENCE_COLOUR, label="training"
    )
    axes.bar([p + width / 2 for p in positions], drift.current_shares, width, color=CAPTURED_COLOUR, label="captured")
    labels = [label if len(label) <= 18 else label[:17] + "…" for label in drift.bins]
    axes.set_xticks(positions, labels, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("share of rows")
    axes.legend(frameon=False, fontsize=7)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def _row(drift: FeatureDrift) -> str:
    flags = "; ".join(drift.flags) or "—"
    return (
        f'<tr class="{"flagged" if drift.drifted else ""}"><td>{html.escape(drift.name)}</td><td>{drift.kind}</td>'
        f"<td>{drift.psi:.3f}</td><td>{drift.test} {drift.statistic:.3g}</td><td>{drift.p_value:.2g}</td>"
        f"<td>{drift.reference_missing_rate:.1%} → {drift.missing_rate:.1%}</td>"
        f'<td>{drift.unknown_share:.1%}</td><td class="flags">{html.escape(flags)}</td></tr>'
    )


def _card(drift: FeatureDrift) -> str:
    flags = "; ".join(drift.flags)
    unknown = ", ".join(drift.unknown_categories[:5])
    return (
        f'<div class="card{" flagged" if drift.drifted else ""}"><h3>{html.escape(drift.name)}</h3>'
        f"<p>PSI {drift.psi:.3f} · {drift.test} {drift.statistic:.3g} (p {drift.p_value:.2g}) · missing "
        f"{drift.reference_missing_rate:.1%} → {drift.missing_rate:.1%}</p>"
        + (f"<p><b>{html.escape(flags)}</b></p>" if flags else "")
        + (f"<p>unknown: {html.escape(unknown)}</p>" if unknown else "")
        + feature_figure(drift)
        + "</div>"
    )


def render_html(report: DriftReport) -> str:
    """The whole page."""
    drifted = report.drifted
    verdict = (
        f'<div class="verdict drift">Drift: {html.escape(", ".join(drifted))}</div>'
        if drifted
        else '<div class="verdict ok">No drift above the threshold</div>'
    )
    items = [*report.features, *([report.predictions] if report.predictions else [])]
    ordered = sorted(items, key=lambda f: (not f.drifted, -f.psi))
    header = (
        "<tr><th>feature</th><th>kind</th><th>PSI</th><th>test</th><th>p</th><th>missing</th>"
        "<th>unknown</th><th>flags</th></tr>"
    )
    sources = ", ".join(report.sources[:5]) + (
        f" and {len(report.sources) - 5} more" if len(report.sources) > 5 else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Drift report: {html.escape(report.model)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Drift report: {html.escape(report.model)}</h1>"
        f'<div class="meta">{report.records} capture records, {report.rows} rows'
        f"{f' · version {html.escape(str(report.version))}' if report.version else ''} · "
        f"PSI threshold {report.threshold:g} · from {html.escape(sources)}</div>"
        f"{verdict}<h2>Population stability per feature</h2>{psi_figure(report)}"
        f"<h2>Figures</h2><table>{header}{''.join(_row(f) for f in ordered)}</table>"
        f'<h2>Distributions: training vs captured</h2><div class="grid">{"".join(_card(f) for f in ordered)}</div>'
        "</body></html>"
    )
