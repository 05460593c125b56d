"""The exact set of packages a model's Lambda image serves from, installed into one folder.

Requirements come from the framework's runtime dependencies, the backend and the model spec; the
framework and the plugin themselves are added without dependencies, from their installed files or,
for an editable install, from a wheel built from their source tree.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import Distribution, distribution
from pathlib import Path

from packaging.requirements import Requirement

from lambda_ml_serve.bundling.vendor import build_wheels, install_target
from lambda_ml_serve.plugins import RegisteredModel, Registry

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


def vendor_serving_packages(
    model: RegisteredModel, registry: Registry, target: Path, *, arch: str = "x86_64",
    python: str = "3.12", work_dir: Path, backend: str | None = None,
) -> list[str]:  # fmt: skip
    """Install everything ``model`` needs at run time into ``target``; return the requirements used."""
    requirements = serving_requirements(model, registry, backend)
    install_target(target, requirements, arch=arch, python=python)
    for name in dict.fromkeys([FRAMEWORK, model.plugin.distribution]):
        add_distribution(name, target, work_dir, arch=arch, python=python)
    return requirements
