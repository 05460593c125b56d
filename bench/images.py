"""Image benchmark: the seed-style Lambda image against this framework's, built and run for real.

    python bench/images.py [--out FILE] [--cold 7]

Needs a Docker engine (`eval "$(.ci/docker-up)"`) and the stand-in Lambda base image
(`tests/container/standin/build.sh`). For wine_quality on x86_64 and Python 3.11, one run measures:

- image size above the base: `docker image inspect` size of each image minus the base's;
- build time: cold (a fresh render, or pip install for the seed, then `docker build --no-cache`) and
  warm (the same context rebuilt with the layer cache; a re-render rebuilt with it);
- cold start through the Lambda Runtime Interface Emulator (RIE): `docker run` to the first answer
  to a Function URL event carrying samples.json, median of --cold fresh containers per image, the
  images taking turns; plus RIE's own init and first-invoke durations from the container log;
- warm latency through RIE for 1, 100 and 10,000 rows as the client sees it, with RIE's per-invoke
  `Duration` and the framework's logged `latency_ms` (the handler alone) from the container log.

The seed-style image is what the original project shipped: the base plus the default xgboost wheel
(which pulls in nvidia-nccl-cu12), pandas and scikit-learn, installed on this host for the target
(no network in `docker build`), and bench/seed_handler.py with the plugin's model.json. The compiled
backend's image is measured too when `render_build_context` takes a backend and it is installed.

Containers use the host network with RIE on 127.0.0.1 only. Every container and image the run
creates is removed at the end, by name or id; the base image stays. pip downloads come from pip's
own cache after the first run.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import inspect
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from run import machine, percentile, rows_from

from lambda_ml_serve.bundling.context import BUILD_INFO, BuildContext, render_build_context
from lambda_ml_serve.bundling.docker import Engine, build_image, build_invocation, find_engine
from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.local.container import INVOKE_PATH, RieContainer, free_port
from lambda_ml_serve.plugins import get_registry

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL = "wine_quality"
ARCH = "x86_64"
PYTHON = "3.11"
STANDIN = os.environ.get("LMS_STANDIN_TAG", "lambda-ml-serve/standin-python:3.11")
TARGET_MB = 260
#: Timed requests per batch size on one warm container (after WARMUP untimed ones).
WARM = {1: 200, 100: 100, 10_000: 10}
WARMUP = 3
SEED = "seed-style"
SEED_PACKAGES = ("xgboost", "pandas", "scikit-learn")
SEED_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
SEED_DOCKERFILE = f"""\
FROM {STANDIN}
COPY task/ ${{LAMBDA_TASK_ROOT}}/
ENV BENCH_MODEL=${{LAMBDA_TASK_ROOT}}/model.json
CMD ["seed_handler.handler"]
"""
#: Upper bounds, so that a stuck engine or function ends the run instead of hanging it.
BUILD_TIMEOUT = 1200
FIRST_ANSWER_TIMEOUT = 120.0
INVOKE_TIMEOUT = 120.0

_STEP = re.compile(r"^Step \d+/\d+ : (\S+)")
_STEP_RESULT = re.compile(r"^ ---> ([0-9a-f]{12})$")
_INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: ([\d.]+)\)")
_REPORT = re.compile(r"^REPORT RequestId: \S+\s+(?:Init Duration: ([\d.]+) ms\s+)?Duration: ([\d.]+) ms", re.M)


def say(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- docker ---


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"docker {args[0]} failed: {result.stderr.strip()[-1500:]}")
    return result


@dataclass
class Leftovers:
    """What this run created in the engine, removed at the end (containers first, then images)."""

    containers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def remove(self) -> list[str]:
        """Remove everything recorded; return what could not be removed (never forced)."""
        problems = []
        for container in self.containers:
            result = docker("rm", "-f", container, check=False)
            if result.returncode != 0 and "No such container" not in result.stderr:
                problems.append(f"container {container}: {result.stderr.strip()}")
        # Untagging first lets Docker delete each image with its untagged parents; the ids left
        # are the classic builder's intermediate stages, or images another build now depends on.
        for ref in [*self.tags, *reversed(self.images)]:
            result = docker("rmi", ref, check=False)
            if result.returncode != 0 and "No such image" not in result.stderr:
                problems.append(f"image {ref}: {result.stderr.strip()}")
        return problems


@dataclass(frozen=True)
class Step:
    """One step of a classic build, from its output."""

    instruction: str
    cached: bool
    #: The image the step produced (None for the ARG steps before the first FROM).
    result: str | None


def build_steps(lines: list[str]) -> list[Step]:
    """The steps of a classic build's output (none for BuildKit's)."""
    blocks: list[list[str]] = []
    for line in lines:
        if _STEP.match(line):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    steps = []
    for block in blocks:
        header = _STEP.match(block[0])
        assert header is not None
        results = [m.group(1) for line in block if (m := _STEP_RESULT.match(line))]
        cached = any(line.strip() == "---> Using cache" for line in block)
        steps.append(Step(header.group(1).upper(), cached, results[-1] if results else None))
    return steps


def created_images(lines: list[str]) -> list[str]:
    """Ids of the images a classic build created: every step's result but FROM's and cache hits."""
    return [s.result for s in build_steps(lines) if s.result and not s.cached and s.instruction != "FROM"]


def cache_hits(lines: list[str]) -> str:
    """How many of a classic build's image-producing steps (FROM aside) came from the cache."""
    steps = [s for s in build_steps(lines) if s.result and s.instruction != "FROM"]
    return f"{sum(s.cached for s in steps)}/{len(steps)} steps cached" if steps else ""


