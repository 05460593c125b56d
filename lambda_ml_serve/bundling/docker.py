"""Find a Docker engine and a client that builds with its BuildKit, and build a rendered context.

BuildKit builds for any platform: the Dockerfile's first stage runs on the build platform and the
final stage only copies, so an arm64 image builds on an x86_64 host without emulation. A client
uses the engine's BuildKit either through the buildx component or, for Docker clients before 23.0
(e.g. Debian 12's ``docker.io`` 20.10), natively with ``DOCKER_BUILDKIT=1``; newer clients without
buildx cannot. So every ``docker`` on PATH is considered, in PATH order, and the first that can is
used. With none, the classic builder builds for the engine's own platform only (it refuses to copy
from a stage of another one), and the build says so in one line rather than setting
``DOCKER_BUILDKIT=0`` silently.
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

from lambda_ml_serve.bundling import steps
from lambda_ml_serve.bundling.context import BYTECODE_STAGE_LABEL, BuildContext
from lambda_ml_serve.errors import BuildError

#: A live engine answers `docker info` at once; an unreachable host would otherwise hang the CLI.
PROBE_TIMEOUT = 10.0
#: Docker reports the kernel's machine name; platforms use Go's architecture names.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
#: Docker 23.0 made BuildKit the default and moved it out of the client into buildx.
_FIRST_CLIENT_WITHOUT_BUILDKIT = (23, 0)
_CLASSIC_STEP = re.compile(r"^Step \d+/\d+ : (.+)$")
_BUILDKIT_FAILED_STEP = re.compile(r"^ > (\[[^\]]+\] .+?):$")
_BUILDKIT_STEP_ERROR = re.compile(r"^#\d+ ERROR: ")
_NOISE = re.compile(r"^( ---> |Removing intermediate container|Sending build context|DEPRECATED:|\s{8,}\S)")
#: What BuildKit or the engine print when a FROM image is neither local nor pullable.
_BASE_UNAVAILABLE = re.compile(
    r"failed to resolve source metadata|pull access denied|failed to do request|no such host|"
    r"dial tcp|i/o timeout|manifest unknown|not found: manifest|no match for platform",
    re.IGNORECASE,
)
#: How many of Docker's last lines a failure message quotes.
ERROR_LINES = 5
#: How much of each quoted line is kept (its end).
MAX_LINE_CHARS = 400
#: Why BuildKit is out of reach when no client on PATH can use it.
NO_BUILDKIT_CLIENT = (
    "no docker client on PATH can use the engine's BuildKit: install the buildx component "
    "(Debian: docker-buildx) or put a Docker client before 23.0 on PATH (Debian 12: docker.io's /usr/bin/docker)"
)


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answered, and how to build with it."""

    #: DOCKER_HOST as used, or "" for the client's default socket.
    host: str
    version: str
    #: The engine's own os/arch, i.e. the build platform.
    platform: str
    buildkit: bool
    #: The docker client that builds: the first on PATH that can use BuildKit, else the first.
    client: str = "docker"
    #: With the classic builder, why BuildKit is not used ("" with BuildKit).
    classic_reason: str = ""


def docker_clients() -> list[str]:
    """Every ``docker`` executable on PATH, in PATH order, each once."""
    found: dict[str, str] = {}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("docker", path=folder) if folder else None
        if candidate:
            found.setdefault(os.path.realpath(candidate), candidate)
    return list(found.values())


