"""Find a Docker engine and build a rendered context with it, streaming Docker's progress.

BuildKit is used when the client can (it needs the buildx component), the classic builder
otherwise. The classic builder does not set BUILDPLATFORM, so it gets it as a build argument,
and it only builds for the engine's own platform: it refuses to copy from a stage of another one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import takewhile

from lambda_ml_serve.bundling.context import BuildContext
from lambda_ml_serve.errors import BuildError

#: A live engine answers `docker info` at once; an unreachable host would otherwise hang the CLI.
PROBE_TIMEOUT = 10.0
#: Docker reports the kernel's machine name; platforms use Go's architecture names.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
_CLASSIC_STEP = re.compile(r"^Step \d+/\d+ : (.+)$")
_BUILDKIT_FAILED_STEP = re.compile(r"^ > (\[[^\]]+\] .+?):$")
_NOISE = re.compile(r"^( ---> |Removing intermediate container|Sending build context|DEPRECATED:|\s{8,}\S)")
#: How many of Docker's last lines a failure message quotes.
ERROR_LINES = 5


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answered, and how to build with it."""

    #: DOCKER_HOST as used, or "" for the client's default socket.
    host: str
    version: str
    #: The engine's own os/arch, i.e. the build platform.
    platform: str
    buildkit: bool


def find_engine(docker_host: str | None = None, *, timeout: float = PROBE_TIMEOUT) -> Engine | None:
    """The engine at ``docker_host`` (else DOCKER_HOST, else the default socket), or None.

    None when the ``docker`` client is not on PATH or no engine answers within ``timeout``.
    """
    docker = shutil.which("docker")
    if docker is None:
        return None
    env = _environment(docker_host)
    try:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}} {{.OSType}} {{.Architecture}}"],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    fields = probe.stdout.split()
    # Some failures still exit 0 with empty fields (e.g. an HTTP proxy answering for the host).
    if probe.returncode != 0 or len(fields) != 3:
        return None
    version, os_type, machine = fields
    return Engine(
        host=env.get("DOCKER_HOST", ""),
        version=version,
        platform=f"{os_type}/{_ARCHITECTURES.get(machine, machine)}",
        buildkit=_buildkit(docker, env, timeout),
    )


def _buildkit(docker: str, env: dict[str, str], timeout: float) -> bool:
    """DOCKER_BUILDKIT when set; else whether the client has buildx (without it, BuildKit builds refuse)."""
    chosen = env.get("DOCKER_BUILDKIT")
    if chosen is not None:
        return chosen.strip().lower() in ("1", "true")
    try:
        return (
            subprocess.run([docker, "buildx", "version"], env=env, capture_output=True, timeout=timeout).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _environment(docker_host: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return env


def build_image(
    ctx: BuildContext,
    tag: str | None = None,
    *,
    docker_host: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Build ``ctx`` into an image tagged ``tag`` (default ``ctx.default_tag``) for ``ctx.platform``.

    Every line Docker prints goes to ``progress`` (default: stderr). Raises
    :class:`~lambda_ml_serve.errors.BuildError` when no engine answers, when only the classic builder
    is available and ``ctx`` targets another platform, and when the build fails (naming the failing
    step and quoting Docker's error lines).
    """
    tag = tag or ctx.default_tag
    command = ctx.docker_build_command(tag)
    engine = find_engine(docker_host)
    if engine is None:
        where = docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        raise BuildError(
            f"no Docker engine answers at {where} (is the engine running and `docker` on PATH?); "
            f"build elsewhere with: {shlex.join(command)}"
        )
    if not engine.buildkit and engine.platform != ctx.platform:
        raise BuildError(
            f"the classic builder cannot build a {ctx.platform} image on this {engine.platform} engine (it "
            "refuses to copy between stages of different platforms); install Docker's buildx component to "
            f"build with BuildKit, or build on a {ctx.platform} machine: {shlex.join(command)}"
        )
    env = _environment(docker_host)
    env["DOCKER_BUILDKIT"] = "1" if engine.buildkit else "0"
    options = ["--progress=plain"] if engine.buildkit else ["--build-arg", f"BUILDPLATFORM={engine.platform}"]
    command[2:2] = options  # right after `docker build`
    emit = progress or _to_stderr
    recent: deque[str] = deque(maxlen=400)
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            emit(line)
            recent.append(line)
    if process.returncode != 0:
        step, errors = failure_summary(recent)
        raise BuildError(f"docker build of {tag} failed at {step}: {errors}")


def failure_summary(lines: Iterable[str]) -> tuple[str, str]:
    """The failing step and Docker's error lines, from BuildKit's plain output or the classic builder's."""
    lines = list(lines)
    for i in range(len(lines) - 1, -1, -1):
        # BuildKit closes with a block: " > [stage 2/3] RUN ...:", the step's last output, "------".
        failed = _BUILDKIT_FAILED_STEP.match(lines[i])
        if failed:
            block = list(takewhile(lambda line: line != "------", lines[i + 1 :]))
            final = [line for line in lines if line.startswith("ERROR: ")][-1:]
            return f"step `{failed.group(1)}`", _quote([*block, *final])
    steps = [i for i, line in enumerate(lines) if _CLASSIC_STEP.match(line)]
    if steps:
        header = _CLASSIC_STEP.match(lines[steps[-1]])
        assert header is not None
        return f"step `{header.group(1)}`", _quote(lines[steps[-1] + 1 :])
    return "the start of the build", _quote(lines)


def _quote(lines: list[str]) -> str:
    kept = [line.strip() for line in lines if line.strip() and not _NOISE.match(line)]
    return " | ".join(kept[-ERROR_LINES:]) or "Docker printed no error"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
