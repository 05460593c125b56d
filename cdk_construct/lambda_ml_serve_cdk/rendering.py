"""Render a model's Docker build context through the framework, and reuse it while nothing changed.

Rendering vendors a couple of hundred MB of wheels with pip, and every ``cdk synth`` (and every
``cdk deploy``, which synthesises first) constructs the app again. So the rendered folder is kept
next to ``cdk.out`` with a stamp file beside it that records what it was rendered from: the model,
the target platform, the base image, the serving requirements and a digest of the framework's and
the plugin's installed files. A synth whose inputs match the stamp reuses the folder as it is, which
also keeps the image asset's hash, so CDK neither rebuilds nor re-uploads the image.

Requirements without an exact pin (``numpy``) are resolved when the folder is rendered; pass
``force=True`` (the construct's ``force_render``) or delete the folder to pick up newer releases.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import lambda_ml_serve
from lambda_ml_serve.bundling.context import render_build_context
from lambda_ml_serve.bundling.deployment_zip import build_zip
from lambda_ml_serve.bundling.serving import serving_requirements
from lambda_ml_serve.plugins import RegisteredModel, Registry, get_registry

#: Bumped when the stamp's meaning changes, so older stamps are not trusted.
STAMP_FORMAT = 1
STAMP_SUFFIX = ".render.json"


@dataclass(frozen=True)
class RenderedContext:
    """A rendered build context on disk, ready for ``DockerImageCode.from_image_asset``."""

    path: Path
    dockerfile: Path
    model: str
    version: str
    arch: str
    #: Docker platform of the image, ``linux/amd64`` or ``linux/arm64``.
    platform: str
    #: True when an earlier render with the same inputs was reused.
    reused: bool

    @property
    def build_info(self) -> dict[str, Any]:
        """The context's ``build-info.json``: what it was built from, and the example answers."""
        return json.loads((self.path / "build-info.json").read_text(encoding="utf-8"))


def stamp_path(context_dir: Path) -> Path:
    """Where the stamp for ``context_dir`` lives: beside it, so it never enters the image."""
    return context_dir.with_name(context_dir.name + STAMP_SUFFIX)


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if "__pycache__" in file.parts or file.suffix == ".pyc":
            continue  # bytecode changes with every import, not with the code
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _package_dir(package: str) -> Path:
    return Path(str(resources.files(package)))


