"""MkDocs hook: the pages' parts that are generated from the code at build, so none can drift from it.

- ``<!-- openapi: MODEL -->`` becomes the model's OpenAPI document (what ``GET /openapi.json`` answers)
  with a table of its routes;
- ``architecture/layers.svg`` is drawn from the import-linter layers in ``pyproject.toml``, the contract
  CI checks; ``architecture/request-path.svg`` is the request path through ``runtime/``.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from html import escape
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_MARKER = re.compile(r"<!-- openapi: (\w+) -->")
FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"


def on_files(files, config):
    """Add the generated diagrams to the site's files."""
    files.append(File.generated(config, "architecture/layers.svg", content=layers_svg()))
    files.append(File.generated(config, "architecture/request-path.svg", content=request_path_svg()))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace every OpenAPI marker by the document of that model."""
    return OPENAPI_MARKER.sub(lambda match: openapi_markdown(match[1]), markdown)


def openapi_markdown(model: str) -> str:
    """A table of the routes, then the whole document as JSON."""
    from lambda_ml_serve.runtime.app import App

    document = App.load(model, log_stream=io.StringIO(), docs=True).openapi
    rows = [
        f"| `{method.upper()}` | `{path}` | {op.get('summary', '')} | {', '.join(sorted(op['responses']))} |"
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    table = "\n".join(["| method | path | what | statuses |", "| --- | --- | --- | --- |", *rows])
    body = json.dumps(document, indent=2)
    return f"{table}\n\n```json\n{body}\n```\n"


def _box(x: float, y: float, w: float, h: float, label: str, fill: str, note: str = "") -> str:
    text_y = y + h / 2 + (0 if note else 5)
    parts = [
        f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='6' fill='{fill}' stroke='#44546a'/>",
        f"<text x='{x + w / 2}' y='{text_y}' text-anchor='middle' font-size='14' {FONT}>{escape(label)}</text>",
    ]
    if note:
        parts.append(
            f"<text x='{x + w / 2}' y='{text_y + 16}' text-anchor='middle' font-size='11' fill='#44546a' "
            f"{FONT}>{escape(note)}</text>"
        )
    return "".join(parts)


def _arrow(x1: float, y1: float, x2: float, y2: float) -> str:
    return f"<line x1='{x1}' y1='{y1}' x2='{x2}' y2='{y2}' stroke='#44546a' stroke-width='1.5' marker-end='url(#a)'/>"


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img'><title>{escape(title)}</title>"
        "<defs><marker id='a' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' markerHeight='7' "
        "orient='auto'><path d='M0,0 L10,5 L0,10 z' fill='#44546a'/></marker></defs>"
        f"<rect width='{width}' height='{height}' fill='white'/>{''.join(body)}</svg>\n"
    )


#: What each layer of the package is, for the diagram's left column.
WORLDS = {
    "cli": "the command line",
    "tune": "tooling",
    "local | training": "tooling",
    "bundling | batch | from_model": "build time",
    "scaffold | client": "tooling's parts",
    "backends": "backends (run time + build)",
    "runtime": "run time (the image)",
    "plugins": "the registry",
    "hookspecs | modelfiles | checks": "the contract",
    "spec": "the contract",
    "errors": "the contract",
}


def layers_svg() -> str:
    """The import-linter layers, top to bottom: a row may import the rows below it, never those above."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    width, row_h, gap, left = 900, 44, 18, 200
    body = []
    for i, layer in enumerate(contract["layers"]):
        y = 20 + i * (row_h + gap)
        body.append(
            f"<text x='10' y='{y + row_h / 2 + 5}' font-size='12' fill='#44546a' {FONT}>"
            f"{escape(WORLDS.get(layer, ''))}</text>"
        )
        names = [name.strip() for name in re.split(r"[|:]", layer)]
        box_w = (width - left - 20 - (len(names) - 1) * 12) / len(names)
        for j, name in enumerate(names):
            fill = "#dbe8f7" if name in ("runtime", "backends") else "#eef1f5"
            body.append(_box(left + j * (box_w + 12), y, box_w, row_h, name, fill))
        if i:
            body.append(_arrow(left + (width - left - 20) / 2, y - gap, left + (width - left - 20) / 2, y))
    height = 20 + len(contract["layers"]) * (row_h + gap) + 10
    return _svg(width, height, body, "lambda_ml_serve's layers, as the import-linter contract states them")


#: One request through runtime/: (module, what it does), top to bottom; the two paths side by side.
REQUEST_PATH = [
    ("handler.py / app.py", "the event, from any source"),
    ("http.py", "event source → request (base64, gzip)"),
]
FAST = ("fast.py", "decode + validate + pack in one pass")
FULL = [("formats.py, v2.py", "body → rows, any dialect"), ("validation.py", "pydantic; writes every error")]
AFTER = [
    ("backends/<lib>/runtime.py", "predict on a float32 or float64 batch"),
    ("app.py, encoding.py", "the answer in the request's dialect"),
    ("http.py, telemetry.py", "response for the event source + one log line"),
]


def request_path_svg() -> str:
    """The request path: the fast path answers what it fully accepts, the full path everything else."""
    width, box_w, box_h, gap = 760, 300, 50, 26
    mid = (width - box_w) / 2
    body, y = [], 20
    for i, (module, what) in enumerate(REQUEST_PATH):
        body.append(_box(mid, y, box_w, box_h, module, "#eef1f5", what))
        if i:
            body.append(_arrow(width / 2, y - gap, width / 2, y))
        y += box_h + gap
    left, right = 40, width - 40 - box_w
    top = y
    body.append(_box(left, top, box_w, box_h, FAST[0], "#dbe8f7", FAST[1]))
    body.append(_arrow(width / 2, top - gap, left + box_w / 2, top))
    for i, (module, what) in enumerate(FULL):
        yy = top + i * (box_h + gap)
        body.append(_box(right, yy, box_w, box_h, module, "#f7ecd9", what))
        body.append(
            _arrow(width / 2, top - gap, right + box_w / 2, yy)
            if i == 0
            else _arrow(right + box_w / 2, yy - gap, right + box_w / 2, yy)
        )
    y = top + len(FULL) * (box_h + gap)
    body.append(_arrow(left + box_w / 2, top + box_h, width / 2, y))
    body.append(_arrow(right + box_w / 2, y - gap, width / 2, y))
    for i, (module, what) in enumerate(AFTER):
        body.append(_box(mid, y, box_w, box_h, module, "#eef1f5", what))
        if i:
            body.append(_arrow(width / 2, y - gap, width / 2, y))
        y += box_h + gap
    body.append(
        f"<text x='{left}' y='{top - 8}' font-size='12' fill='#44546a' {FONT}>fast path</text>"
        f"<text x='{right}' y='{top - 8}' font-size='12' fill='#44546a' {FONT}>full path (anything else, errors)</text>"
    )
    return _svg(width, y, body, "One request through lambda_ml_serve/runtime")
