"""Run the function as it will run, under one memory size's CPU share and memory limit, and time it.

Two kinds of target:

- :class:`ProcessTarget`: a child interpreter started with ``-S -E`` that imports only what a rendered
  build context holds (its site-packages, its prepared artifact, the image's environment), inside a
  cgroup with the size's CFS quota and memory limit (:mod:`lambda_ml_serve.tune.cgroups`);
- :class:`ImageTarget`: the built image behind the Runtime Interface Emulator, started with Docker's
  ``--cpus`` and ``--memory``.

Per size: cold starts (a fresh process or container to its first answer, several times), warm
latency per batch size, and peak memory. A process the kernel OOM-kills is a size that does not fit:
it is reported, never skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.tune.cgroups import PERIOD_US, Cgroup, Limits

WORKER = Path(__file__).with_name("worker.py")
RUNTIME_HANDLER = "lambda_ml_serve.runtime.handler"
#: Seconds one cold start or one batch of warm calls may take before the size is reported as failing.
TIMEOUT_S = 600
Progress = Callable[[str], None]


class TuneError(LambdaMLServeError):
    """The function could not be measured (it failed for another reason than running out of memory)."""


@dataclass
class SizeResult:
    """Everything measured at one memory size."""

    memory_mb: int
    arch: str
    #: ``ok``; ``oom``: killed for exceeding the memory limit (the size does not fit); ``error``: failed otherwise.
    status: str = "ok"
    detail: str = ""
    #: Process or container start to the first answer, ms.
    cold_ms: list[float] = field(default_factory=list)
    #: Warm handler durations in ms, by rows per request.
    warm_ms: dict[int, list[float]] = field(default_factory=dict)
    #: Peak memory of the group (page cache included), bytes; and the process's peak RSS, bytes.
    peak_bytes: int | None = None
    rss_bytes: int | None = None
    #: The limits as read back from the cgroup or ``docker inspect``.
    applied: dict[str, float] = field(default_factory=dict)
    #: Measured under emulation (qemu): shown, never recommended.
    emulated: bool = False


@dataclass(frozen=True)
class ProcessTarget:
    """A child interpreter that imports the function from ``paths`` only, with the image's environment."""

    label: str
    paths: tuple[Path, ...]
    env: dict[str, str]
    python: str = sys.executable
    handler: str = RUNTIME_HANDLER
    #: Modules imported before the handler (their time still counts in the cold start).
    preload: tuple[str, ...] = ()
    #: ``-S -E``: no site-packages and no PYTHON* variables, so nothing outside ``paths`` is importable.
    isolated: bool = True
    arch: str = "x86_64"

    def command(self, mode: str) -> list[str]:
        bootstrap = (
            f"import sys; sys.path[:0] = {[str(p) for p in self.paths]!r}; "
            f"__file__ = {str(WORKER)!r}; exec(compile(open(__file__).read(), __file__, 'exec'))"
        )
        flags = ["-S", "-E"] if self.isolated else []
        return [self.python, *flags, "-c", bootstrap, self.handler, json.dumps(list(self.preload)), mode]

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def context_target(context: Path, label: str | None = None) -> ProcessTarget:
    """The function a rendered build context holds, run from the context as the image runs it.

    The environment is the Dockerfile's ``ENV`` with ``${LAMBDA_TASK_ROOT}`` standing for the context.
    """
    dockerfile = context / "Dockerfile"
    info = json.loads((context / "build-info.json").read_text())
    env = dockerfile_env(dockerfile.read_text(), task_root=context)
    site = context / "site-packages"
    return ProcessTarget(
        label=label or f"{info['model']} ({info['backend']})",
        paths=(site,),
        env=env,
        arch=info["arch"],
    )


_ENV_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S+)')


def dockerfile_env(text: str, task_root: Path) -> dict[str, str]:
    """The ``ENV KEY=VALUE ...`` instructions of a rendered Dockerfile (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for key, value in _ENV_PAIR.findall(line[4:]):
                value = value.strip('"').replace("${LAMBDA_TASK_ROOT}", str(task_root))
                env[key] = value
    return env


def compile_bytecode(site: Path) -> None:
    """Compile the context's sources once, as the image's bytecode stage does, so no cold start compiles."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", str(site)],
        check=False,
        capture_output=True,
    )


