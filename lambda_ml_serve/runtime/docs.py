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
.explained { display: grid; grid-template-columns: 11em 1fr; gap: 1em; margin: 1em 0; padding-top: .6em;
  border-top: 1px solid #dde2e8; }
.verdict b { display: block; font-size: 150%; } .verdict span { display: block; color: #5b6573; font-size: 90%; }
.bar { display: grid; grid-template-columns: 12em 1fr 6em; align-items: center; gap: .5em; font-size: 13px; }
.track { position: relative; height: 14px; background: #f3f5f8; }
.track i { position: absolute; top: 0; height: 14px; } .track .up { background: #c0392b; left: 50%; }
.track .down { background: #2e6fbf; right: 50%; } .track::after { content: ""; position: absolute; left: 50%;
  top: -2px; bottom: -2px; border-left: 1px solid #5b6573; }
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
<button id="send" type="button">Predict</button>$explain_button<span id="status" role="status"></span>
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
const number = v => typeof v === "number" ? Number(v.toPrecision(4)).toString() : JSON.stringify(v);
/* One row: its prediction beside a bar per contribution (right and red raise the margin, left and blue lower it). */
function explained(index, prediction, row, header) {
  const box = document.createElement("div"); box.className = "explained"; box.id = "explanation-" + index;
  const verdict = document.createElement("div"); verdict.className = "verdict";
  const several = Array.isArray(row.margin);
  verdict.innerHTML = "<span>row " + index + "</span><b></b><span></span>";
  verdict.children[1].textContent = number(prediction);
  verdict.children[2].textContent = "expected value " + (several ? row.expected_value.map(number).join(", ")
    : number(row.expected_value)) + "; margin " + (several ? row.margin.map(number).join(", ") : number(row.margin));
  box.appendChild(verdict);
  const charts = document.createElement("div");
  const parts = several ? row.contributions : [row.contributions];
  parts.forEach((contributions, k) => {
    if (several) { const title = document.createElement("div"); title.className = "muted";
      title.textContent = "class " + (header.outputs ? header.outputs[k] : k); charts.appendChild(title); }
    const entries = Object.entries(contributions).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
    const widest = Math.max(...entries.map(e => Math.abs(e[1])), 1e-12);
    for (const [field, value] of entries) {
      const bar = document.createElement("div"); bar.className = "bar"; bar.dataset.field = field;
      const name = document.createElement("span"); name.textContent = field;
      const track = document.createElement("span"); track.className = "track";
      const fill = document.createElement("i"); fill.className = value >= 0 ? "up" : "down";
      fill.style.width = (50 * Math.abs(value) / widest) + "%"; track.appendChild(fill);
      const text = document.createElement("span"); text.textContent = (value >= 0 ? "+" : "") + number(value);
      bar.append(name, track, text); charts.appendChild(bar);
    }
  });
  box.appendChild(charts);
  return box;
}
async function send(route) {
  status.textContent = "sending…"; status.className = ""; answer.replaceChildren();
  let response, payload;
  try {
    const headers = {"content-type": "application/json"};
    response = await fetch(route, {method: "POST", headers: headers, body: body.value});
    payload = await response.json();
  } catch (err) {
    status.textContent = "no answer: " + err; status.className = "bad"; return;
  }
  const pre = document.createElement("pre");
  if (response.ok) {
    const predictions = Array.isArray(payload) ? payload : payload.predictions;
    if (route === "explain") {
      status.textContent = response.status + ": predictions and explanations (" + payload.explanation.link +
        " link; contributions to the margin)"; status.className = "ok";
      const header = payload.explanation;
      payload.explanations.forEach((row, i) => answer.appendChild(explained(i, predictions[i], row, header)));
      return;
    }
    status.textContent = response.status + ": predictions"; status.className = "ok";
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
}
document.getElementById("send").addEventListener("click", () => send("predict"));
const explainButton = document.getElementById("explain");
if (explainButton) explainButton.addEventListener("click", () => send("explain"));
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
        explain_button='<button id="explain" type="button">Explain</button>' if meta["explain"]["available"] else "",
        options=options.replace('value="instances"', 'value="instances" selected', 1),
        # "</" cannot end the script element early once escaped as "<\\/".
        examples=json.dumps(examples).replace("</", "<\\/"),
    )
