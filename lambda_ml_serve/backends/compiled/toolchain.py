"""Build time: the C compilers for each Lambda target, and running them on the generated kernel."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lambda_ml_serve.backends.compiled.runtime import TARGETS, Target
from lambda_ml_serve.errors import CompileError

#: -O2: the kernel is short loops over tables, which -O2 keeps branch-free (conditional moves) and
#: unrolls; -O3 measured no faster. -ffp-contract=off keeps arm64 from fusing float operations, so a
#: host build computes exactly what the target build does. -s drops the symbol table; the exported
#: functions stay in the dynamic one. The rest keeps the library a function of the C source alone:
#: a fixed seed for the names gcc would randomise, and no build folder in the output (the source is
#: written to a temporary folder; ``-ffile-prefix-map`` for it is added per job).
COMMON_FLAGS = ("-O2", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-s", "-frandom-seed=lambda-ml-serve")


def target(arch: str) -> Target:
    """The Lambda target named ``arch``; refuses another."""
    if arch not in TARGETS:
        raise CompileError(f"unknown architecture {arch!r}; the compiled backend builds for {' or '.join(TARGETS)}")
    return TARGETS[arch]


def host_target() -> Target | None:
    """The target this machine can load libraries of, if it is one (Linux on x86_64 or arm64)."""
    if sys.platform != "linux":
        return None
    return next((t for t in TARGETS.values() if t.machine == platform.machine()), None)


@dataclass(frozen=True)
class Compiler:
    """A C compiler command, with where it came from for error messages."""

    argv: tuple[str, ...]
    #: The environment variable that chooses it (``CC``, or ``CC_aarch64_linux_gnu`` for a cross build).
    variable: str
    #: What it builds for: a Lambda target, or None for this machine (the parity check's build).
    target: Target | None

    def version(self) -> str:
        import subprocess

        result = subprocess.run([*self.argv, "--version"], capture_output=True, text=True, check=False)
        return (result.stdout.splitlines() or ["unknown"])[0]


def find_compiler(target: Target | None) -> Compiler:
    """The compiler for ``target`` (None: this machine's own, for the parity build).

    The build machine's architecture uses ``$CC`` (default ``gcc``); another one uses Debian's cross
    compiler ``<triple>-gcc``, or ``$CC_<triple>`` with underscores (e.g. ``CC_aarch64_linux_gnu``).
    """
    if target is None or target == host_target():
        variable, default, package = "CC", "gcc", "gcc"
    else:
        variable, default, package = (
            f"CC_{target.triple.replace('-', '_')}",
            f"{target.triple}-gcc",
            target.cross_package,
        )
    import shlex
    import shutil

    command = os.environ.get(variable) or default
    argv = tuple(shlex.split(command))
    if not argv or shutil.which(argv[0]) is None:
        named = f"{variable}={command!r}" if os.environ.get(variable) else repr(default)
        what = f"the {target.arch} target" if target is not None else "this machine"
        raise CompileError(
            f"no C compiler for {what}: {named} is not found; install it (Debian/Ubuntu: "
            f"apt-get install {package}) or set {variable} to a compiler that builds for it"
        )
    return Compiler(argv, variable, target)


def compile_all(jobs: Sequence[tuple[Compiler, Path, Path]]) -> None:
    """Run one compiler per (compiler, C source, output library) job, all at once, and wait for every one.

    Each compiler gets the common flags and its target's baseline flags (none for this machine's
    own build, which only the parity gate and the layout timing load).
    """
    import subprocess

    running = []
    for compiler, source, output in jobs:
        flags = compiler.target.flags if compiler.target is not None else ()
        prefix_map = f"-ffile-prefix-map={source.parent}=."
        argv = [*compiler.argv, *COMMON_FLAGS, *flags, prefix_map, "-o", str(output), str(source), "-lm"]
        # LC_ALL=C: the compiler's messages (quoted in errors) do not depend on the user's locale.
        env = {**os.environ, "LC_ALL": "C"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        running.append((compiler, proc))
    finished = [(compiler, proc, proc.communicate()[0]) for compiler, proc in running]
    for compiler, proc, output in finished:
        if proc.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            wanted = compiler.target.triple if compiler.target else "this machine"
            raise CompileError(
                f"{compiler.argv[0]} failed (exit {proc.returncode}) on the generated C; is {compiler.variable} "
                f"a C compiler for {wanted}?\n{tail}"
            )
