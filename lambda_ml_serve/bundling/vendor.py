"""Install the serving packages for a target platform into a folder, on the build host.

pip's ``--platform``/``--only-binary`` picks the target's wheels without running anything built for
it, so an arm64 image needs no emulation and ``docker build`` needs no network.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}
#: The official Lambda Python images run on Amazon Linux 2023 (glibc 2.34).
GLIBC_MINORS = range(34, 16, -1)


class VendorError(RuntimeError):
    """pip could not provide the serving packages; the message carries pip's own reason."""


def platform_tags(arch: str) -> list[str]:
    machine = ARCHES[arch]
    return [f"manylinux_2_{minor}_{machine}" for minor in GLIBC_MINORS] + [f"manylinux2014_{machine}"]


@contextmanager
def _source_lock(project: Path) -> Iterator[None]:
    """Serialise wheel builds of one source tree across processes.

    setuptools writes ``build/`` and ``*.egg-info`` inside the tree, so two builds at once (two
    renders, a test run beside a synth) would corrupt each other's wheel.
    """
    key = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"lambda-ml-serve-wheel-{key}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_wheels(projects: Sequence[Path], out_dir: Path) -> list[Path]:
    """Build pure-Python wheels of local projects (the framework, a plugin)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.whl"))
    for project in projects:
        with _source_lock(project):
            _pip(["wheel", "--no-deps", "--wheel-dir", str(out_dir), str(project)])
    return sorted(set(out_dir.glob("*.whl")) - before) or sorted(out_dir.glob("*.whl"))


def install_target(
    target: Path,
    requirements: Sequence[str],
    *,
    arch: str = "x86_64",
    python: str = "3.12",
    find_links: Sequence[Path] = (),
    constraints: Sequence[str] = (),
    no_deps: bool = False,
) -> None:
    """``pip install --target`` the requirements as wheels for ``arch`` and CPython ``python``.

    ``constraints`` (``name==version``) hold every package that is installed, even as a dependency, to
    that version; ``no_deps`` installs the requirements alone.
    """
    args = [
        "install",
        "--target",
        str(target),
        "--only-binary=:all:",
        "--no-compile",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--upgrade",
    ]
    for tag in platform_tags(arch):
        args += ["--platform", tag]
    for folder in find_links:
        args += ["--find-links", str(folder)]
    if no_deps:
        args.append("--no-deps")
    with tempfile.TemporaryDirectory(prefix="lambda-ml-serve-pip-") as work:
        if constraints:
            constraint_file = Path(work) / "constraints.txt"
            constraint_file.write_text("".join(c + "\n" for c in constraints), encoding="utf-8")
            args += ["--constraint", str(constraint_file)]
        _pip([*args, *requirements])
    # Console scripts are of no use in a Lambda image.
    shutil.rmtree(target / "bin", ignore_errors=True)


def _pip(args: list[str]) -> None:
    with tempfile.TemporaryFile(mode="w+") as log:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if result.returncode != 0:
            log.seek(0)
            tail = "\n".join(log.read().strip().splitlines()[-15:])
            raise VendorError(f"pip {args[0]} failed:\n{tail}")
