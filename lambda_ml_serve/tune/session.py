"""``lambda-ml-serve tune``: measure a model at each memory size, price it, and write the table, plot and JSON."""

from __future__ import annotations

import importlib
import itertools
import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lambda_ml_serve.tune.cgroups import Limits, detect
from lambda_ml_serve.tune.cost import MAX_MEMORY_MB, MIN_MEMORY_MB
from lambda_ml_serve.tune.measure import (
    ImageTarget,
    ProcessTarget,
    SizeResult,
    TuneError,
    compile_bytecode,
    context_target,
    image_arch,
    image_environment,
    measure_image,
    measure_process,
)
from lambda_ml_serve.tune.report import Settings, build_report, host, summary, table, write_json

DEFAULT_MEMORY = (128, 256, 512, 1024, 1769, 3008)
DEFAULT_ROWS = (1, 100, 10_000)
CONTEXTS = Path(".lambda-ml-serve") / "tune"
ARCHES = ("x86_64", "arm64")


def parse_ints(option: str, text: str, low: int, high: int) -> tuple[int, ...]:
    """``"128,256"`` as sizes, each from ``low`` to ``high``; one line naming the option otherwise."""
    values = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (part.isascii() and part.isdigit()) or not low <= int(part) <= high:
            raise TuneError(f"{option}: each value must be a whole number from {low:,} to {high:,}, comma-separated")
        values.append(int(part))
    if not values:
        raise TuneError(f"{option}: give at least one value")
    return tuple(dict.fromkeys(values))


def parse_arches(text: str) -> tuple[str, ...]:
    arches = tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    unknown = [a for a in arches if a not in ARCHES]
    if unknown or not arches:
        raise TuneError("--arch: Lambda runs x86_64 and arm64; give one or both, comma-separated")
    return arches


def request_bodies(example: Sequence[dict[str, Any]], rows: Sequence[int]) -> dict[int, str]:
    """A request body per batch size: the model's example rows, repeated up to the size."""
    if not example:
        raise TuneError("the model's spec has no example rows to send; add example=[...] to its ModelSpec")
    return {n: json.dumps(list(itertools.islice(itertools.cycle(example), n))) for n in rows}


def prepare_context(
    model: str, backend: str, arch: str, *, root: Path, rerender: bool, say: Callable[[str], None]
) -> Path:
    """The model's build context for this interpreter's Python, rendered once and reused while current."""
    from lambda_ml_serve.bundling.context import BUILD_INFO, is_build_context, render_build_context

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    folder = (root / f"{model}-{backend}-{arch}-py{python}").absolute()
    if not rerender and is_build_context(folder):
        info = json.loads((folder / BUILD_INFO).read_text())
        changed = stale_sources(folder / "site-packages", model)
        if (info.get("model"), info.get("backend"), info.get("python")) == (model, backend, python) and not changed:
            say(f"Reusing the build context in {folder} (--rerender renders it again)")
            return folder
        if changed:
            say(f"{changed} changed since the build context in {folder} was rendered")
    say(f"Rendering the build context of {model} ({backend}, Python {python}) into {folder} ...")
    render_build_context(model, folder, arch=arch, python=python, backend=backend, force=True)
    compile_bytecode(folder / "site-packages")
    return folder


def stale_sources(site: Path, model: str) -> str | None:
    """The first source the function runs (the framework's runtime, the plugin) that differs from its copy in ``site``.

    A context rendered before them changed would measure the old code; None when it is current.
    """
    import lambda_ml_serve
    from lambda_ml_serve.plugins import get_registry

    package = get_registry().model(model).spec.package.split(".")[0]
    framework = Path(lambda_ml_serve.__file__).parent
    plugin = Path(importlib.import_module(package).__file__).parent
    for root, runs in ((framework, _runtime_file), (plugin, lambda relative: True)):
        for copy in sorted((site / root.name).rglob("*.py")):
            relative = copy.relative_to(site / root.name)
            source = root / relative
            if runs(relative) and source.is_file() and source.read_bytes() != copy.read_bytes():
                return str(source)
    return None


def _runtime_file(relative: Path) -> bool:
    """What the function imports of the framework: runtime/ and each backend's runtime.py."""
    return relative.parts[0] == "runtime" or relative.name == "runtime.py"


@contextmanager
def interrupted_cleanly() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every cgroup, container and child process is removed on the way out."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def measure_all(
    target: ProcessTarget | ImageTarget | None,
    settings: Settings,
    bodies: dict[int, str],
    *,
    progress: Callable[[str], None],
    skipped: dict[str, str] | None = None,
) -> list[SizeResult]:
    """Every size of every architecture: measured, or reported as not measured with the reason."""
    results = []
    for arch in settings.arches:
        for memory in settings.memory_mb:
            reason = (skipped or {}).get(arch)
            if reason or target is None or target.arch != arch:
                results.append(SizeResult(memory, arch, status="not-measured", detail=reason or "not measured"))
                continue
            limits = Limits(memory)
            if isinstance(target, ImageTarget):
                result = measure_image(
                    target,
                    limits,
                    bodies,
                    cold_starts=settings.cold_starts,
                    requests=settings.requests,
                    progress=progress,
                )
            else:
                result = measure_process(
                    target,
                    limits,
                    bodies,
                    cold_starts=settings.cold_starts,
                    requests=settings.requests,
                    progress=progress,
                )
            results.append(result)
    return results