def docker_build(command: list[str], engine: Engine) -> list[str]:
    """Run ``docker build ...`` without the layer cache, as build_image would; return its output lines."""
    command, env = build_invocation(engine, [*command[:2], "--no-cache", *command[2:]])
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT)
    lines = (result.stdout + result.stderr).splitlines()
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n" + "\n".join(lines[-20:]))
    return lines


def image_bytes(ref: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", ref).stdout.strip())


# ---------------------------------------------------------------------------- builds ---


@dataclass
class Image:
    """One measured image: its tag and how long each build step took (label -> seconds, note)."""

    name: str
    tag: str
    builds: dict[str, tuple[float, str]] = field(default_factory=dict)
    size: int = 0


T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def framework_image(label: str, backend: str | None, work: Path, engine: Engine, leftovers: Leftovers) -> Image:
    """Render and build the framework's image cold, then rebuild it warm twice."""
    options = {"backend": backend} if backend else {}
    folder = work / f"context-{backend or 'default'}"
    image = Image(label, f"lambda-ml-serve-bench/{MODEL}:{backend or 'default'}-{os.getpid()}")

    def render() -> BuildContext:
        return render_build_context(MODEL, folder, arch=ARCH, python=PYTHON, base_image=STANDIN, **options)

    def build(context: BuildContext, *, cold: bool) -> str:
        lines: list[str] = []
        if cold:
            lines = docker_build(context.docker_build_command(image.tag), engine)
        else:
            build_image(context, image.tag, progress=lines.append)
        leftovers.images.extend(created_images(lines))
        return cache_hits(lines)

    say(f"{label}: cold render + docker build --no-cache")
    seconds, context = timed(render)
    image.builds["cold: render (fresh folder)"] = (seconds, "")
    leftovers.tags.append(image.tag)
    image.builds["cold: docker build --no-cache"] = timed(lambda: build(context, cold=True))
    say(f"{label}: warm rebuilds")
    image.builds["warm: docker build again"] = timed(lambda: build(context, cold=False))
    first = file_digests(folder)
    seconds, context = timed(render)
    image.builds["warm: re-render"] = (seconds, render_differences(first, file_digests(folder)))
    image.builds["warm: docker build of the re-render"] = timed(lambda: build(context, cold=False))
    image.size = image_bytes(image.tag)
    return image


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def render_differences(first: dict[str, str], second: dict[str, str]) -> str:
    """Which files of the Docker context a second render changed (build-info.json aside: not copied)."""
    changed = sorted(p for p in first.keys() | second.keys() if first.get(p) != second.get(p) and p != BUILD_INFO)
    if not changed:
        return "same files as the first render"
    shown = ", ".join(f"`{p}`" for p in changed[:4]) + (", ..." if len(changed) > 4 else "")
    return f"{len(changed)} file(s) differ from the first render: {shown}"


def seed_image(work: Path, engine: Engine, leftovers: Leftovers) -> Image:
    """The seed-style image: base + default xgboost, pandas, scikit-learn + the seed handler."""
    folder = work / "seed"
    task = folder / "task"
    image = Image(SEED, f"lambda-ml-serve-bench/seed-style:{os.getpid()}")
    say(f"{SEED}: pip install --target ({', '.join(SEED_PACKAGES)}) + docker build --no-cache")
    image.builds["cold: pip install --target"] = (timed(lambda: vendor_seed(task))[0], "pip's download cache")
    shutil.copy2(HERE / "seed_handler.py", task / "seed_handler.py")
    shutil.copy2(get_registry().model(MODEL).spec.artifact_path, task / "model.json")
    (folder / "Dockerfile").write_text(SEED_DOCKERFILE, encoding="utf-8")
    leftovers.tags.append(image.tag)
    seconds, lines = timed(lambda: docker_build(["docker", "build", "-t", image.tag, str(folder)], engine))
    leftovers.images.extend(created_images(lines))
    image.builds["cold: docker build --no-cache"] = (seconds, "")
    image.size = image_bytes(image.tag)
    return image


def vendor_seed(target: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
        str(target),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        PYTHON,
    ]
    for tag in SEED_PLATFORMS:
        command += ["--platform", tag]
    result = subprocess.run([*command, *SEED_PACKAGES], capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        raise SystemExit(f"pip install of the seed packages failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")


def compiled_support() -> str | None:
    """None when the compiled backend can be measured, else why not."""
    if "backend" not in inspect.signature(render_build_context).parameters:
        return "render_build_context takes no backend override"
    if not (REPO / "lambda_ml_serve/backends/compiled/runtime.py").is_file():
        return "lambda_ml_serve/backends/compiled/runtime.py does not exist"
    if "compiled" not in get_registry().backends:
        return "no backend named 'compiled' is registered"
    return None


# ------------------------------------------------------------------------- invoking ---


def url_event(body: str, request_id: str) -> bytes:
    """A Function URL (payload 2.0) POST event, encoded for RIE's invoke endpoint."""
    return json.dumps(
        {
            "version": "2.0",
            "rawPath": "/",
            "headers": {"content-type": "application/json"},
            "requestContext": {"requestId": request_id, "http": {"method": "POST", "path": "/"}},
            "body": body,
            "isBase64Encoded": False,
        }
    ).encode()


class Invoker:
    """POSTs events to RIE over one keep-alive connection; every answer must be a 200 response."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=INVOKE_TIMEOUT)

    def __call__(self, payload: bytes) -> dict:
        self.connection.request("POST", INVOKE_PATH, body=payload, headers={"content-type": "application/json"})
        response = self.connection.getresponse()
        body = response.read()
        result = json.loads(body) if body else None
        if response.status != 200 or response.getheader("X-Amz-Function-Error") or not isinstance(result, dict):
            raise SystemExit(f"the function failed: HTTP {response.status}: {body[:500]!r}")
        if result.get("statusCode") != 200:
            raise SystemExit(f"the function answered {result.get('statusCode')}: {str(result.get('body'))[:500]}")
        return result

    def close(self) -> None:
        self.connection.close()


def container_logs(container: str) -> str:
    result = docker("logs", container, check=False, timeout=60)
    return result.stdout + "\n" + result.stderr


def report_durations(logs: str) -> list[tuple[float | None, float]]:
    """(Init Duration, Duration) in ms of each RIE REPORT line, in invoke order."""
    return [(float(i) if i else None, float(d)) for i, d in _REPORT.findall(logs)]


def handler_latencies(logs: str) -> dict[str, float]:
    """request id -> latency_ms of the framework's JSON log lines."""
    found = {}
    for line in logs.splitlines():
        if line.startswith("{") and '"latency_ms"' in line:
            record = json.loads(line)
            found[record["request_id"]] = record["latency_ms"]
    return found


@dataclass
class ColdStart:
    total: float
    docker_run: float
    init_ms: float | None
    report_init_ms: float | None
    first_invoke_ms: float | None
    predictions: list[float]


def cold_start(image: Image, payload: bytes, name: str, leftovers: Leftovers) -> ColdStart:
    """docker run a fresh container and time it to the first successful answer."""
    port, api_port = free_port(), free_port()
    leftovers.containers.append(name)
    started = time.perf_counter()
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-e",
        f"LMS_RIE_ADDRESS=127.0.0.1:{port}",
        "-e",
        f"LMS_RIE_RUNTIME_API_ADDRESS=127.0.0.1:{api_port}",
        image.tag,
    )
    ran = time.perf_counter()
    try:
        answer = first_answer(port, payload, started + FIRST_ANSWER_TIMEOUT, name)
        answered = time.perf_counter()
        logs = container_logs(name)
    finally:
        docker("rm", "-f", name, check=False)
        leftovers.containers.remove(name)
    init = _INIT_REPORT.search(logs)
    reports = report_durations(logs)
    return ColdStart(
        total=answered - started,
        docker_run=ran - started,
        init_ms=float(init.group(1)) if init else None,
        report_init_ms=reports[0][0] if reports else None,
        first_invoke_ms=reports[0][1] if reports else None,
        predictions=json.loads(answer["body"])["predictions"],
    )


def first_answer(port: int, payload: bytes, deadline: float, container: str) -> dict:
    """Invoke until RIE listens (connection refused until then); bounded by ``deadline``."""
    while True:
        invoke = Invoker(port)
        try:
            return invoke(payload)
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            if time.perf_counter() > deadline:
                raise SystemExit(f"{container} did not answer in time:\n{container_logs(container)[-2000:]}") from None
            time.sleep(0.005)
        finally:
            invoke.close()


@dataclass
class Warm:
    client: dict[int, list[float]]
    rie: dict[int, list[float]]
    handler: dict[int, list[float]]


def warm_latency(image: Image, bodies: dict[int, str]) -> Warm:
    """One container: an untimed first invoke, then WARMUP + WARM[size] requests per batch size."""
    warm = Warm({}, {}, {})
    #: Every request sent, in order: (rows, request id, timed?); RIE's REPORT lines follow this order.
    sent: list[tuple[int, str, bool]] = [(1, "init", False)]
    with RieContainer(image.tag) as function:
        invoke = Invoker(function.port)
        try:
            invoke(url_event(bodies[1], "init"))
            for size, count in WARM.items():
                warm.client[size] = []
                for i in range(WARMUP + count):
                    request_id = f"bench-{size}-{i}"
                    payload = url_event(bodies[size], request_id)
                    started = time.perf_counter()
                    invoke(payload)
                    elapsed = time.perf_counter() - started
                    sent.append((size, request_id, i >= WARMUP))
                    if i >= WARMUP:
                        warm.client[size].append(elapsed)
        finally:
            invoke.close()
        assert function.container_id is not None
        logs = container_logs(function.container_id)
    reports = report_durations(logs)
    latencies = handler_latencies(logs)
    for size in WARM:
        counted = [(n, rid) for n, (rows, rid, timed_) in enumerate(sent) if rows == size and timed_]
        if len(reports) == len(sent):
            warm.rie[size] = [reports[n][1] for n, _ in counted]
        warm.handler[size] = [latencies[rid] for _, rid in counted if rid in latencies]
    return warm


# ------------------------------------------------------------------------- markdown ---


def mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def secs(seconds: float) -> str:
    return f"{seconds:.1f} s"


def median_ms(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):,.1f} ms" if known else "n/a"