def cpus_for(limits: Limits, cpus: Sequence[int]) -> list[int]:
    """The CPUs a size's process may run on: one for up to one vCPU, as many as its share needs above."""
    needed = max(1, -(-limits.quota_us // 100_000))
    return list(cpus[-needed:]) if needed <= len(cpus) else list(cpus)


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _pinned(command: list[str], cpus: Sequence[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus)), *command]


def measure_process(
    target: ProcessTarget,
    limits: Limits,
    bodies: dict[int, str],
    *,
    cold_starts: int,
    requests: int,
    cpus: Sequence[int] | None = None,
    progress: Progress = lambda step: None,
) -> SizeResult:
    """Cold starts, warm latency per batch size and peak memory of ``target`` under ``limits``.

    ``bodies`` maps rows per request to a request body; the smallest is the cold starts' request.
    """
    result = SizeResult(memory_mb=limits.memory_mb, arch=target.arch)
    pin = cpus_for(limits, cpus or allowed_cpus())
    first = bodies[min(bodies)]
    peaks: list[int] = []
    for i in range(cold_starts):
        progress(f"{limits.memory_mb} MB: cold start {i + 1} of {cold_starts}")
        with Cgroup(limits) as group:
            result.applied = {**group.applied(), "cpus_pinned": len(pin)}
            spawned = time.monotonic()
            try:
                proc = subprocess.run(
                    _pinned(group.wrap(target.command("cold")), pin),
                    input=first,
                    capture_output=True,
                    text=True,
                    env=target.environment(),
                    timeout=TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                return _failed(result, "error", f"a cold start took more than {TIMEOUT_S} s")
            usage = group.usage()
            peaks.append(usage.peak_bytes)
            if proc.returncode != 0:
                return _process_failed(result, proc.returncode, proc.stderr, usage.oom_kills, usage.peak_bytes)
            cold = json.loads(proc.stdout)
            result.cold_ms.append((cold["answered"] - spawned) * 1000)
            result.rss_bytes = max(result.rss_bytes or 0, cold["rss_kb"] * 1024)
    if result.rss_bytes is not None and result.rss_bytes > limits.memory_bytes:
        result.peak_bytes = max(peaks)
        return over_the_limit(result, limits)  # it does not fit: no need to time it warm
    progress(f"{limits.memory_mb} MB: starting the warm process")
    with Cgroup(limits) as group, tempfile.TemporaryFile(mode="w+") as log:
        result.applied = {**group.applied(), "cpus_pinned": len(pin)}
        proc = subprocess.Popen(
            _pinned(group.wrap(target.command("serve")), pin),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=target.environment(),
        )
        try:
            _send(proc, {str(rows): body for rows, body in bodies.items()})
            for rows in sorted(bodies):
                progress(f"{limits.memory_mb} MB: {requests} requests of {rows:,} rows")
                reply = _ask(proc, {"run": str(rows), "repeats": requests})
                if reply is None:
                    break
                result.warm_ms[rows] = [t * 1000 for t in reply]
            else:
                final = _ask(proc, {"done": True})
                if final is not None:
                    result.rss_bytes = max(result.rss_bytes or 0, final["rss_kb"] * 1024)
                    proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait(timeout=60)
            usage = group.usage()
        peaks.append(usage.peak_bytes)
        result.peak_bytes = max(peaks)
        if code != 0:
            log.seek(0)
            return _process_failed(result, code, log.read(), usage.oom_kills, max(peaks))
    return over_the_limit(result, limits)


def over_the_limit(result: SizeResult, limits: Limits) -> SizeResult:
    """A process whose resident set outgrew the size does not fit, even when the kernel did not kill it.

    The cgroup charges a file page to the group that first read it, so libraries another process
    already loaded escape the limit; the peak RSS counts them, as the function's own sandbox would.
    """
    if result.status == "ok" and result.rss_bytes is not None and result.rss_bytes > limits.memory_bytes:
        mb = result.rss_bytes / 2**20
        return _failed(result, "oom", f"peak RSS {mb:.0f} MB is over the {limits.memory_mb} MB limit")
    return result


def _send(proc: subprocess.Popen[str], payload: object) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(payload) + "\n")
        proc.stdin.flush()
    except BrokenPipeError:
        pass  # the process died; its exit status says why


def _ask(proc: subprocess.Popen[str], payload: object) -> object | None:
    """Send a command and read its answer; None when the process died instead of answering."""
    _send(proc, payload)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return json.loads(line) if line else None


def _process_failed(result: SizeResult, code: int, stderr: str, oom_kills: int, peak: int) -> SizeResult:
    result.peak_bytes = max(peak, result.peak_bytes or 0)
    # SIGKILL (-9 from Python, 137 through the shell) with the group's OOM counter raised: the kernel's OOM killer.
    if oom_kills > 0 or code in (-9, 137):
        return _failed(result, "oom", f"killed for exceeding {result.memory_mb} MB (peak {peak / 2**20:.0f} MB)")
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
    return _failed(result, "error", f"exit {code}: {last[:300]}")


def _failed(result: SizeResult, status: str, detail: str) -> SizeResult:
    result.status, result.detail = status, detail
    return result


@dataclass(frozen=True)
class ImageTarget:
    """A built image, run behind the Runtime Interface Emulator with Docker's CPU and memory limits."""

    label: str
    image: str
    arch: str
    #: The image's platform is not the host's: Docker runs it under qemu.
    emulated: bool = False
    docker_host: str | None = None


def image_arch(image: str, docker_host: str | None = None) -> str:
    """The image's architecture as Lambda names it (``docker image inspect``)."""
    arch = _inspect_image(image, docker_host)["Architecture"]
    return {"amd64": "x86_64", "arm64": "arm64"}.get(arch, arch)


def image_environment(image: str, docker_host: str | None = None) -> dict[str, str]:
    """The image's ``ENV`` (which model and backend it serves)."""
    pairs = _inspect_image(image, docker_host).get("Config", {}).get("Env") or []
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def _inspect_image(image: str, docker_host: str | None) -> dict:
    env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    proc = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise TuneError(f"--image {image[:100]}: no such image in the Docker engine; build it first")
    return json.loads(proc.stdout)[0]


def measure_image(
    target: ImageTarget,
    limits: Limits,
    bodies: dict[int, str],
    *,
    cold_starts: int,
    requests: int,
    progress: Progress = lambda step: None,
) -> SizeResult:
    """As :func:`measure_process`, for a container started with ``--cpus`` and ``--memory``."""
    from lambda_ml_serve.local.container import ContainerError, FunctionError, RieContainer

    result = SizeResult(memory_mb=limits.memory_mb, arch=target.arch, emulated=target.emulated)
    events = {rows: _event(body) for rows, body in bodies.items()}
    first = events[min(events)]
    run_args = docker_limits(limits)
    peaks: list[int] = []

    def container() -> RieContainer:
        return RieContainer(target.image, docker_host=target.docker_host, run_args=run_args)

    try:
        for i in range(cold_starts):
            progress(f"{limits.memory_mb} MB: cold start {i + 1} of {cold_starts}")
            started = time.monotonic()
            fn = container()
            try:
                fn.start()
                _check(fn.invoke(first, timeout=TIMEOUT_S))
                result.cold_ms.append((time.monotonic() - started) * 1000)
                result.applied = fn.limits()
                peaks.append(fn.peak_memory() or 0)
            except (FunctionError, OSError) as exc:
                return _container_failed(result, fn, exc)
            finally:
                fn.stop()
        progress(f"{limits.memory_mb} MB: starting the warm container")
        fn = container()
        try:
            fn.start()
            for rows in sorted(events):
                progress(f"{limits.memory_mb} MB: {requests} requests of {rows:,} rows")
                for _ in range(2):  # the first calls of a size warm caches and allocators
                    _check(fn.invoke(events[rows], timeout=TIMEOUT_S))
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    _check(fn.invoke(events[rows], timeout=TIMEOUT_S))
                    times.append((time.perf_counter() - started) * 1000)
                result.warm_ms[rows] = times
            peaks.append(fn.peak_memory() or 0)
            result.applied = fn.limits()
        except (FunctionError, OSError) as exc:
            return _container_failed(result, fn, exc)
        finally:
            fn.stop()
    except ContainerError as exc:
        return _failed(result, "error", str(exc)[:300])
    result.peak_bytes = max(peaks) or None
    return result


def docker_limits(limits: Limits) -> list[str]:
    """Docker's flags for a size: its CPU share, and its memory with no swap beyond it."""
    memory = f"{limits.memory_mb}m"
    cpus = f"{limits.quota_us / PERIOD_US:.5f}".rstrip("0").rstrip(".")  # exactly the cgroup path's quota
    return [f"--cpus={cpus}", f"--memory={memory}", f"--memory-swap={memory}"]


def _container_failed(result: SizeResult, fn: object, exc: Exception) -> SizeResult:
    if getattr(fn, "oom_killed", lambda: False)():
        return _failed(result, "oom", f"killed for exceeding {result.memory_mb} MB")
    return _failed(result, "error", f"{type(exc).__name__}: {str(exc)[:300]}")


def _event(body: str) -> dict:
    return {
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"requestId": "tune", "http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "body": body,
        "isBase64Encoded": False,
    }


def _check(response: object) -> None:
    if not isinstance(response, dict) or response.get("statusCode") != 200:
        status = response.get("statusCode") if isinstance(response, dict) else type(response).__name__
        raise OSError(f"the function answered {status}")
