"""The exact set of packages a model's Lambda image serves from, installed into one folder.

Requirements come from the framework's runtime dependencies, the backend and the model spec; the
framework and the plugin themselves are added without dependencies, from their installed files or,
for an editable install, from a wheel built from their source tree. The backend's serving library
is pinned to the version installed here, the one ``build`` loaded and checked the model with.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib.metadata import (
    Distribution,
    PackageNotFoundError,
    distribution,
    distributions,
    packages_distributions,
    version,
)
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lambda_ml_serve.bundling.steps import step
from lambda_ml_serve.bundling.vendor import build_wheels, install_target
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.plugins import RegisteredModel, Registry
from lambda_ml_serve.spec import ServingLibrary

FRAMEWORK = "lambda-ml-serve"


def framework_requirements() -> list[str]:
    """The framework's own runtime dependencies (no extras: those are tooling)."""
    reqs = [Requirement(r) for r in distribution(FRAMEWORK).requires or ()]
    return [str(r) for r in reqs if r.marker is None or "extra" not in str(r.marker)]


def serving_requirements(model: RegisteredModel, registry: Registry, backend_name: str | None = None) -> list[str]:
    """What the image installs: the framework's runtime, the serving backend's and the model's own needs."""
    backend = registry.backend(backend_name or model.spec.backend)
    reqs = [*framework_requirements(), *backend.requirements, *model.spec.requirements]
    return list(dict.fromkeys(reqs))


def _editable_source(dist: Distribution) -> Path | None:
    """The source tree of an editable install (PEP 660 or setuptools' legacy egg-info), else None."""
    text = dist.read_text("direct_url.json")
    if text:
        info = json.loads(text)
        if info.get("dir_info", {}).get("editable"):
            return Path(info["url"].removeprefix("file://"))
        return None
    base = Path(str(dist.locate_file("")))
    return base if (base / "pyproject.toml").is_file() else None


def _copy_installed(dist: Distribution, target: Path) -> None:
    """Copy an installed distribution's files (as listed in its RECORD) into ``target``."""
    for file in dist.files or ():
        if file.parts[0] == ".." or file.suffix == ".pyc":
            continue  # console scripts live outside site-packages; bytecode is compiled later
        source = Path(str(dist.locate_file(file)))
        dest = target / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


def add_distribution(name: str, target: Path, work_dir: Path, *, arch: str, python: str) -> None:
    """Put an installed distribution into ``target`` without its dependencies."""
    dist = distribution(name)
    source = _editable_source(dist)
    if source is None:
        _copy_installed(dist, target)
        return
    wheels = build_wheels([source], work_dir / "wheels")
    install_target(target, ["--no-deps", *map(str, wheels)], arch=arch, python=python)


@dataclass(frozen=True)
class PinnedLibrary:
    """A backend's serving library as the build checked it and as the image got it."""

    distribution: str
    #: The version installed on the build host, which loaded and checked the model.
    checked_with: str
    #: The version vendored into the image.
    installed: str
    #: The files vendored (relative to site-packages) when only part of the distribution ships, else empty.
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vendored:
    """What :func:`vendor_serving_packages` installed."""

    #: The requirements asked of pip, the serving library pinned.
    requirements: list[str]
    library: PinnedLibrary | None


def checked_version(library: ServingLibrary) -> str:
    """The installed version of ``library.module`` on this host: the library the build predicts with.

    Read from the distribution's metadata (``library.distribution``, else whichever distribution
    provides the module, e.g. ``xgboost`` for ``xgboost-cpu``) without importing the module.
    """
    candidates = [library.distribution, *packages_distributions().get(library.module, ())]
    for name in dict.fromkeys(candidates):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    raise BuildError(
        f"the build checks the model with {library.module}, which is not installed here; "
        f"pip install {library.distribution}"
    )