def ratio(a: float, b: float) -> str:
    return f"{a / b:,.1f}x" if b else "n/a"


def render_sizes(images: list[Image], base: int) -> list[str]:
    seed = next(i for i in images if i.name == SEED)
    lines = [
        "### Image size above the base",
        "",
        f"`docker image inspect` size minus the base's ({STANDIN}: {mb(base)}); target <= {TARGET_MB} MB.",
        "",
        "| image | above the base | whole image | target | seed-style / this |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for image in images:
        above = image.size - base
        verdict = "n/a (baseline)" if image.name == SEED else ("met" if above <= TARGET_MB * 1e6 else "MISSED")
        lines.append(
            f"| {image.name} | {mb(above)} | {mb(image.size)} | {verdict} | {ratio(seed.size - base, above)} |"
        )
    return lines


def render_builds(images: list[Image]) -> list[str]:
    lines = [
        "### Build time",
        "",
        "Cold: a fresh render (the framework vendors its packages with pip) or `pip install --target` "
        "(seed-style), then `docker build --no-cache`. Warm: the same context built again with the layer "
        "cache, then a re-render into the same folder built with the cache. Classic builder.",
        "",
        "| image | step | time | note |",
        "| --- | --- | ---: | --- |",
    ]
    for image in images:
        cold = sum(s for label, (s, _) in image.builds.items() if label.startswith("cold"))
        for label, (seconds, note) in image.builds.items():
            lines.append(f"| {image.name} | {label} | {secs(seconds)} | {note} |")
        lines.append(f"| {image.name} | **cold total** | **{secs(cold)}** | |")
    return lines


def render_cold(images: list[Image], cold: dict[str, list[ColdStart]]) -> list[str]:
    runs = len(next(iter(cold.values())))
    seed = statistics.median(c.total for c in cold[SEED])
    lines = [
        "### Cold start through RIE",
        "",
        f"`docker run` to the first answer to a Function URL event with samples.json; {runs} fresh containers "
        "per image, taking turns. RIE runs the function's init when the first invoke arrives.",
        "",
        "| image | start to first answer, median | min to max | `docker run -d` returned | RIE init "
        "(`INIT REPORT`) | first invoke `Duration` | REPORT `Init Duration` | seed-style / this |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for image in images:
        runs_ = cold[image.name]
        totals = [c.total for c in runs_]
        lines.append(
            f"| {image.name} | {ms(statistics.median(totals))} | {ms(min(totals))} to {ms(max(totals))} | "
            f"{ms(statistics.median(c.docker_run for c in runs_))} | {median_ms([c.init_ms for c in runs_])} | "
            f"{median_ms([c.first_invoke_ms for c in runs_])} | {median_ms([c.report_init_ms for c in runs_])} | "
            f"{ratio(seed, statistics.median(totals))} |"
        )
    lines += [
        "",
        "RIE's REPORT line carries an `Init Duration` that is not the init time (it is near zero); "
        "the real init is RIE's `INIT REPORT(durationMs)` on stderr; the first `Duration` includes it.",
    ]
    return lines


def render_warm(images: list[Image], warm: dict[str, Warm]) -> list[str]:
    lines = [
        "### Warm invoke latency through RIE",
        "",
        "Client: POST to RIE's invoke URL on 127.0.0.1 over one keep-alive connection, event to response. "
        "RIE `Duration`: from its REPORT lines. Handler: the framework's `latency_ms` log line (request "
        f"path only). {WARMUP} untimed requests before each batch size.",
        "",
        "| image | rows | requests | client median | client p99 | RIE `Duration` median | handler median "
        "| client median, seed-style / this |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, count in WARM.items():
        seed = statistics.median(warm[SEED].client[size])
        for image in images:
            w = warm[image.name]
            client = w.client[size]
            rie = median_ms(w.rie.get(size, []))
            handler = f"{statistics.median(w.handler[size]):,.3f} ms" if w.handler.get(size) else "n/a"
            lines.append(
                f"| {image.name} | {size:,} | {count} | {ms(statistics.median(client))} | "
                f"{ms(percentile(client, 0.99))} | {rie} | {handler} | "
                f"{ratio(seed, statistics.median(client))} |"
            )
    lines += ["", "p99 of 10 requests is their maximum. The seed-style handler logs no latency of its own."]
    return lines


def agreement(cold: dict[str, list[ColdStart]]) -> str:
    """How far apart the images' predictions for samples.json are."""
    answers = {name: runs[0].predictions for name, runs in cold.items()}
    reference = answers[SEED]
    worst = max(abs(a - b) for p in answers.values() for a, b in zip(p, reference, strict=True))
    listed = "; ".join(f"{name}: {[round(v, 4) for v in p]}" for name, p in answers.items())
    return f"Predictions for samples.json (largest difference from seed-style {worst:.2g}): {listed}."


def render(
    images: list[Image], base: int, cold: dict[str, list[ColdStart]], warm: dict[str, Warm], context: dict[str, str]
) -> str:
    lines = [
        f"## Container images: {MODEL}, {ARCH}, Python {PYTHON}",
        "",
        f"Machine: {context['machine']}. Docker {context['docker']}. Load average (1 min) "
        f"{context['load']}; other work may share the machine. Base image: {STANDIN}, a stand-in for "
        f"public.ecr.aws/lambda/python:{PYTHON} with the real RIE. Whole run: {context['elapsed']}.",
        "",
        *render_sizes(images, base),
        "",
        *render_builds(images),
        "",
        *render_cold(images, cold),
        "",
        agreement(cold),
        "",
        *render_warm(images, warm),
    ]
    if context.get("compiled"):
        lines += ["", f"Compiled backend not measured: {context['compiled']}."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main ---


def check_engine() -> Engine:
    engine = find_engine()
    if engine is None:
        raise SystemExit('no Docker engine answers; start one with: eval "$(.ci/docker-up)"')
    if docker("image", "inspect", STANDIN, check=False).returncode != 0:
        raise SystemExit(f"the base image {STANDIN} is missing; build it with tests/container/standin/build.sh")
    return engine


def build_all(work: Path, engine: Engine, leftovers: Leftovers) -> tuple[list[Image], str | None]:
    images = [
        seed_image(work, engine, leftovers),
        framework_image("lambda-ml-serve (xgboost backend)", None, work, engine, leftovers),
    ]
    missing = compiled_support()
    if missing is None:
        try:
            images.append(framework_image("lambda-ml-serve (compiled backend)", "compiled", work, engine, leftovers))
        except LambdaMLServeError as exc:
            missing = f"its build failed: {exc}"
    return images, missing


def measure(args: argparse.Namespace, work: Path, leftovers: Leftovers) -> str:
    started = time.perf_counter()
    engine = check_engine()
    load_before = os.getloadavg()[0]
    images, compiled_missing = build_all(work, engine, leftovers)
    base = image_bytes(STANDIN)
    samples = url_event(args.samples.read_text(encoding="utf-8"), "cold-start")
    say(f"cold starts: {args.cold} per image")
    cold: dict[str, list[ColdStart]] = {image.name: [] for image in images}
    for run in range(args.cold):
        for n, image in enumerate(images):
            cold[image.name].append(cold_start(image, samples, f"lms-images-{os.getpid()}-{run}-{n}", leftovers))
    bodies = {size: json.dumps(rows_from(args.data, size)) for size in WARM}
    warm = {}
    for image in images:
        say(f"warm latency: {image.name}")
        warm[image.name] = warm_latency(image, bodies)
    info = docker("info", "-f", "{{.ServerVersion}}, {{.Driver}} storage").stdout.strip()
    context = {
        "machine": machine(),
        "docker": f"{info}, {'BuildKit' if engine.buildkit else 'classic builder'}",
        "load": f"{load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
        "elapsed": f"{(time.perf_counter() - started) / 60:.1f} min",
        "compiled": compiled_missing or "",
    }
    return render(images, base, cold, warm, context)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown section here")
    parser.add_argument("--cold", type=int, default=7, help="fresh containers per image for the cold start")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/wine_concat.csv")
    parser.add_argument("--samples", type=Path, default=REPO.parent / "shared/data/samples.json")
    args = parser.parse_args(argv)
    if args.cold < 1:
        parser.error("--cold must be at least 1")

    leftovers = Leftovers()
    work = Path(tempfile.mkdtemp(prefix="lms-images-"))
    try:
        section = measure(args, work, leftovers)
    finally:
        say("removing the containers and images of this run")
        for problem in leftovers.remove():
            say(f"could not remove {problem}")
        shutil.rmtree(work, ignore_errors=True)
    print(section)
    if args.out:
        args.out.write_text(section, encoding="utf-8")


if __name__ == "__main__":
    main()