def run(
    model: str,
    *,
    backend: str | None,
    memory: str,
    arch: str | None,
    rows: str,
    image: str | None,
    target_p99_ms: float | None,
    cold_starts: int,
    requests: int,
    cold_start_rate: float,
    output: Path | None,
    rerender: bool = False,
) -> dict[str, Any]:
    """Measure, price, print the table and write tune.json, tune.png and tune.svg; returns the report."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lambda_ml_serve.plugins import get_registry
    from lambda_ml_serve.tune.plot import plot

    console = Console(stderr=True)
    registry = get_registry()
    spec = registry.model(model).spec
    if image:
        from lambda_ml_serve.bundling.docker import find_engine

        if find_engine() is None:
            raise TuneError("--image needs a Docker engine (DOCKER_HOST or the default socket); none answers")
        served = image_environment(image)
        if served.get("LAMBDA_ML_SERVE_MODEL") != model:
            raise TuneError(f"--image {image[:100]} does not serve model {model!r}; give the tag build printed")
        image_backend = served.get("LAMBDA_ML_SERVE_BACKEND", spec.backend)
        if backend and backend != image_backend:
            raise TuneError(f"--image {image[:100]} serves backend {image_backend!r}, not --backend {backend[:40]}")
        backend = image_backend
    backend = backend or spec.backend
    if backend not in registry.backends:
        known = ", ".join(sorted(registry.backends))
        raise TuneError(f"--backend {backend[:40]}: not installed; installed backends: {known}")
    if not 0 <= cold_start_rate <= 1:
        raise TuneError("--cold-start-rate must be from 0 to 1 (e.g. 0.01 for one cold start in a hundred requests)")
    if cold_starts < 1 or requests < 1:
        raise TuneError("--cold-starts and --requests must be at least 1")
    machine = host()
    settings = Settings(
        memory_mb=parse_ints("--memory", memory, MIN_MEMORY_MB, MAX_MEMORY_MB),
        arches=parse_arches(arch) if arch else (machine["arch"],),
        rows=parse_ints("--rows", rows, 1, spec.max_rows),
        requests=requests,
        cold_starts=cold_starts,
        cold_start_rate=cold_start_rate,
        target_p99_ms=target_p99_ms,
    )
    bodies = request_bodies(list(spec.example), settings.rows)
    skipped: dict[str, str] = {}
    target: ProcessTarget | ImageTarget
    if image:
        image_is = image_arch(image)
        target = ImageTarget(f"{model} ({backend}, image)", image, image_is, emulated=image_is != machine["arch"])
        for other in settings.arches:
            if other != image_is:
                skipped[other] = f"the image {image} is {image_is}; build one for {other} to measure it"
        limiter = "docker"
        where = {"kind": "image", "image": image, "context": None}
    else:
        limiter = detect() or ""
        if not limiter:
            raise TuneError(
                "no cgroup cpu and memory controllers under /sys/fs/cgroup; tune needs Linux with cgroups "
                "(as root), or --image with a Docker engine"
            )
        for other in settings.arches:
            if other != machine["arch"]:
                skipped[other] = (
                    f"{other} is measured on an {other} host only (or with --image and an {other} image, "
                    "run under qemu and marked emulated)"
                )
        context = prepare_context(model, backend, machine["arch"], root=CONTEXTS, rerender=rerender, say=console.print)
        target = context_target(context, label=f"{model} ({backend})")
        limiter = f"cgroup {limiter}"
        where = {"kind": "process", "image": None, "context": str(context)}

    measured = [a for a in settings.arches if a not in skipped]
    total = len(settings.memory_mb) * len(measured) * (cold_starts + len(settings.rows) + 1)
    with (
        interrupted_cleanly(),
        Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("measuring", total=total)

        def step(description: str) -> None:
            bar.update(task, description=description)
            bar.advance(task)

        results = measure_all(target, settings, bodies, progress=step, skipped=skipped)

    report = build_report(
        model=model,
        backend=backend,
        label=target.label,
        target=where,
        settings=settings,
        results=results,
        limiter=limiter,
        host_info=machine,
    )
    out = output or Path(f"tune-{model}-{backend}")
    json_path = write_json(report, out / "tune.json")
    images = plot([report], out / "tune")
    Console().print(table(report))
    for line in summary(report):
        console.print(line)
    console.print(f"Wrote {json_path}, {images[0]} and {images[1]}")
    return report