def find_engine(docker_host: str | None = None, *, timeout: float = PROBE_TIMEOUT) -> Engine | None:
    """The engine at ``docker_host`` (else DOCKER_HOST, else the default socket), or None.

    None when no ``docker`` client is on PATH or no engine answers within ``timeout``.
    """
    clients = docker_clients()
    if not clients:
        return None
    env = _environment(docker_host)
    try:
        probe = subprocess.run(
            [clients[0], "info", "--format", "{{.ServerVersion}} {{.OSType}} {{.Architecture}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    fields = probe.stdout.split()
    # Some failures still exit 0 with empty fields (e.g. an HTTP proxy answering for the host).
    if probe.returncode != 0 or len(fields) != 3:
        return None
    version, os_type, machine = fields
    client, buildkit, reason = _builder(clients, env, timeout)
    return Engine(
        host=env.get("DOCKER_HOST", ""),
        version=version,
        platform=f"{os_type}/{_ARCHITECTURES.get(machine, machine)}",
        buildkit=buildkit,
        client=client,
        classic_reason=reason,
    )


def _builder(clients: list[str], env: dict[str, str], timeout: float) -> tuple[str, bool, str]:
    """(client, BuildKit?, why not): honours DOCKER_BUILDKIT=0, else the first client that can use BuildKit."""
    chosen = env.get("DOCKER_BUILDKIT", "").strip().lower()
    if chosen in ("0", "false"):
        return clients[0], False, "DOCKER_BUILDKIT=0 is set"
    for client in clients:
        if _has_buildx(client, env, timeout) or _client_version(client, env, timeout) < _FIRST_CLIENT_WITHOUT_BUILDKIT:
            return client, True, ""
    return clients[0], False, NO_BUILDKIT_CLIENT


def _has_buildx(client: str, env: dict[str, str], timeout: float) -> bool:
    try:
        return (
            subprocess.run([client, "buildx", "version"], env=env, capture_output=True, timeout=timeout).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _client_version(client: str, env: dict[str, str], timeout: float) -> tuple[int, int]:
    """The client's (major, minor); (999, 0) when unknown, i.e. assumed too new for built-in BuildKit."""
    try:
        result = subprocess.run(
            [client, "version", "--format", "{{.Client.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return (999, 0)
    found = re.match(r"(\d+)\.(\d+)", result.stdout.strip())
    return (int(found.group(1)), int(found.group(2))) if found else (999, 0)


def _environment(docker_host: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return env


def build_invocation(engine: Engine, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """``command`` (a ``docker build ...`` line) as run with ``engine``: its client, options and environment.

    ``--network none``: nothing in a build needs the network, and without it every RUN on an engine
    that does not forward IPv4 prints a warning.
    """
    env = dict(os.environ)
    if engine.host:
        env["DOCKER_HOST"] = engine.host
    if engine.buildkit:
        env["DOCKER_BUILDKIT"] = "1"  # a 20.10 client's built-in BuildKit; buildx clients ignore it
        options = ["--progress=plain", "--network", "none"]
    else:
        if engine.classic_reason == NO_BUILDKIT_CLIENT:
            env["DOCKER_BUILDKIT"] = "0"  # clients from 23.0 on refuse to build otherwise
        options = ["--network", "none", "--force-rm", "--build-arg", f"BUILDPLATFORM={engine.platform}"]
    return [engine.client, *command[1:2], *options, *command[2:]], env


def build_image(
    ctx: BuildContext,
    tag: str | None = None,
    *,
    docker_host: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Build ``ctx`` into an image tagged ``tag`` (default ``ctx.default_tag``) for ``ctx.platform``.

    Every line Docker prints goes to ``progress`` (default: stderr), after one line saying why when
    the classic builder is used. Raises :class:`~lambda_ml_serve.errors.BuildError` when no engine
    answers, when only the classic builder is available and ``ctx`` targets another platform, when a
    base image is neither in the engine's store nor pullable (naming it and ``--base-image``), and
    when the build fails (naming the failing step and quoting Docker's error lines).
    """
    tag = tag or ctx.default_tag
    plain = ctx.docker_build_command(tag)
    engine = find_engine(docker_host)
    if engine is None:
        where = docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
        raise BuildError(
            f"no Docker engine answers at {where} (is the engine running and `docker` on PATH?); "
            f"build elsewhere with: {shlex.join(plain)}"
        )
    if not engine.buildkit and engine.platform != ctx.platform:
        raise BuildError(
            f"a {ctx.platform} image on this {engine.platform} engine needs BuildKit, but {engine.classic_reason}; "
            f"or build on a {ctx.platform} machine: {shlex.join(plain)}"
        )
    emit = progress or _to_stderr
    if not engine.buildkit:
        emit(f"lambda-ml-serve: building with the classic builder: {engine.classic_reason}")
    command, env = build_invocation(engine, plain)
    steps.step(f"docker build {tag}")
    recent: deque[str] = deque(maxlen=400)
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            emit(line)
            recent.append(line)
    if not engine.buildkit:
        _prune_bytecode_stages(engine, env)
    if process.returncode != 0:
        step, errors = failure_summary(recent)
        missing = _missing_bases(engine, ctx, env) if _BASE_UNAVAILABLE.search("\n".join(recent)) else ""
        if missing:
            raise BuildError(
                f"docker build of {tag} failed: {missing}, and it could not be pulled ({errors}); "
                "docker pull or docker load it, or pass --base-image IMAGE"
            )
        raise BuildError(f"docker build of {tag} failed at {step}: {errors}")


def image_platform(engine: Engine, image: str, env: dict[str, str] | None = None) -> str | None:
    """The os/arch of ``image`` in the engine's image store, or None when it is not there."""
    result = subprocess.run(
        [engine.client, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", image],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def _missing_bases(engine: Engine, ctx: BuildContext, env: dict[str, str]) -> str:
    """Which base image the engine lacks for which platform (the store keeps one platform per tag)."""
    wanted = {(ctx.build_base_image, engine.platform), (ctx.base_image, ctx.platform)}
    missing = []
    for image, platform in sorted(wanted):
        have = image_platform(engine, image, env)
        if have != platform:
            holds = f" (it holds {have})" if have else ""
            missing.append(f"the base image {image} for {platform} is not in the engine's image store{holds}")
    return "; ".join(missing)


def _prune_bytecode_stages(engine: Engine, env: dict[str, str]) -> None:
    """The classic builder keeps each finished stage as an untagged image; the bytecode stage is of no further use."""
    subprocess.run(
        [engine.client, "image", "prune", "--force", "--filter", f"label={BYTECODE_STAGE_LABEL}"],
        env=env,
        capture_output=True,
        timeout=120,
    )


def failure_summary(lines: Iterable[str]) -> tuple[str, str]:
    """The failing step and Docker's error lines, from BuildKit's plain output or the classic builder's."""
    lines = list(lines)
    for i in range(len(lines) - 1, -1, -1):
        # BuildKit closes with a block: " > [stage 2/3] RUN ...:", the step's last output, "------".
        failed = _BUILDKIT_FAILED_STEP.match(lines[i])
        if failed:
            block = list(takewhile(lambda line: line != "------", lines[i + 1 :]))
            final = [line for line in lines if line.startswith("ERROR: ")][-1:]
            if not final:
                # A client before buildx closes with its own unprefixed line, e.g. "failed to solve with
                # frontend dockerfile.v0: ... lookup public.ecr.aws ...: no such host".
                final = [line for line in lines[i + len(block) + 2 :] if line.strip()][-1:]
            if not block and not final:
                final = [line for line in lines if _BUILDKIT_STEP_ERROR.match(line)][-1:]
            return f"step `{failed.group(1)}`", _quote([*block, *final])
    steps = [i for i, line in enumerate(lines) if _CLASSIC_STEP.match(line)]
    if steps:
        header = _CLASSIC_STEP.match(lines[steps[-1]])
        assert header is not None
        return f"step `{header.group(1)}`", _quote(lines[steps[-1] + 1 :])
    return "the start of the build", _quote(lines)


def _quote(lines: list[str]) -> str:
    kept = [line.strip() for line in lines if line.strip() and not _NOISE.match(line)]
    # The end of a long line is where Docker says what went wrong ("...: no such host").
    kept = [line if len(line) <= MAX_LINE_CHARS else "..." + line[3 - MAX_LINE_CHARS :] for line in kept]
    return " | ".join(kept[-ERROR_LINES:]) or "Docker printed no error"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
