"""GET /docs: one self-contained page to read about the model and try it (nothing loaded from elsewhere)."""

from __future__ import annotations

import json
from html import escape
from string import Template
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambda_ml_serve.runtime.view import ModelView

BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$name $version</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em; color: #1d2430; }
h1 { margin-bottom: .2em; } .muted { color: #5b6573; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1.5em; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #dde2e8; vertical-align: top; }
th { background: #f3f5f8; } code { font-size: 90%; }
textarea { width: 100%; height: 16em; font: 13px/1.4 ui-monospace, monospace; box-sizing: border-box; }
button { font-size: 15px; padding: .45em 1.4em; margin: .6em .6em .6em 0; cursor: pointer; }
#status.ok { color: #11703c; } #status.bad { color: #a4161a; } #status { font-weight: 600; }
pre { background: #f3f5f8; padding: .8em; overflow: auto; }
</style>
</head>
<body>
<h1>$name <span class="muted">$version</span></h1>
<p>$description</p>
<p class="muted">Output: $output. Backend: $backend. At most $max_rows rows per request.
 API: <a href="openapi.json">openapi.json</a>.</p>
<h2>Metrics</h2>
$metrics
<h2>Input fields</h2>
<table id="fields"><tr><th>field</th><th>type</th><th>bounds</th><th>description</th></tr>
$fields
</table>
<h2>Try it</h2>
<label>Request format <select id="format">$options</select></label>
<textarea id="body" spellcheck="false" aria-label="request body"></textarea>
<button id="send" type="button">Predict</button><span id="status" role="status"></span>
<div id="answer"></div>
<script type="application/json" id="examples">$examples</script>
<script>
"use strict";
const examples = JSON.parse(document.getElementById("examples").textContent);
const body = document.getElementById("body"), format = document.getElementById("format");
const status = document.getElementById("status"), answer = document.getElementById("answer");
const show = () => { body.value = JSON.stringify(examples[format.value], null, 2); };
format.addEventListener("change", show);
show();
function cell(row, text, tag) {
  const td = document.createElement(tag || "td"); td.textContent = text; row.appendChild(td);
}
document.getElementById("send").addEventListener("click", async () => {
  status.textContent = "sending…"; status.className = ""; answer.replaceChildren();
  let response, payload;
  try {
    const headers = {"content-type": "application/json"};
    response = await fetch("predict", {method: "POST", headers: headers, body: body.value});
    payload = await response.json();
  } catch (err) {
    status.textContent = "no answer: " + err; status.className = "bad"; return;
  }
  const pre = document.createElement("pre");
  if (response.ok) {
    status.textContent = response.status + ": predictions"; status.className = "ok";
    const predictions = Array.isArray(payload) ? payload : payload.predictions;
    pre.id = "predictions"; pre.textContent = JSON.stringify(predictions, null, 2); answer.appendChild(pre);
    return;
  }
  const error = payload.error || {};
  status.textContent = response.status + " " + error.type + ": " + error.message; status.className = "bad";
  if (error.details && error.details.length) {
    const table = document.createElement("table"); table.id = "details";
    const head = document.createElement("tr"); ["row", "field", "message"].forEach(h => cell(head, h, "th"));
    table.appendChild(head);
    for (const d of error.details) {
      const tr = document.createElement("tr");
      cell(tr, d.row === null ? "" : d.row); cell(tr, d.field === null ? "" : d.field); cell(tr, d.message);
      table.appendChild(tr);
    }
    answer.appendChild(table);
  }
});
</script>
</body>
</html>
""")


def _bounds(prop: dict[str, Any]) -> str:
    parts = [f"{sign} {prop[key]}" for key, sign in BOUNDS if key in prop]
    for choice in (prop, *prop.get("anyOf", ())):
        if "x-categories" in choice:
            parts.append("one of " + ", ".join(map(str, choice["x-categories"])))
            if choice.get("x-unknown-category") != "error":
                parts.append(
                    "another value is read as "
                    + ("missing" if choice["x-unknown-category"] == "missing" else "unknown")
                )
        elif "enum" in choice:
            parts.append("one of " + ", ".join(map(str, choice["enum"])))
    if {"type": "null"} in prop.get("anyOf", ()):
        parts.append("null when missing")
    return ", ".join(parts)


def _type(prop: dict[str, Any]) -> str:
    if "type" in prop:
        return str(prop["type"])
    return " or ".join(str(p.get("type", "?")) for p in prop.get("anyOf", ())) or "any"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    return str(value)


def _metrics(metrics: dict[str, Any]) -> str:
    if not metrics:
        return '<p class="muted">The model card has no metrics.</p>'
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(_value(v))}</td></tr>" for k, v in metrics.items())
    return f'<table id="metrics"><tr><th>metric</th><th>value</th></tr>{rows}</table>'


def docs_page(model: ModelView) -> str:
    """The page's HTML: model card, input fields with their bounds, and a form prefilled with the example."""
    meta = model.metadata
    schema = meta["input_schema"]
    required = set(schema.get("required", ()))
    fields = "\n".join(
        f"<tr><td><code>{escape(name)}</code>{'' if name in required else ' (optional)'}</td>"
        f"<td>{escape(_type(prop))}</td><td>{escape(_bounds(prop))}</td>"
        f"<td>{escape(prop.get('description', ''))}</td></tr>"
        for name, prop in schema.get("properties", {}).items()
    )
    examples = model.examples
    options = "".join(f'<option value="{escape(key)}">{escape(key)}</option>' for key in examples)
    return PAGE.substitute(
        name=escape(meta["model"]),
        version=escape(meta["version"]),
        description=escape(meta["description"]),
        output=escape(meta["output"]),
        backend=escape(meta["backend"]),
        max_rows=meta["max_rows"],
        metrics=_metrics(meta["metrics"]),
        fields=fields,
        options=options.replace('value="instances"', 'value="instances" selected', 1),
        # "</" cannot end the script element early once escaped as "<\\/".
        examples=json.dumps(examples).replace("</", "<\\/"),
    )