def render_inputs(
    model: RegisteredModel,
    registry: Registry,
    *,
    arch: str,
    python: str,
    base_image: str | None,
    artifact: Path | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """Everything a rendered context depends on, as JSON-serialisable values."""
    spec = model.spec
    inputs: dict[str, Any] = {}
    if artifact is not None:
        # Another model file: a render of a different file (or of a changed one) is not reusable.
        inputs["artifact"] = {"path": str(artifact), "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest()}
    # The installed files, not only versions: an editable install changes without a version bump.
    return inputs | {
        "model": spec.name,
        "model_version": spec.version,
        "plugin": f"{model.plugin.distribution} {model.plugin.version}",
        "framework": lambda_ml_serve.__version__,
        "arch": arch,
        "python": python,
        "base_image": base_image,
        "backend": backend or spec.backend,
        "requirements": serving_requirements(model, registry, backend),
        "framework_files": _tree_digest(_package_dir("lambda_ml_serve")),
        "plugin_files": _tree_digest(_package_dir(spec.package)),
    }


def fingerprint(inputs: dict[str, Any]) -> str:
    """A digest of :func:`render_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _matching_stamp(target: Path, expected: str) -> dict[str, Any] | None:
    """The stamp beside ``target`` when it records a render of the ``expected`` inputs, else None."""
    try:
        stamp = json.loads(stamp_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stamp.get("format") != STAMP_FORMAT or stamp.get("fingerprint") != expected:
        return None
    return stamp


def _write_stamp(target: Path, record: dict[str, Any]) -> None:
    """Record what ``target`` was rendered from, under a temporary name renamed into place."""
    stamp = stamp_path(target)
    written = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    written.write_text(
        json.dumps({"format": STAMP_FORMAT, **record}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    written.replace(stamp)


def _reusable(context_dir: Path, model: str, arch: str, expected: str) -> RenderedContext | None:
    stamp = _matching_stamp(context_dir, expected)
    if stamp is None:
        return None
    dockerfile = context_dir / stamp["dockerfile"]
    if not dockerfile.is_file():
        return None  # the folder was deleted or emptied by hand after the stamp was written
    return RenderedContext(context_dir, dockerfile, model, stamp["version"], arch, stamp["platform"], reused=True)


def ensure_build_context(
    model: str,
    context_dir: Path,
    *,
    arch: str = "x86_64",
    python: str = "3.12",
    base_image: str | None = None,
    force: bool = False,
    registry: Registry | None = None,
    artifact: Path | None = None,
    backend: str | None = None,
) -> RenderedContext:
    """Render ``model``'s build context into ``context_dir``, or reuse the render already there.

    ``artifact`` serves another model file than the plugin's (``build --artifact``).
    The render is the one ``lambda-ml-serve build`` does (``render_build_context``), which builds
    the new context aside and replaces ``context_dir`` only once it is complete. Its errors
    (:class:`~lambda_ml_serve.errors.LambdaMLServeError`) pass through.
    """
    registry = registry or get_registry()
    registered = registry.model(model)
    context_dir = Path(context_dir).resolve()
    inputs = render_inputs(
        registered, registry, arch=arch, python=python, base_image=base_image, artifact=artifact, backend=backend
    )
    expected = fingerprint(inputs)
    if not force and (found := _reusable(context_dir, model, arch, expected)):
        return found

    stamp_path(context_dir).unlink(missing_ok=True)  # until the new render is complete, nothing is up to date
    # force=False: the framework replaces a folder it rendered before, but refuses to wipe a
    # non-empty folder of anything else that context_dir might have been pointed at.
    built = render_build_context(
        model,
        context_dir,
        arch=arch,
        python=python,
        base_image=base_image,
        force=False,
        registry=registry,
        artifact=artifact,
        backend=backend,
    )
    dockerfile = Path(built.dockerfile).resolve().relative_to(Path(built.path).resolve())

    record = {
        "fingerprint": expected,
        "dockerfile": dockerfile.as_posix(),
        "platform": built.platform,
        "version": built.version,
        "inputs": inputs,
    }
    _write_stamp(context_dir, record)
    return RenderedContext(
        context_dir, context_dir / dockerfile, model, built.version, arch, built.platform, reused=False
    )


@dataclass(frozen=True)
class RenderedZip:
    """A deployment zip on disk, ready for ``Code.from_asset``."""

    path: Path
    model: str
    version: str
    arch: str
    #: The managed runtime it was built for, e.g. ``python3.12``.
    runtime: str
    handler: str
    #: True when an earlier build with the same inputs was reused.
    reused: bool
    #: The example rows and the source model's answers to them, as ``build`` recorded them.
    example: dict[str, Any] | None = None


def ensure_deployment_zip(
    model: str,
    zip_path: Path,
    *,
    arch: str = "x86_64",
    python: str = "3.12",
    backend: str | None = None,
    force: bool = False,
    registry: Registry | None = None,
    artifact: Path | None = None,
) -> RenderedZip:
    """Write ``model``'s deployment zip to ``zip_path`` (``build --package zip``), or reuse the one there.

    Reused on the same terms as :func:`ensure_build_context`: a stamp beside the zip records the
    inputs it was built from. The framework's errors pass through.
    """
    registry = registry or get_registry()
    registered = registry.model(model)
    zip_path = Path(zip_path).resolve()
    inputs = {
        **render_inputs(
            registered, registry, arch=arch, python=python, base_image=None, artifact=artifact, backend=backend
        ),
        "package": "zip",
    }
    expected = fingerprint(inputs)
    found = _matching_stamp(zip_path, expected) if not force and zip_path.is_file() else None
    if found is not None:
        return RenderedZip(
            zip_path,
            model,
            found["version"],
            arch,
            found["runtime"],
            found["handler"],
            reused=True,
            example=found.get("example"),
        )
    stamp_path(zip_path).unlink(missing_ok=True)
    built = build_zip(model, zip_path, arch=arch, python=python, backend=backend, registry=registry, artifact=artifact)
    record = {
        "fingerprint": expected,
        "version": built.version,
        "runtime": built.runtime,
        "handler": built.handler,
        "inputs": inputs,
        "example": built.example,
    }
    _write_stamp(zip_path, record)
    return RenderedZip(
        zip_path, model, built.version, arch, built.runtime, built.handler, reused=False, example=built.example
    )
