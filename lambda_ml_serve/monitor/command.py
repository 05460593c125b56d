"""``lambda-ml-serve monitor``: read captured traffic, compare it with the model card's profile, report."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.monitor.capture import Captured, read_captured, sources_of
from lambda_ml_serve.monitor.drift import DriftReport, compare
from lambda_ml_serve.monitor.profile import PROFILE_KEY, columns_of

#: Exit status when something drifted above the threshold (1 is an error, 2 a usage error).
DRIFT_EXIT = 3
#: Reads of more bytes than this show a progress bar (on a terminal).
PROGRESS_BYTES = 8 * 2**20


class MonitorError(LambdaMLServeError):
    """The model has no profile, or nothing was captured."""


def reference_profile(card: dict[str, Any], model: str) -> dict[str, Any]:
    profile = card.get(PROFILE_KEY)
    if not isinstance(profile, dict) or not isinstance(profile.get("features"), dict):
        raise MonitorError(
            f"model {model!r}: its model card has no training profile; `train` and `new --from-model --data` "
            "write one (the card's 'profile')"
        )
    return profile


def read_with_progress(inputs: Sequence[str], model: str, s3_client: Any = None) -> Captured:
    """Read every source, with a rich progress bar over the bytes when the read is long and stderr a terminal."""
    sources = sources_of(inputs, s3_client)
    total = sum(s.size for s in sources)
    if total < PROGRESS_BYTES or not sys.stderr.isatty():
        return read_captured(sources, model)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("reading captures"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("read", total=total)
        return read_captured(sources, model, progress=lambda n: progress.advance(task, n))


def run(
    model: str,
    inputs: Sequence[str],
    *,
    card: dict[str, Any],
    threshold: float,
    report_html: Path | None = None,
    report_json: Path | None = None,
    s3_client: Any = None,
) -> DriftReport:
    """Compare ``model``'s captured traffic in ``inputs`` with the profile in ``card``; write the reports."""
    profile = reference_profile(card, model)
    if report_html is not None:
        try:
            import matplotlib  # noqa: F401  (checked before the read, which may be long)
        except ImportError:
            raise MonitorError("--report draws with matplotlib: pip install 'lambda-ml-serve[monitor]'") from None
    captured = read_with_progress(inputs, model, s3_client)
    if not captured.rows:
        others = f" ({captured.other_models} records of other models)" if captured.other_models else ""
        raise MonitorError(
            f"no capture records of model {model!r} in {len(captured.sources)} file(s){others}; "
            "capture with `serve --capture DIR` or ModelFunction(capture=...)"
        )
    names = list(profile["features"])
    version = max(captured.versions, key=captured.versions.get) if captured.versions else None
    drift = compare(
        profile,
        columns_of(captured.rows, names),
        captured.predictions,
        model=model,
        version=version,
        threshold=threshold,
    )
    drift.sources = captured.sources
    drift.records = captured.records
    if report_json is not None:
        _write(report_json, json.dumps(drift.to_json(), indent=2) + "\n")
    if report_html is not None:
        from lambda_ml_serve.monitor.report import render_html

        _write(report_html, render_html(drift))
    return drift


def _write(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def summary(drift: DriftReport) -> str:
    """What the command prints: one line per feature, then the verdict."""
    width = max(len(f.name) for f in [*drift.features, *([drift.predictions] if drift.predictions else [])])
    lines = [f"{drift.records} capture records, {drift.rows} rows of model {drift.model}"]
    for item in [*drift.features, *([drift.predictions] if drift.predictions else [])]:
        flags = "; ".join(item.flags)
        lines.append(f"  {item.name:<{width}}  PSI {item.psi:6.3f}  missing {item.missing_rate:6.1%}  {flags}".rstrip())
    if drift.drifted:
        lines.append(f"drift above threshold {drift.threshold:g}: {', '.join(drift.drifted)}")
    else:
        lines.append(f"no drift above threshold {drift.threshold:g}")
    return "\n".join(lines)