def pin_library(requirements: list[str], library: ServingLibrary, pinned: str) -> list[str]:
    """``requirements`` with the library's own ones replaced by ``distribution==pinned``.

    Fails when a requirement on the library excludes that version: the image could not carry what was checked.
    """
    name = canonicalize_name(library.distribution)
    kept = []
    for text in requirements:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) != name:
            kept.append(text)
        elif not requirement.specifier.contains(pinned, prereleases=True):
            raise BuildError(
                f"the build checks the model with {library.distribution} {pinned}, installed here, but the "
                f"image requires {text}; install a version that satisfies it (pip install '{text}')"
            )
    return [*kept, f"{library.distribution}=={pinned}"]


def _version_in(folder: Path, name: str) -> str:
    """The version of distribution ``name`` installed in ``folder``."""
    wanted = canonicalize_name(name)
    return next(d.version for d in distributions(path=[str(folder)]) if canonicalize_name(d.metadata["Name"]) == wanted)


def _vendor_library_files(
    library: ServingLibrary, pin: str, target: Path, work_dir: Path, *, arch: str, python: str
) -> tuple[str, tuple[str, ...]]:
    """Install ``pin`` alone into a scratch folder and copy only ``library.files`` into ``target``.

    Returns the version installed and the files copied.
    """
    scratch = work_dir / "serving-library"
    install_target(scratch, [pin], arch=arch, python=python, no_deps=True)
    copied: list[str] = []
    for pattern in library.files:
        matches = sorted(p for p in scratch.glob(pattern) if p.is_file())
        if not matches:
            raise BuildError(
                f"{pin} for {arch} has no file matching {pattern!r}; the backend cannot serve with this "
                f"release: install another {library.distribution} version on this host"
            )
        for source in matches:
            relative = source.relative_to(scratch)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
            copied.append(relative.as_posix())
    return _version_in(scratch, library.distribution), tuple(copied)


def _vendor_pinned(
    library: ServingLibrary, requirements: list[str], target: Path, work_dir: Path, *, arch: str, python: str
) -> tuple[list[str], PinnedLibrary]:
    """Install ``requirements`` with the library pinned to this host's version (only its files, if it says so)."""
    checked = checked_version(library)
    requirements = pin_library(requirements, library, checked)
    pin = requirements[-1]
    if library.files:
        installed, files = _vendor_library_files(library, pin, target, work_dir, arch=arch, python=python)
        # The constraint keeps the library at the pin should another requirement pull all of it in.
        install_target(target, requirements[:-1], arch=arch, python=python, constraints=[pin])
    else:
        install_target(target, requirements, arch=arch, python=python)
        installed, files = _version_in(target, library.distribution), ()
    if installed != checked:
        raise BuildError(
            f"pip installed {library.distribution} {installed} but the build checked with {checked}; "
            "the image would not serve what was checked"
        )
    return requirements, PinnedLibrary(library.distribution, checked, installed, files)


def vendor_serving_packages(
    model: RegisteredModel,
    registry: Registry,
    target: Path,
    *,
    arch: str = "x86_64",
    python: str = "3.12",
    work_dir: Path,
    backend: str | None = None,
) -> Vendored:
    """Install everything ``model`` needs at run time into ``target``; return what was asked and pinned."""
    step(f"resolving and installing wheels for {arch}, CPython {python}")
    requirements = serving_requirements(model, registry, backend)
    library: ServingLibrary | None = getattr(registry.backend(backend or model.spec.backend), "serving_library", None)
    pinned = None
    if library is None:
        install_target(target, requirements, arch=arch, python=python)
    else:
        requirements, pinned = _vendor_pinned(library, requirements, target, work_dir, arch=arch, python=python)
    step("installing lambda-ml-serve and the plugin")
    for name in dict.fromkeys([FRAMEWORK, model.plugin.distribution]):
        add_distribution(name, target, work_dir, arch=arch, python=python)
    return Vendored(requirements, pinned)
