"""What bench/run.py measures: the baselines and the framework with each backend, each on the same model files.

A framework variant runs from exactly what its image holds: a rendered build context's site-packages and
the artifact its backend prepared from the benchmarked model file, in an interpreter started with
``-S -E`` so nothing else is importable. Adding a backend to the benchmark is one line in ``FRAMEWORK``.

The baselines run in their own virtual environment (bench/.venv-original, created on first use) with
the package versions that ran the original service on Python 3.11.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data"
MODEL = "wine_quality"
RUNTIME = "lambda_ml_serve.runtime.handler"

#: The original service's environment (xgboost 1.6.2 wrote its model; these run it on Python 3.11).
ORIGINAL_PACKAGES = ("xgboost==1.6.2", "pandas==1.5.3", "scikit-learn==1.2.2", "numpy==1.26.4", "scipy==1.17.1")
ORIGINAL_VENV = HERE / ".venv-original"
#: The process that imports a handler and answers timing commands (tune measures with it too).
WORKER = REPO / "lambda_ml_serve" / "tune" / "worker.py"


@dataclass(frozen=True)
class Framework:
    """The framework serving with one backend."""

    label: str
    backend: str
    #: The handler module the worker imports (the image's, unless the variant swaps the predictor).
    handler: str = RUNTIME
    #: Packages of this environment the variant also needs beyond its context (found by import name).
    host_packages: tuple[str, ...] = ()
    #: Modules imported before the handler, so the cold start shows imports apart from the model load.
    preload: tuple[str, ...] = ("lambda_ml_serve.runtime.app",)
    #: Issue goals as ratios against the original handler: "cold" and batch sizes.
    goals: dict[str, float] = field(default_factory=dict)


FRAMEWORK = (
    Framework(
        "xgboost (C API via ctypes)",
        "xgboost",
        preload=("lambda_ml_serve.runtime.app", "lambda_ml_serve.backends.xgboost.runtime"),
        goals={"cold": 6, "1": 30, "10000": 1.5},
    ),
    Framework(
        "xgboost (inplace_predict)",
        "xgboost",
        handler="inplace_handler",
        host_packages=("xgboost", "numpy", "scipy"),
        preload=("lambda_ml_serve.runtime.app", "numpy", "xgboost"),
    ),
    Framework("compiled", "compiled", goals={"cold": 20, "1": 200, "10000": 2.5}),
    # The same XGBoost model converted to ONNX at build time, served by onnxruntime.
    Framework("onnx (converted at build)", "onnx", preload=("lambda_ml_serve.runtime.app", "onnxruntime")),
)


@dataclass(frozen=True)
class BenchModel:
    """A model file every variant serves (the framework through its backend's prepared form of it)."""

    key: str
    title: str
    path: Path


@dataclass
class Variant:
    """One process kind to measure: how to start it, and what it serves from."""

    label: str
    command: list[str]
    env: dict[str, str]
    handler: str
    preload: tuple[str, ...]
    installed_mb: float
    baseline: bool = False
    goals: dict[str, float] = field(default_factory=dict)


def worker_command(python: str, paths: list[Path], *, isolated: bool) -> list[str]:
    """An interpreter that puts ``paths`` (and bench/, for the baselines' handlers) first on sys.path and
    runs the measured-process worker that ``tune`` uses too (standard library only)."""
    bootstrap = (
        f"import sys; sys.path[:0] = {[str(p) for p in [*paths, HERE]]!r}; "
        f"__file__ = {str(WORKER)!r}; exec(compile(open(__file__).read(), __file__, 'exec'))"
    )
    # -S -E: no site-packages and no PYTHON* variables, so nothing outside the context is importable.
    return [python, *(["-S", "-E"] if isolated else []), "-c", bootstrap]


def models(cache: Path) -> list[BenchModel]:
    """The original service's model file, and the project's own in a form XGBoost 1.6 reads."""
    from lambda_ml_serve.plugins import get_registry

    project = get_registry().model(MODEL).spec.artifact_path
    return [
        BenchModel(
            "original",
            "the original model (XGBoost 1.6.2, 427 trees of depth 4)",
            DATA / "xgboost_wine_quality__lambda-with-ML-container.json",
        ),
        BenchModel("project", "the project's model (553 trees of depth 5)", legacy_readable(project, cache)),
    ]


def legacy_readable(path: Path, cache: Path) -> Path:
    """``path`` with its base_score written as a number, as XGBoost < 2 expects.

    XGBoost >= 2 writes it as a one-element array ("[5.79E0]"), which 1.6.2 misreads without a word
    (its predictions then come out about 4.5 too low); nothing else in the file differs for it.
    """
    model = json.loads(path.read_text())
    params = model["learner"]["learner_model_param"]
    params["base_score"] = params["base_score"].strip("[]")
    text = json.dumps(model)
    out = cache / f"project-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return out


def venv_python(folder: Path, packages: tuple[str, ...]) -> str:
    """The interpreter of a virtual environment holding exactly ``packages``, created (or recreated,
    when the pins changed) on first use."""
    python = folder / "bin" / "python"
    marker = folder / "packages.txt"
    wanted = "\n".join(packages) + "\n"
    if not (python.is_file() and marker.is_file() and marker.read_text() == wanted):
        print(f"creating {folder} with {' '.join(packages)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages], check=True
        )
        marker.write_text(wanted)
    return str(python)


def original_python() -> str:
    """The baseline environment's interpreter, created with ORIGINAL_PACKAGES on first use."""
    return venv_python(ORIGINAL_VENV, ORIGINAL_PACKAGES)


def baselines(model: BenchModel) -> list[Variant]:
    python = original_python()
    site = next((ORIGINAL_VENV / "lib").glob("python3*/site-packages"))
    installed = sum(dir_mb(site / name) for name in ("xgboost", "pandas", "sklearn", "numpy", "scipy"))
    env = {"BENCH_MODEL": str(model.path)}
    command = worker_command(python, [], isolated=False)
    return [
        Variant(
            "original handler (pd.read_json)",
            command,
            env,
            "original_handler",
            ("pandas", "xgboost"),
            installed,
            baseline=True,
        ),
        Variant("seed-style (json.loads + DataFrame)", command, env, "seed_handler", ("pandas", "xgboost"), installed),
    ]


def framework(variant: Framework, model: BenchModel, cache: Path) -> Variant:
    """``variant`` serving ``model`` from its build context and its backend's prepared artifact."""
    from lambda_ml_serve.bundling.context import HOST_ARCH, is_build_context, render_build_context

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = cache / variant.backend
    stamp, digest = cache / f"{variant.backend}.source", source_digest()
    if is_build_context(folder) and stamp.is_file() and stamp.read_text() == digest:
        site = folder / "site-packages"
        plugin = json.loads((folder / "build-info.json").read_text())["plugin"]["name"]
    else:
        print(f"rendering the {variant.backend} build context ...", file=sys.stderr)
        ctx = render_build_context(MODEL, folder, python=python, backend=variant.backend, force=True)
        site, plugin = ctx.site_packages, ctx.plugin
        stamp.write_text(digest)
    artifact = prepared(variant.backend, model, cache, HOST_ARCH)
    paths = [site]
    size = dir_mb(site) + artifact.stat().st_size / 1e6
    if variant.host_packages:
        paths.append(only_packages(variant.host_packages, cache / f"packages-{'-'.join(variant.host_packages)}"))
        size += dir_mb(paths[-1])
    env = {
        "LAMBDA_ML_SERVE_MODEL": MODEL,
        "LAMBDA_ML_SERVE_ARTIFACT": str(artifact),
        "LAMBDA_ML_SERVE_PLUGINS": plugin,
        "LAMBDA_ML_SERVE_BACKEND": variant.backend,
        # What the image's ENV sets: the model file's identity, named in every answer.
        "LAMBDA_ML_SERVE_MODEL_SHA256": hashlib.sha256(model.path.read_bytes()).hexdigest(),
    }
    command = worker_command(sys.executable, paths, isolated=True)
    return Variant(variant.label, command, env, variant.handler, variant.preload, size, goals=variant.goals)


def source_digest() -> str:
    """A digest of the framework's and the plugin's sources: a context rendered from other sources is stale."""
    digest = hashlib.sha256()
    for root in (REPO / "lambda_ml_serve", REPO / "models" / MODEL / f"lambda_ml_serve_{MODEL}"):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def prepared(backend: str, model: BenchModel, cache: Path, arch: str) -> Path:
    """The backend's prepared form of the model file (cached by the file's content and the sources)."""
    from lambda_ml_serve.plugins import get_registry
    from lambda_ml_serve.runtime.manifest import MANIFEST_NAME, Manifest

    digest = hashlib.sha256(model.path.read_bytes() + source_digest().encode()).hexdigest()[:12]
    out_dir = cache / "prepared" / f"{backend}-{model.key}-{digest}"
    done = out_dir / "prepared.txt"
    if done.is_file():
        return out_dir / done.read_text().strip()
    print(f"preparing {model.key} for {backend} ...", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    registry = get_registry()
    spec = registry.model(MODEL).spec
    path = Path(registry.backend(backend).prepare(model.path, out_dir, arch=arch, spec=spec))
    # The serving manifest `build` writes beside the artifact: the image's init reads it instead of
    # loading the plugins, so the cold start measured is the image's.
    Manifest.of(spec, backend, registry.backend(backend), path).write(path.parent / MANIFEST_NAME)
    done.write_text(path.name)
    return path


def only_packages(names: tuple[str, ...], folder: Path) -> Path:
    """A folder of links to these installed packages and the native libraries beside them, nothing else.

    Importing xgboost where pandas or scikit-learn is importable imports them too; the image this
    variant stands for had neither.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"the benchmark needs {name} installed here: pip install 'lambda-ml-serve[xgboost]'")
        package = Path(next(iter(spec.submodule_search_locations)))
        for source in [package, *package.parent.glob("*.libs")]:
            link = folder / source.name
            if not link.exists():
                link.symlink_to(source, target_is_directory=True)
    return folder


def dir_mb(path: Path) -> float:
    """Size of the files under ``path``, following links to folders."""
    total = 0
    for root, _, files in os.walk(path, followlinks=True):
        total += sum((Path(root) / f).stat().st_size for f in files)
    return total / 1e6


def environment(variant: Variant) -> dict[str, str]:
    return {**os.environ, **variant.env}
