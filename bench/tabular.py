"""Categorical multi-class models, end to end: every backend that serves them against the library's own predict.

    python bench/tabular.py [--quick] [--cpu 1] [--models xgboost,pipeline] [--backends sklearn,compiled]
                            [--out FILE] [--note TEXT]

Two models trained here on wine_concat.csv, to a 3-class string label (quality: low < 6 <= mid < 7 <=
high), with the colour as a category and missing values in three numbers (8% each):

- ``xgboost``: an XGBoost classifier with ``enable_categorical`` (100 rounds of depth 6: 300 trees),
  saved as its users save it (``XGBClassifier.save_model``);
- ``pipeline``: a scikit-learn Pipeline, a ColumnTransformer (OneHotEncoder on the colour, SimpleImputer
  + StandardScaler on the numbers) before a HistGradientBoostingClassifier (100 iterations: 300 trees),
  saved with joblib.

Each becomes a plugin the way a user makes one (``lambda-ml-serve new --from-model ... --no-input``,
``pip install --target``), and a build context is rendered for every backend that may serve it (as
``build`` renders it; a backend that refuses is listed with its one-line reason). The framework
variants run from their context's site-packages and artifact with ``-S -E``, as the image runs them.
The baseline is the library's own ``predict_proba`` on ``pd.DataFrame(rows)`` with the dtypes set
(bench/library_handler.py), as MLflow- or BentoML-style serving answers. Every variant answers the same
Function URL event (JSON rows with category strings and nulls) through the worker ``tune`` uses
(lambda_ml_serve/tune/worker.py), pinned to one CPU with ``taskset``:

- before timing, every variant's answer to the 10,000 rows is checked against the library's (labels
  equal, probabilities within 1e-5); one that differs is not timed, and the report says how far;
- cold start: a fresh process to the first answer (1 row), the variants taking turns;
- warm handler call at 1, 100 and 10,000 rows: one long-lived process per variant, taking turns in
  ``--rounds`` rounds per batch size; medians and p99.

Ratios are the library's figure over the variant's (higher is better). Models, plugins and contexts
are cached under .cache/bench/tabular/ by the data, the recipe, the libraries' versions and the
framework's sources. The markdown report goes to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lambda_ml_serve_wine_quality.data import PHYSICO_CHEMICAL
from run import Worker, fmt_ms, measure, percentile, publish, ratio
from variants import REPO, Variant, dir_mb, worker_command

#: The shared data folder's parent (beside the checkout unless ``LAMBDA_ML_SERVE_SHARED`` says otherwise).
SHARED = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", REPO.parent / "shared"))
#: Bump when the models or how they are trained change (part of the cache key).
RECIPE = "1"
SIZES = (1, 100, 10_000)
REPEATS = {1: 400, 100: 150, 10_000: 10}
QUICK_REPEATS = {1: 40, 100: 15, 10_000: 2}
NUMBERS = list(PHYSICO_CHEMICAL)
COLUMNS = [*NUMBERS, "color"]
#: Numbers with missing values, in the training data and in the requests alike.
GAPPY = ("citric acid", "pH", "alcohol")
COLOURS = ["red", "white"]
GRADES = ["high", "low", "mid"]  # sorted, as a label encoder orders them
SEED = 0
TOLERANCE = 1e-5
LIBRARY_HANDLER = "library_handler"


@dataclass(frozen=True)
class TabModel:
    """One model: its file, the library that answers for it, and the backends that may serve it."""

    key: str
    title: str
    file: str
    library: str
    backends: tuple[str, ...]


MODELS = (
    TabModel(
        "xgboost",
        "XGBoost `enable_categorical` classifier (3 classes, 100 rounds of depth 6: 300 trees)",
        "xgboost.ubj",
        "xgboost",
        ("xgboost", "compiled", "onnx"),
    ),
    TabModel(
        "pipeline",
        "scikit-learn Pipeline: OneHotEncoder + SimpleImputer + StandardScaler → "
        "HistGradientBoostingClassifier (3 classes, 100 iterations: 300 trees)",
        "pipeline.joblib",
        "sklearn",
        ("sklearn", "compiled", "onnx"),
    ),
)


def wine(data: Path):
    """The wine rows with the grade label and the missing values the models are trained and asked with."""
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(data)
    frame["grade"] = frame["quality"].map(lambda q: "low" if q < 6 else "mid" if q < 7 else "high")
    rng = np.random.default_rng(SEED)
    for column in GAPPY:
        frame.loc[rng.random(len(frame)) < 0.08, column] = np.nan
    return frame


def request_rows(frame, n: int, *, exact: bool = True) -> list[dict]:
    """``n`` rows as a client writes them (cycling through the file): numbers, the colour string, null.

    ``exact``: each number is the float32 nearest the file's value, written in full (7.400000095367432
    for 7.4), so that a float32 batch (the xgboost and compiled backends') holds the very values the
    library reads; otherwise the file's own decimals, which float32 cannot hold.
    """
    import numpy as np

    records = frame[COLUMNS].to_dict(orient="records")
    rows = []
    for i in range(n):
        row = {}
        for key, value in records[i % len(records)].items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, float) and exact:
                value = float(np.float32(value))
            row[key] = value
        rows.append(row)
    return rows


def source_digest() -> str:
    """The framework's sources and templates: a plugin or context made from other sources is stale.

    Both this checkout's and the installed framework's: a context vendors the framework from the
    source tree it is installed (editable) from, which may be another checkout.
    """
    roots = {REPO}
    installed = json.loads(importlib.metadata.distribution("lambda-ml-serve").read_text("direct_url.json") or "{}")
    if installed.get("dir_info", {}).get("editable"):
        roots.add(Path(installed["url"].removeprefix("file://")))
    digest = hashlib.sha256()
    for repo in sorted(roots):
        for root in (repo / "lambda_ml_serve", repo / "templates"):
            for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(data: Path) -> str:
    # The modules' own versions: xgboost installs as the xgboost or the xgboost-cpu distribution.
    versions = [f"{name}=={importlib.import_module(name).__version__}" for name in ("xgboost", "sklearn", "pandas")]
    text = "\n".join([RECIPE, hashlib.sha256(data.read_bytes()).hexdigest(), *versions, source_digest()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train(frame, folder: Path) -> None:
    """Both models, saved as their users save them, with the CSV of their training data."""
    import joblib
    import pandas as pd
    import xgboost
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    folder.mkdir(parents=True, exist_ok=True)
    print("training the models ...", file=sys.stderr)
    frame[[*COLUMNS, "grade"]].to_csv(folder / "data.csv", index=False)
    X = frame[COLUMNS].assign(color=pd.Categorical(frame["color"], categories=COLOURS))
    encoded = frame["grade"].map({g: i for i, g in enumerate(GRADES)})
    booster = xgboost.XGBClassifier(
        n_estimators=100, max_depth=6, enable_categorical=True, max_cat_to_onehot=1, random_state=SEED
    )
    booster.fit(X, encoded)
    booster.save_model(folder / "xgboost.ubj")
    pre = ColumnTransformer(
        [
            ("color", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), NUMBERS),
        ]
    )
    classifier = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=SEED)
    pipeline = Pipeline([("pre", pre), ("model", classifier)]).fit(frame[COLUMNS], frame["grade"])
    joblib.dump(pipeline, folder / "pipeline.joblib")
    for model in MODELS:
        dtypes = dict.fromkeys(NUMBERS, "float64")
        if model.library == "xgboost":
            dtypes["color"] = COLOURS
        # (the pipeline takes the colour strings as pandas reads them, as it was trained on them)
        setup = {
            "model": str(folder / model.file),
            "library": model.library,
            "columns": COLUMNS,
            "dtypes": dtypes,
            "classes": GRADES,
        }
        (folder / f"{model.key}.library.json").write_text(json.dumps(setup, indent=1))


def plugin_name(model: TabModel) -> str:
    return f"tab_bench_{model.key}"


def generate(folder: Path, python: str) -> dict[tuple[str, str], Path | str]:
    """Plugins made the way a user makes them, installed into a folder, and a context per backend.

    Returns each (model, backend)'s rendered context, or the backend's one-line refusal.
    """
    from lambda_ml_serve.bundling.context import render_build_context
    from lambda_ml_serve.errors import LambdaMLServeError
    from lambda_ml_serve.plugins import build_registry
    from lambda_ml_serve.tune.measure import compile_bytecode

    models, projects, site = folder / "models", folder / "projects", folder / "site"
    cli = shutil.which("lambda-ml-serve")
    command = [cli] if cli else [sys.executable, "-m", "lambda_ml_serve.cli"]
    for model in MODELS:
        print(f"lambda-ml-serve new --from-model {model.file} ...", file=sys.stderr)
        args = ["new", "--from-model", models / model.file, "--model-name", plugin_name(model)]
        args += ["--data", models / "data.csv", "--target", "grade", "--output-dir", projects, "--no-input"]
        done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"new --from-model {model.file} failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
    print("pip install --target ...", file=sys.stderr)
    quiet = ["--no-deps", "--no-input", "--disable-pip-version-check", "-q", "--no-build-isolation"]
    pip = [sys.executable, "-m", "pip", "install", *quiet, "--target", str(site), *map(str, projects.iterdir())]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip install failed:\n{done.stderr[-2000:]}")
    sys.path.insert(0, str(site))
    registry = build_registry()
    outcome: dict[tuple[str, str], Path | str] = {}
    for model in MODELS:
        for backend in model.backends:
            print(f"rendering {plugin_name(model)} for {backend} ...", file=sys.stderr)
            out = folder / "contexts" / f"{model.key}-{backend}"
            try:
                context = render_build_context(
                    plugin_name(model), out, python=python, backend=backend, force=True, registry=registry
                )
            except LambdaMLServeError as exc:
                outcome[model.key, backend] = str(exc).splitlines()[0]
                continue
            compile_bytecode(context.site_packages)
            outcome[model.key, backend] = out
    sys.path.remove(str(site))
    return outcome


def prepare(args: argparse.Namespace, frame) -> tuple[Path, dict[tuple[str, str], Path | str]]:
    """The cached models and contexts, made first if the cache has none for these sources."""
    folder = args.cache / "tabular" / cache_key(args.data)
    index = folder / "contexts.json"
    if not index.is_file():
        # Contexts made from other sources are stale (and ~600 MB each): only the current one is kept.
        for stale in folder.parent.glob("*") if folder.parent.is_dir() else ():
            shutil.rmtree(stale)
        train(frame, folder / "models")
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        outcome = generate(folder, python)
        index.write_text(json.dumps([[m, b, str(v), isinstance(v, Path)] for (m, b), v in outcome.items()]))
    entries = json.loads(index.read_text())
    return folder, {(m, b): Path(v) if is_path else v for m, b, v, is_path in entries}


def library_variant(model: TabModel, folder: Path) -> Variant:
    """The library's predict on a DataFrame, in this environment."""
    packages = ("numpy", "pandas", "xgboost") if model.library == "xgboost" else ("numpy", "pandas", "sklearn", "scipy")
    size = sum(dir_mb(package_dir(name)) for name in packages) + (folder / "models" / model.file).stat().st_size / 1e6
    return Variant(
        f"library: {'XGBClassifier' if model.library == 'xgboost' else 'Pipeline'}.predict_proba(DataFrame)",
        worker_command(sys.executable, [], isolated=False),
        {"BENCH_LIBRARY": str(folder / "models" / f"{model.key}.library.json")},
        LIBRARY_HANDLER,
        ("pandas", model.library),
        size,
        baseline=True,
    )


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the benchmark needs {name} installed here: pip install '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations)))


def framework_variant(backend: str, context: Path) -> Variant:
    """The framework with ``backend``, run from its rendered context as the image runs it."""
    from lambda_ml_serve.tune.measure import context_target

    target = context_target(context)
    site = context / "site-packages"
    size = dir_mb(site) + Path(target.env["LAMBDA_ML_SERVE_ARTIFACT"]).stat().st_size / 1e6
    preload = ("lambda_ml_serve.runtime.app", f"lambda_ml_serve.backends.{backend}.runtime")
    command = worker_command(sys.executable, [site], isolated=True)
    return Variant(backend, command, target.env, target.handler, preload, size)


@dataclass
class Agreement:
    """How one variant's answer compares with the library's, row by row."""

    labels: int = 0  #: rows whose label differs
    rows: int = 0  #: rows whose probabilities differ by more than TOLERANCE
    worst: float = 0.0  #: the largest probability difference
    classes: bool = True  #: the class order named is the library's

    @property
    def agrees(self) -> bool:
        return self.classes and self.labels == 0 and self.rows == 0

    def __str__(self) -> str:
        if not self.classes:
            return "names other classes"
        return f"{self.labels} labels, {self.rows} rows beyond {TOLERANCE:g} (up to {self.worst:.2g})"


def compare(expected: dict, answer: dict) -> Agreement:
    """``answer`` against the library's ``expected`` answer to the same rows."""
    if answer.get("classes") != expected["classes"]:
        return Agreement(classes=False)
    labels = sum(a != b for a, b in zip(answer["predictions"], expected["predictions"], strict=True))
    gaps = [
        max(abs(a - b) for a, b in zip(got, want, strict=True))
        for got, want in zip(answer["probabilities"], expected["probabilities"], strict=True)
    ]
    return Agreement(labels, sum(g > TOLERANCE for g in gaps), max(gaps))


def check(variants: list[Variant], bodies: dict[str, str], cpu: int, expected: dict[str, dict]) -> dict:
    """Every variant's answers to ``bodies`` against the library's ``expected`` ones, by body."""
    found: dict[str, dict[str, Agreement]] = {}
    for variant in variants:
        worker = Worker(variant, bodies, cpu)
        try:
            answers = {key: json.loads(worker.ask({"answer": key})) for key in bodies}
        finally:
            worker.finish()
        found[variant.label] = {key: compare(expected[key], answers[key]) for key in bodies}
    return found


def in_process_answer(model: TabModel, folder: Path, rows: list[dict]) -> dict:
    """The library's answer computed here, from the trained file: the reference every variant must give."""
    os.environ["BENCH_LIBRARY"] = str(folder / "models" / f"{model.key}.library.json")
    # Loaded afresh for each model: the module reads its model at import.
    sys.modules.pop(LIBRARY_HANDLER, None)
    handler = importlib.import_module(LIBRARY_HANDLER)
    return json.loads(handler.handler({"body": json.dumps(rows)}, None)["body"])


def render(
    model: TabModel,
    variants: list[Variant],
    refused: dict[str, str],
    results: dict[str, dict],
    agreement: dict[str, dict[str, Agreement]],
    args: argparse.Namespace,
) -> str:
    """The markdown tables for one model."""
    base = variants[0].label

    def cold(label: str, stage: str = "total") -> float:
        return statistics.median(run[stage] for run in results[label]["cold"])

    def warm(label: str, size: int, q: float | None = None) -> float:
        times = results[label]["warm"][size]
        return statistics.median(times) if q is None else percentile(times, q)

    sizes = [_rows(s) for s in args.sizes]
    out = [f"#### {model.title}", ""]
    out += [f"Median (library / variant); cold start: median of {args.cold}, a fresh process to its first answer:", ""]
    out += ["| variant | cold start | " + " | ".join(sizes) + " |", "| --- |" + " ---: |" * (len(sizes) + 1)]
    for v in variants:
        cells = [f"{fmt_ms(cold(v.label))} ({ratio(cold(base), cold(v.label))})"]
        cells += [f"{fmt_ms(warm(v.label, s))} ({ratio(warm(base, s), warm(v.label, s))})" for s in args.sizes]
        out.append(f"| {v.label} | " + " | ".join(cells) + " |")
    for backend, reason in refused.items():
        reason = reason if reason.startswith("not timed") else f"refused: {reason}"
        out.append(f"| {backend} | {reason} |" + " |" * len(sizes))
    out += ["", "p99, the cold start's stages (median), peak RSS, what the process holds and imports:", ""]
    out += [
        "| variant | " + " | ".join(f"p99 {s}" for s in sizes) + " | interpreter / imports / load / first answer |"
        " peak RSS | serving packages | heavy modules imported | probabilities vs the library's |",
        "| --- |" + " ---: |" * len(sizes) + " ---: | ---: | ---: | --- | ---: |",
    ]
    for v in variants:
        r = results[v.label]
        p99 = " | ".join(fmt_ms(warm(v.label, s, 0.99)) for s in args.sizes)
        stages = " / ".join(fmt_ms(cold(v.label, s)) for s in ("interpreter", "imports", "load", "first answer"))
        out.append(
            f"| {v.label} | {p99} | {stages} | {r['rss_kb'] / 1024:.0f} MB | {v.installed_mb:.0f} MB | "
            f"{', '.join(r['modules']) or 'none'} | {agreement[v.label]['exact'].worst:.1g} |"
        )
    rows = f"{max(args.sizes):,}"
    out += ["", f"The same {rows} rows with the file's own numbers (7.4 rather than 7.400000095367432), "]
    out[-1] += "which float32 cannot hold: rows answered otherwise than by the library:"
    out += ["", "| variant | labels | probabilities beyond 1e-5 | largest difference |", "| --- | ---: | ---: | ---: |"]
    for v in variants:
        found = agreement[v.label]["file"]
        out.append(f"| {v.label} | {found.labels} | {found.rows} | {found.worst:.2g} |")
    counts = ", ".join(f"{_rows(s)}: {len(results[base]['warm'][s])}" for s in args.sizes)
    out += ["", f"Timed calls per variant ({counts}), in {args.rounds} interleaved rounds."]
    return "\n".join(out) + "\n"


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "wine_concat.csv")
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls and 3 cold starts")
    parser.add_argument("--cold", type=int, help="cold starts per variant (default 9, quick 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    parser.add_argument("--models", default="xgboost,pipeline", help="comma-separated: xgboost, pipeline")
    parser.add_argument("--backends", help="comma-separated backends to measure (default: every one that may serve)")
    parser.add_argument("--cpu", type=int, default=1, help="the CPU every measured process is pinned to")
    parser.add_argument("--note", default="", help="a sentence about the conditions, put in the report")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    args = parser.parse_args(argv)
    args.cold = args.cold or (3 if args.quick else 9)
    args.repeats = QUICK_REPEATS if args.quick else REPEATS
    args.sizes = list(SIZES)
    if shutil.which("taskset") is None:
        parser.error("taskset is needed to pin the processes (Debian: apt-get install util-linux)")
    started, load_before = time.monotonic(), os.getloadavg()

    frame = wine(args.data)
    folder, contexts = prepare(args, frame)
    rows = request_rows(frame, max(SIZES))
    raw = request_rows(frame, max(SIZES), exact=False)
    bodies = {str(n): json.dumps(rows[:n]) for n in args.sizes}
    sections = []
    for model in (m for m in MODELS if m.key in args.models.split(",")):
        variants = [library_variant(model, folder)]
        refused = {}
        for backend in model.backends:
            if args.backends and backend not in args.backends.split(","):
                continue
            outcome = contexts[model.key, backend]
            if isinstance(outcome, Path):
                variants.append(framework_variant(backend, outcome))
            else:
                refused[backend] = outcome
        print(f"checking {len(variants)} variants' answers on {model.key} ...", file=sys.stderr)
        checked = {"exact": rows, "file": raw}
        expected = {key: in_process_answer(model, folder, value) for key, value in checked.items()}
        agreement = check(variants, {k: json.dumps(v) for k, v in checked.items()}, args.cpu, expected)
        # A variant that answers float32-exact rows otherwise than the library is not timed: its line
        # says how far it differs instead (the onnx conversion of a pipeline computes its scalers in
        # float32, for one). The library itself must agree, or the check is broken.
        wrong = {label for label, found in agreement.items() if not found["exact"].agrees}
        if variants[0].label in wrong:
            raise SystemExit(f"{model.key}: the library's own answers differ from the reference; the check is broken")
        for v in [v for v in variants if v.label in wrong]:
            found = agreement[v.label]["exact"]
            refused[v.label] = f"not timed: answers differ from the library's on {len(rows):,} rows ({found})"
            print(f"{model.key}: {v.label} {refused[v.label]}", file=sys.stderr)
            variants.remove(v)
        print(f"measuring {len(variants)} variants on {model.key} ...", file=sys.stderr)
        results = measure(variants, bodies, args)
        sections.append(render(model, variants, refused, results, agreement, args))
    load = " / ".join(f"{a:.1f}" for a in load_before), " / ".join(f"{a:.1f}" for a in os.getloadavg())
    publish(
        "bench/tabular.py",
        sections,
        args,
        started,
        f"Load average (1 / 5 / 15 min) before the run {load[0]}, after it {load[1]}.",
    )


if __name__ == "__main__":
    main()
