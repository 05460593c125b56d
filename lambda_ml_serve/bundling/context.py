"""Render one model's Docker build context: every check first, then all files at once.

The context is self-contained: a Dockerfile rendered from ``templates/docker``, ``site-packages/``
with everything the function imports (installed on this host from the target's wheels), the
artifact as the backend prepared it, and ``requirements.txt``/``build-info.json`` for people.
It is rendered into a temporary folder next to the output and renamed into place, so a failure
never leaves a half-written context behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, distribution, distributions
from pathlib import Path
from typing import Any

import jinja2
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from lambda_ml_serve import __version__
from lambda_ml_serve.bundling.serving import FRAMEWORK, Vendored, vendor_serving_packages
from lambda_ml_serve.bundling.steps import step
from lambda_ml_serve.bundling.vendor import VendorError
from lambda_ml_serve.errors import BuildError, LambdaMLServeError, ModelLoadError
from lambda_ml_serve.plugins import RegisteredModel, Registry, get_registry
from lambda_ml_serve.runtime.app import load_predictor
from lambda_ml_serve.runtime.errors import ApiError
from lambda_ml_serve.runtime.manifest import MANIFEST_NAME, Manifest
from lambda_ml_serve.runtime.validation import RowValidator
from lambda_ml_serve.spec import RESPONSES, Predictor, input_typecode

#: Lambda's architecture names and the Docker platforms they run on.
PLATFORMS = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}
#: Python versions AWS publishes Lambda base images and managed runtimes for.
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
#: The oldest Python that SnapStart serves, and every serving package ships wheels for it.
DEFAULT_PYTHON = "3.12"
DEFAULT_BASE_IMAGE = "public.ecr.aws/lambda/python:{python}"
#: Marks the Dockerfile's bytecode stage, so the untagged image the classic builder keeps of it can be pruned.
BYTECODE_STAGE_LABEL = "org.lambda-ml-serve.stage=bytecode"
#: This machine's architecture under Lambda's name (None when Lambda has no such architecture).
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower()
)
#: The framework's own output folder (relative to the working directory): never setuptools' ``build/``.
OUTPUT_ROOT = Path(".lambda-ml-serve")
SITE_PACKAGES = "site-packages"
ARTIFACTS = "artifacts"
#: Written last into every context; a folder holding it is one this command may replace.
BUILD_INFO = "build-info.json"
GENERATOR = "lambda-ml-serve build"
TEMPLATES = "templates/docker"

#: Directories no serving path imports, by name anywhere inside a package: test suites are a
#: tenth of numpy and scipy. (``numpy/testing`` stays: numpy exposes it as public API.)
UNUSED_DIR_NAMES = frozenset({"tests", "__pycache__"})
#: ... and by path: helpers only the package's own test suite imports, and the framework's templates
#: (build-time tooling; the plugin project template's .py files are Jinja, which compileall rejects).
UNUSED_DIR_PATHS = frozenset({"xgboost/testing", "lambda_ml_serve/templates"})

# Values that end up unquoted in the Dockerfile (ENV, FROM) or in an image tag.
_WORD = re.compile(r"^[\w.+-]+$", re.ASCII)
_IMAGE = re.compile(r"^\S+$")


@dataclass(frozen=True)
class BuildContext:
    """A rendered build context and what it was rendered for."""

    path: Path
    dockerfile: Path
    model: str
    version: str
    #: The plugin's entry-point name: the image loads only this plugin.
    plugin: str
    arch: str
    platform: str
    python: str
    #: The backend the image serves with; the image sets LAMBDA_ML_SERVE_BACKEND when it is not the spec's.
    backend: str
    base_image: str
    default_tag: str
    #: The prepared artifact inside the context (the image sets LAMBDA_ML_SERVE_ARTIFACT to it).
    artifact: Path
    #: ``name==version`` of every distribution in site-packages.
    requirements: tuple[str, ...]
    #: The answer shape the image sets (LAMBDA_ML_SERVE_RESPONSE), when not the spec's.
    response: str | None = None
    #: Whether the image serves GET /docs (LAMBDA_ML_SERVE_DOCS=1).
    docs: bool = False
    #: The image the bytecode stage runs on the build platform (``base_image`` unless told otherwise).
    build_base_image: str = ""

    def __post_init__(self) -> None:
        if not self.build_base_image:
            object.__setattr__(self, "build_base_image", self.base_image)

    @property
    def site_packages(self) -> Path:
        return self.path / SITE_PACKAGES

    def docker_build_command(self, tag: str | None = None) -> list[str]:
        """The ``docker build`` command line for this context (``tag`` defaults to ``default_tag``)."""
        return ["docker", "build", "--platform", self.platform, "-t", tag or self.default_tag, str(self.path)]


def default_output(model: str, arch: str, backend: str, package: str = "image") -> Path:
    """``.lambda-ml-serve/MODEL-BACKEND-ARCH`` (a context folder), with ``.zip`` for a deployment zip.

    One per model, backend and architecture, so building one never replaces another.
    """
    name = f"{model}-{backend}-{arch}"
    return OUTPUT_ROOT / (f"{name}.zip" if package == "zip" else name)


def check_target(arch: str, python: str) -> None:
    """Reject an architecture or Python version that has no Lambda base image."""
    if arch not in PLATFORMS:
        raise BuildError(f"unknown architecture {arch!r}; Lambda runs x86_64 or arm64")
    if python not in PYTHONS:
        raise BuildError(f"Python {python!r} has no Lambda base image; choose one of {', '.join(PYTHONS)}")


def render_build_context(
    model: str,
    output: Path,
    *,
    arch: str = "x86_64",
    python: str = DEFAULT_PYTHON,
    base_image: str | None = None,
    force: bool = False,
    registry: Registry | None = None,
    backend: str | None = None,
    response: str | None = None,
    docs: bool = False,
    artifact: Path | None = None,
    build_base_image: str | None = None,
) -> BuildContext:
    """Check ``model`` and render its build context into ``output``.

    Nothing is written until every check passed: the model loads and matches its schema, the
    target exists, the plugin is an installed distribution that supports ``python``, and
    ``output`` is empty or a context this function rendered before (``force`` replaces any
    folder). ``backend`` serves the artifact with another backend than the spec's (e.g. ``compiled``
    for an XGBoost model); ``artifact`` replaces the plugin's model file. ``response`` sets the answer
    shape (``predictions``: the bare array) and ``docs`` serves the docs page. ``build_base_image`` is
    the image of the build platform the bytecode stage runs on (default: ``base_image``; a local image
    store keeps one platform per tag, so an arm64 build from local bases names the host's one here).
    Raises :class:`~lambda_ml_serve.errors.LambdaMLServeError` subclasses.
    """
    step("checking the model")
    check_target(arch, python)
    if response is not None and response not in RESPONSES:
        raise BuildError(f"unknown response shape {response!r}; choose one of {', '.join(RESPONSES)}")
    registry = registry or get_registry()
    registered = registry.model(model)
    spec = registered.spec
    backend = backend or spec.backend
    if backend not in registry.backends:
        known = ", ".join(sorted(registry.backends))
        raise BuildError(f"unknown backend {backend!r}; installed backends: {known}")
    source = _source_artifact(registered, artifact)
    try:
        predictor = load_predictor(registered, registry, source)
    except ModelLoadError:
        if artifact is None or backend == spec.backend:
            raise
        # A file given for another backend is in that backend's own format (a LightGBM text model
        # served with --backend lightgbm): it is its own original.
        predictor = load_predictor(registered, registry, source, backend)
    _check_image_values(registered, {"--base-image": base_image, "--build-base-image": build_base_image})
    _check_distributions(registered, python)
    output = Path(output).absolute()
    _check_output(output, force)

    base = base_image or DEFAULT_BASE_IMAGE.format(python=python)
    created = _make_folders(output.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would surprise whoever builds from it
        prepared = _prepare_artifact(registered, registry, predictor, source, staging / ARTIFACTS, arch, backend)
        _write_manifest(registered, registry, backend, prepared)
        context = BuildContext(
            path=output,
            dockerfile=output / "Dockerfile",
            model=spec.name,
            version=spec.version,
            plugin=registered.plugin.name,
            arch=arch,
            platform=PLATFORMS[arch],
            python=python,
            backend=backend,
            base_image=base,
            default_tag=f"lambda-ml-serve/{spec.name}:{spec.version.replace('+', '-')}"
            + ("" if backend == spec.backend else f"-{backend}"),
            artifact=output / prepared.relative_to(staging),
            requirements=(),
            response=response if response != spec.response else None,
            docs=docs,
            build_base_image=build_base_image or base,
        )
        example = _example_answers(registered, registry, predictor, backend)
        context = _fill(staging, context, registered, registry, prepared, source, example)
        _move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    return context


def _source_artifact(model: RegisteredModel, artifact: Path | None) -> Path:
    """The model file to build from: ``artifact`` when given, else the plugin's own."""
    if artifact is None:
        return model.spec.artifact_path
    artifact = Path(artifact).absolute()
    if not artifact.is_file():
        raise BuildError(f"--artifact {artifact}: no such file; give the path of the model file to serve")
    return artifact


def _check_image_values(model: RegisteredModel, images: dict[str, str | None]) -> None:
    spec = model.spec
    if not _WORD.match(spec.version):
        raise BuildError(
            f"model {spec.name!r}: version {spec.version!r} cannot tag an image; use letters, digits, '.', '-', '+'"
        )
    if not _WORD.match(model.plugin.name):
        raise BuildError(
            f"{model.plugin}: its entry-point name cannot be written into the image's environment; "
            "use letters, digits, '_', '.', '-'"
        )
    for option, image in images.items():
        if image is not None and not _IMAGE.match(image):
            raise BuildError(f"{option} {image!r} is not an image reference")


def _check_distributions(model: RegisteredModel, python: str) -> None:
    """The framework and the plugin must be installed distributions that support ``python``."""
    for name in dict.fromkeys([FRAMEWORK, model.plugin.distribution]):
        try:
            requires = distribution(name).metadata.get("Requires-Python")
        except PackageNotFoundError:
            raise BuildError(
                f"model {model.spec.name!r} comes from {model.plugin}, which is not an installed "
                "distribution, so it cannot be copied into the image; install it (pip install ...)"
            ) from None
        if requires and python not in SpecifierSet(requires):
            raise BuildError(f"{name} requires Python {requires}, so it cannot run on Python {python}")


def _check_output(output: Path, force: bool) -> None:
    if Path.cwd().is_relative_to(output) or output == Path.home():
        raise BuildError(f"refusing to render into {output}: it holds the current folder or is home")
    if output.exists() and not output.is_dir():
        raise BuildError(f"{output} exists and is not a folder; choose another --output")
    if force or not output.is_dir() or is_build_context(output) or not any(output.iterdir()):
        return
    raise BuildError(
        f"{output} is not empty and was not rendered by lambda-ml-serve build; "
        "choose another --output, or pass --force to replace it"
    )


def is_build_context(folder: Path) -> bool:
    """Whether ``folder`` holds a context rendered by this module (and may be replaced)."""
    try:
        info = json.loads((folder / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("generator") == GENERATOR


def _prepare_artifact(
    model: RegisteredModel,
    registry: Registry,
    original: Predictor,
    source: Path,
    out_dir: Path,
    arch: str,
    backend_name: str,
) -> Path:
    """Ask the backend for its fastest-loading form of the artifact, and check it when this host can.

    The prepared file may be native code for the target (a compiled backend), so it is loaded and
    compared with the original on the model's example rows only when this host runs that architecture.
    """
    spec = model.spec
    backend = registry.backend(backend_name)
    out_dir.mkdir()
    # The compiled backend's prepare is the C compiler's run (and its own parity check): the long step.
    step(f"compiling the model ({backend_name} backend)" if backend_name == "compiled" else "preparing the artifact")
    try:
        prepared = Path(backend.prepare(source, out_dir, arch=arch, spec=spec))
    except LambdaMLServeError:
        raise  # already says what is wrong and what to install (e.g. a missing compiler)
    except Exception as exc:
        raise BuildError(
            f"{model.plugin}: backend {backend_name!r} could not prepare {source.name} "
            f"for model {spec.name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not prepared.is_file() or not prepared.resolve().is_relative_to(out_dir.resolve()):
        raise BuildError(f"backend {backend_name!r}: prepare returned {prepared}, not a file it wrote in {out_dir}")
    if arch != HOST_ARCH:
        return prepared
    step("parity gate: the prepared artifact against the original")
    loaded = load_predictor(model, registry, prepared, backend_name)
    if spec.example:
        try:
            # Packed as the served predictor reads requests; the original reads either precision.
            batch = RowValidator(spec, len(spec.example), input_typecode(loaded)).to_batch(list(spec.example))
        except ApiError as exc:
            raise BuildError(
                f"{model.plugin}: model {spec.name!r}: its example rows are invalid: {exc.message}"
            ) from None
        tolerance = getattr(backend, "parity_tolerance", 0.0)
        if not _same(loaded.predict(batch), original.predict(batch), tolerance):
            raise BuildError(
                f"backend {backend_name!r}: the prepared {prepared.name} predicts differently from "
                f"{source.name} on model {spec.name!r}'s example rows"
            )
    return prepared


def _write_manifest(model: RegisteredModel, registry: Registry, backend_name: str, artifact: Path) -> None:
    """Write the serving manifest beside the artifact, so the image's init needs no plugin machinery.

    Only when the backend can be made again from its class alone and the model's options are JSON;
    otherwise the image loads through the registry, as without a manifest.
    """
    backend = registry.backend(backend_name)
    try:
        json.dumps(dict(model.spec.extra))
        remade = type(backend)()
    except (TypeError, ValueError):
        return
    if getattr(remade, "name", None) == backend_name:
        Manifest.of(model.spec, backend_name, backend, artifact).write(artifact.parent / MANIFEST_NAME)


def _same(a: Any, b: Any, tolerance: float = 0.0) -> bool:
    """Predictions equal up to float rounding, or up to the backend's declared ``parity_tolerance``."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=max(1e-9, tolerance))
    return a == b


def _example_answers(
    model: RegisteredModel, registry: Registry, original: Predictor, backend_name: str
) -> dict[str, Any] | None:
    """The model's example rows and the answers the source model gives them, for checks after deploy.

    The source library's predictor answers on every host, so the record is the same whatever the
    target architecture; ``tolerance`` is the serving backend's declared parity tolerance.
    """
    spec = model.spec
    if not spec.example:
        return None
    rows = [dict(row) for row in spec.example]
    try:
        # The source library's answers to the rows as written: packed in the precision it reads.
        batch = RowValidator(spec, len(rows), input_typecode(original)).to_batch(rows)
    except ApiError as exc:
        raise BuildError(f"{model.plugin}: model {spec.name!r}: its example rows are invalid: {exc.message}") from None
    predictions = original.predict(batch)
    tolerance = float(getattr(registry.backend(backend_name), "parity_tolerance", 0.0))
    return {"rows": rows, "predictions": _plain(predictions), "tolerance": tolerance}


def _plain(value: Any) -> Any:
    """``value`` as JSON's types (NumPy scalars and arrays become numbers and lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _fill(
    folder: Path,
    context: BuildContext,
    model: RegisteredModel,
    registry: Registry,
    artifact: Path,
    source: Path,
    example: dict[str, Any] | None = None,
) -> BuildContext:
    """Vendor the packages and write the files; return the context with its installed versions."""
    site = folder / SITE_PACKAGES
    vendored = _vendor(model, registry, site, arch=context.arch, python=context.python, backend=context.backend)
    library = vendored.library
    step("writing the build context")
    stripped = strip_site_packages(site)
    installed = installed_versions(site)
    partial = ""
    if library is not None and library.files:
        # Only part of it ships (no metadata of its own in site-packages), but it is what the model runs on.
        installed = dict(sorted({**installed, canonicalize_name(library.distribution): library.installed}.items()))
        partial = f"# {library.distribution}: only {', '.join(library.files)}, not its Python package.\n"
    pins = tuple(f"{name}=={version}" for name, version in installed.items())
    context = replace(context, requirements=pins)

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("lambda_ml_serve", TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    here_command = [*context.docker_build_command()[:-1], "."]
    values = {
        "model": context.model,
        "version": context.version,
        "plugin": context.plugin,
        # Only when it differs from the spec's: the runtime then loads the artifact with this backend.
        "backend": context.backend if context.backend != model.spec.backend else None,
        "platform": context.platform,
        "python": context.python,
        "base_image": context.base_image,
        "build_base_image": context.build_base_image,
        "bytecode_label": BYTECODE_STAGE_LABEL,
        "framework_version": __version__,
        "build_command": shlex.join(here_command),
        "site_packages": SITE_PACKAGES,
        "artifacts": ARTIFACTS,
        "artifact": artifact.relative_to(folder).as_posix(),
        "response": context.response,
        "docs": context.docs,
        "model_sha256": _sha256(source),
    }
    (folder / "Dockerfile").write_text(environment.get_template("Dockerfile.j2").render(values), encoding="utf-8")
    (folder / ".dockerignore").write_text(environment.get_template("dockerignore.j2").render(values), encoding="utf-8")
    (folder / "requirements.txt").write_text(
        f"# Installed in {SITE_PACKAGES}/ for {context.platform} and CPython {context.python} by {GENERATOR}.\n"
        "# For reference: the Dockerfile copies the folder and runs no pip.\n"
        + partial
        + "".join(p + "\n" for p in pins),
        encoding="utf-8",
    )
    info = {
        "generator": GENERATOR,
        "framework_version": __version__,
        "model": context.model,
        "version": context.version,
        "plugin": {
            "name": model.plugin.name,
            "distribution": model.plugin.distribution,
            "version": model.plugin.version,
        },
        "backend": context.backend,
        "response": context.response or model.spec.response,
        "docs": context.docs,
        "arch": context.arch,
        "platform": context.platform,
        "python": context.python,
        "base_image": context.base_image,
        "build_base_image": context.build_base_image,
        "default_tag": context.default_tag,
        "requirements": vendored.requirements,
        "installed": installed,
        # The backend's library: the version the build's checks ran with and the one the image carries.
        "serving_library": None
        if library is None
        else {
            "distribution": library.distribution,
            "checked_with": library.checked_with,
            "installed": library.installed,
            "files": list(library.files),
        },
        "artifact": {
            "path": values["artifact"],
            "source": model.spec.artifact if source == model.spec.artifact_path else str(source),
            "source_sha256": values["model_sha256"],
            "bytes": artifact.stat().st_size,
            "sha256": _sha256(artifact),
            # What the backend decided while preparing it (the compiled backend: its layout and why).
            **_described(registry, context.backend, artifact),
        },
        "site_packages": {"bytes": _tree_size(site), "stripped_bytes": stripped},
        # The example rows and the source model's answers: the construct's pre-traffic check compares
        # a newly deployed version's answers with these before it receives traffic.
        "example": example,
    }
    # Last: its presence tells a later run that this folder is a complete context.
    (folder / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return context


def _described(registry: Registry, backend_name: str, artifact: Path) -> dict[str, Any]:
    describe = getattr(registry.backend(backend_name), "describe", None)
    return {"prepared": describe(artifact)} if describe is not None else {}


def _vendor(
    model: RegisteredModel, registry: Registry, site: Path, *, arch: str, python: str, backend: str
) -> Vendored:
    with tempfile.TemporaryDirectory(prefix="lambda-ml-serve-wheels-") as work:
        try:
            return vendor_serving_packages(
                model, registry, site, arch=arch, python=python, work_dir=Path(work), backend=backend
            )
        except VendorError as exc:
            raise BuildError(
                f"model {model.spec.name!r}: pip cannot provide its packages for {PLATFORMS[arch]} and "
                f"CPython {python}: {_pip_reason(str(exc))}"
            ) from None


def _pip_reason(output: str) -> str:
    """pip's own ERROR lines (they name the package), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    return "; ".join(errors) if errors else lines[-1]


def strip_site_packages(site: Path) -> int:
    """Delete what no serving path reads (test suites, bytecode, pip's leftovers); return bytes saved.

    Bytecode is compiled in the image for its own interpreter; ``direct_url.json`` would only
    record this host's temporary wheel paths; ``~name`` folders are pip's interrupted upgrades.
    """
    saved = 0
    for root, dirs, files in os.walk(site):
        here = Path(root)
        top = here == site
        for name in list(dirs):
            path = here / name
            relative = path.relative_to(site).as_posix()
            unused = (
                (name in UNUSED_DIR_NAMES and not top) or relative in UNUSED_DIR_PATHS or (top and name.startswith("~"))
            )
            if unused:
                saved += _tree_size(path)
                shutil.rmtree(path)
                dirs.remove(name)
        for name in files:
            path = here / name
            if name.endswith(".pyc") or (name == "direct_url.json" and here.name.endswith(".dist-info")):
                saved += path.lstat().st_size
                path.unlink()
                if name == "direct_url.json":
                    _unrecord(here, name)
    return saved


def _unrecord(dist_info: Path, name: str) -> None:
    """Drop a deleted file's line from RECORD, whose hash of it would make every render differ."""
    record = dist_info / "RECORD"
    if record.is_file():
        entry = f"{dist_info.name}/{name},"
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        record.write_text("".join(line for line in lines if not line.startswith(entry)), encoding="utf-8")


def installed_versions(site: Path) -> dict[str, str]:
    """Every distribution in ``site`` (canonical name -> version), sorted by name."""
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions(path=[str(site)])}
    return dict(sorted(found.items()))


def _tree_size(folder: Path) -> int:
    return sum((Path(root) / name).lstat().st_size for root, _, files in os.walk(folder) for name in files)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return the ones created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _move_into_place(staging: Path, output: Path) -> None:
    """Rename the finished context to ``output``, replacing what is there only once it is complete."""
    if not output.exists():
        staging.rename(output)
        return
    old = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.old")
    output.rename(old)
    try:
        staging.rename(output)
    except BaseException:
        old.rename(output)
        raise
    shutil.rmtree(old, ignore_errors=True)
