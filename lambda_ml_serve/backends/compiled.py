"""Compiled tree backend: an XGBoost model turned into native code at build time.

Build (``prepare``): xgboost reads the artifact, treelite converts the booster, tl2cgen writes it as
C, and gcc (or Debian's cross compiler for arm64) compiles that C together with a small batch entry
point (``compiled_batch.c``) into one self-describing ``model.so``. The library is then checked
against xgboost's own predictions before it is put in place.

Run time (``load``/``predict``): ``ctypes`` opens the library and a whole batch is predicted in one
native call on the batch's own buffer. Only the standard library is imported: no xgboost, numpy,
scipy or treelite in the image.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import typing
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.errors import CompileError, ModelLoadError
from lambda_ml_serve.spec import Batch

if TYPE_CHECKING:
    from lambda_ml_serve.spec import ModelSpec

PREPARED_NAME = "model.so"
#: Version of the JSON metadata embedded in the library; bumped when its meaning changes.
METADATA_FORMAT = 1
#: The C entry point shipped with the package and compiled into every library.
BATCH_SOURCE = Path(__file__).with_name("compiled_batch.c")
#: Largest absolute difference from xgboost's prediction that the parity check accepts.
PARITY_TOLERANCE = 1e-4
#: Generated rows the parity check predicts, besides the model's example and threshold rows.
PARITY_ROWS = 10_000
#: tl2cgen's generator options: float thresholds (integer-coded ones, ``quantize``, gained about 5%,
#: not worth a second code path) in one translation unit (one compiler run per library).
CODEGEN_PARAMS: Mapping[str, Any] = {"quantize": 0, "parallel_comp": 0}
#: -O1: on these nested branches -O2 and -O3 compiled larger and slower code (more instruction
#: cache misses), and took two to four times longer. -ffp-contract=off keeps arm64 from fusing
#: float operations, so a host build computes exactly what the target build does. -s drops the
#: symbol table; the exported functions stay in the dynamic one.
COMMON_FLAGS = ("-O1", "-fPIC", "-shared", "-ffp-contract=off", "-s")


@dataclass(frozen=True)
class Target:
    """An architecture Lambda runs, as compilers and ELF headers name it."""

    arch: str
    machine: str
    elf_machine: int
    #: Code generation flags: a baseline every Lambda host of that architecture runs, never -march=native.
    flags: tuple[str, ...]

    @property
    def triple(self) -> str:
        return f"{self.machine}-linux-gnu"

    @property
    def cross_package(self) -> str:
        """The Debian package with the cross compiler for this target."""
        return f"gcc-{self.machine.replace('_', '-')}-linux-gnu"


TARGETS: Mapping[str, Target] = {
    # The x86-64 baseline, stated so that a compiler defaulting to a higher level does not leak it
    # in: the code is float compares and adds, which x86-64-v2 and v3 measured no faster on.
    "x86_64": Target("x86_64", "x86_64", 62, ("-march=x86-64", "-mtune=generic")),
    # Plain ARMv8-A runs on every Graviton; tuning for Graviton2 (Neoverse N1), Lambda's arm64
    # baseline, only orders instructions and stays correct on newer cores.
    "arm64": Target("arm64", "aarch64", 183, ("-march=armv8-a", "-mtune=neoverse-n1")),
}
_HOST_ELF_MACHINES = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183}


class ParityError(CompileError):
    """The compiled library's predictions differ from xgboost's by more than the tolerance."""


# --------------------------------------------------------------------------------------------
# Run time: standard library only.
# --------------------------------------------------------------------------------------------


class CompiledPredictor:
    """A model library opened with ctypes, predicting a batch per native call."""

    def __init__(self, library: Path) -> None:
        import ctypes

        _check_library_machine(library)
        try:
            lib = ctypes.CDLL(str(library))
        except OSError as exc:
            raise ModelLoadError(f"cannot load the compiled model {library}: {exc}") from None
        try:
            metadata_fn, predict_fn, num_feature_fn = lib.lms_metadata, lib.lms_predict_batch, lib.get_num_feature
        except AttributeError:
            raise ModelLoadError(
                f"{library} is a shared library but not a compiled model (no lms_predict_batch); "
                "prepare it with the compiled backend (lambda-ml-serve build MODEL --backend compiled)"
            ) from None
        metadata_fn.restype = ctypes.c_char_p
        metadata = json.loads(metadata_fn())
        if metadata.get("format") != METADATA_FORMAT:
            raise ModelLoadError(
                f"{library} has metadata format {metadata.get('format')!r}; this lambda-ml-serve reads "
                f"format {METADATA_FORMAT}: rebuild the image with this version"
            )
        num_feature_fn.restype = ctypes.c_int32
        self.num_feature: int = num_feature_fn()
        if self.num_feature != metadata["num_feature"]:
            raise ModelLoadError(
                f"{library} reports {self.num_feature} features but was built for "
                f"{metadata['num_feature']}; the file is damaged: rebuild it"
            )
        predict_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        predict_fn.restype = ctypes.c_int
        self._predict_batch = predict_fn
        self._library = lib  # the functions are valid only while the library stays loaded
        self.metadata: dict[str, Any] = metadata
        names = metadata.get("feature_names")
        self.feature_names: Sequence[str] | None = tuple(names) if names else None

    def predict(self, batch: Batch) -> list[float]:
        values, n_rows = batch.values, batch.n_rows
        if batch.n_features != self.num_feature or len(values) != n_rows * self.num_feature:
            raise ValueError(
                f"batch of {n_rows} rows x {batch.n_features} features ({len(values)} values); "
                f"the compiled model takes {self.num_feature} features per row"
            )
        out = array("f", bytes(4 * n_rows))
        # buffer_info()[0] is the array's own memory: the native code reads the batch and writes the
        # output in place, with no copy and no ctypes array object per call.
        status = self._predict_batch(values.buffer_info()[0], n_rows, self.num_feature, out.buffer_info()[0])
        if status != 0:
            raise RuntimeError(f"lms_predict_batch failed with status {status}")
        return out.tolist()


def _elf_machine(header: bytes) -> int | None:
    """The e_machine field of an ELF header, or None when ``header`` is not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byteorder = "little" if header[5] == 1 else "big"
    return int.from_bytes(header[18:20], byteorder)


def _check_library_machine(library: Path) -> None:
    """Fail with the architectures named, before the dynamic loader's terse message would."""
    if sys.platform != "linux":
        return  # a host build for the parity check on another OS is not ELF
    try:
        with library.open("rb") as fh:
            header = fh.read(20)
    except OSError as exc:
        raise ModelLoadError(f"cannot read the compiled model {library}: {exc.strerror}") from None
    found = _elf_machine(header)
    if found is None:
        raise ModelLoadError(
            f"{library} is not a compiled model library (not an ELF shared library); the compiled "
            "backend serves the model.so its prepare step writes: build with --backend compiled"
        )
    host = _HOST_ELF_MACHINES.get(platform.machine())
    if host is not None and found != host:
        built_for = next((t.arch for t in TARGETS.values() if t.elf_machine == found), f"ELF machine {found}")
        raise ModelLoadError(
            f"{library} was compiled for {built_for} but this machine is {platform.machine()}; "
            f"build the image for the architecture the function runs on"
        )


class CompiledBackend:
    """XGBoost tree models compiled to a native library; accepts the artifacts of backend ``xgboost``."""

    name = "compiled"
    #: The library needs only the C runtime and ctypes: nothing beyond the framework.
    requirements: Sequence[str] = ()

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> CompiledPredictor:
        """Open a library written by ``prepare``; ``options`` are not used."""
        return CompiledPredictor(Path(artifact))

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """Compile the XGBoost model ``artifact`` for ``arch`` into ``out_dir/model.so``.

        The library is checked against xgboost on ``spec``'s example rows and on generated rows
        (within the schema's bounds, at every split threshold, and missing where the schema allows
        it; without a spec, over the thresholds' range with missing values anywhere). For a target
        the build machine cannot run, the same generated C is compiled for the build machine too and
        that library is checked. Nothing is written to ``out_dir`` unless every step succeeds.
        """
        artifact, out_dir = Path(artifact), Path(out_dir)
        target = _target(arch)
        versions = _require_build_tools()
        target_cc = find_compiler(target)
        host = _host_target()
        host_cc = target_cc if host == target else find_compiler(None)
        booster = _load_booster(artifact)
        _check_supported(booster, artifact)
        _check_spec(booster, spec)

        import hashlib
        import shutil
        import tempfile

        out_dir.mkdir(parents=True, exist_ok=True)
        # A hidden work folder beside the result, so the final rename stays on one file system.
        work = Path(tempfile.mkdtemp(prefix=".compiled-", dir=out_dir))
        try:
            metadata = {
                "format": METADATA_FORMAT,
                "arch": target.arch,
                "num_feature": booster.num_features(),
                "feature_names": booster.feature_names,
                "source": {"file": artifact.name, "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest()},
                "generator": versions,
                "compiler": target_cc.version(),
                "flags": [*COMMON_FLAGS, *target.flags],
            }
            sources = _generate_sources(booster, work / "src", metadata)
            library = work / PREPARED_NAME
            jobs = [(target_cc, target.flags, library)]
            host_library = library
            if host != target:
                host_library = work / f"host-{PREPARED_NAME}"
                jobs.append((host_cc, (), host_library))
            _compile(jobs, sources)
            check_parity(CompiledPredictor(host_library), booster, spec)
            final = out_dir / PREPARED_NAME
            os.replace(library, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return final


# --------------------------------------------------------------------------------------------
# Build time: the tools (xgboost, numpy, treelite, tl2cgen, a C compiler) are looked up only here,
# and the standard modules only the build needs (subprocess, tempfile, ...) are imported only here.
# --------------------------------------------------------------------------------------------


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


def _target(arch: str) -> Target:
    if arch not in TARGETS:
        raise CompileError(f"unknown architecture {arch!r}; the compiled backend builds for {' or '.join(TARGETS)}")
    return TARGETS[arch]


def _host_target() -> Target | None:
    """The target this machine can load libraries of, if it is one (Linux on x86_64 or arm64)."""
    if sys.platform != "linux":
        return None
    return next((t for t in TARGETS.values() if t.machine == platform.machine()), None)


def find_compiler(target: Target | None) -> Compiler:
    """The compiler for ``target`` (None: this machine's own, for the parity build).

    The build machine's architecture uses ``$CC`` (default ``gcc``); another one uses Debian's cross
    compiler ``<triple>-gcc``, or ``$CC_<triple>`` with underscores (e.g. ``CC_aarch64_linux_gnu``).
    """
    if target is None or target == _host_target():
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


def _require_build_tools() -> dict[str, str]:
    """Import the build-time packages (naming the one to install if missing); return the generators' versions."""
    import importlib

    generators = (("xgboost", "xgboost-cpu"), ("treelite", "treelite"), ("tl2cgen", "tl2cgen"))
    for module, package in (("numpy", "numpy"), *generators):
        try:
            importlib.import_module(module)
        except ImportError:
            raise CompileError(
                f"the compiled backend needs {package} at build time: pip install 'lambda-ml-serve[compiled]'"
            ) from None
    return {module: sys.modules[module].__version__ for module, _ in generators}


def _load_booster(artifact: Path) -> Any:
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(str(artifact))
    except xgboost.core.XGBoostError as exc:
        raise CompileError(f"cannot read {artifact} as an XGBoost model: {_first_line(exc)}") from None
    return booster


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_supported(booster: Any, artifact: Path) -> None:
    """Refuse what the batch entry point cannot serve, before treelite or gcc spend any time on it."""
    learner = json.loads(booster.save_config())["learner"]
    kind = learner["gradient_booster"]["name"]
    if kind not in ("gbtree", "dart"):
        raise CompileError(
            f"{artifact.name} is a {kind!r} booster, not a tree ensemble; the compiled backend compiles "
            "tree models (gbtree, dart): serve this model with backend 'xgboost'"
        )
    params = learner["learner_model_param"]
    num_class, num_target = int(params.get("num_class", 0)), int(params.get("num_target", 1))
    if num_class > 1 or num_target > 1:
        raise CompileError(
            f"{artifact.name} is a multi-class or multi-target model (objective "
            f"{learner['objective']['name']!r}, num_class={num_class}, num_target={num_target}); the compiled "
            "backend serves single-output models (regression, binary classification): serve this model "
            "with backend 'xgboost'"
        )
    types = booster.feature_types or ()
    if "c" in types:
        names = booster.feature_names or [f"f{j}" for j in range(len(types))]
        categorical = [n for n, t in zip(names, types, strict=True) if t == "c"]
        raise CompileError(
            f"{artifact.name} has categorical features {categorical}; the compiled backend supports "
            "numerical splits only: serve this model with backend 'xgboost'"
        )


def _check_spec(booster: Any, spec: ModelSpec | None) -> None:
    if spec is None:
        return
    if spec.backend not in ("xgboost", CompiledBackend.name):
        raise CompileError(
            f"model {spec.name!r} uses backend {spec.backend!r}; the compiled backend compiles XGBoost models"
        )
    names = booster.feature_names
    if names is not None and tuple(names) != spec.feature_names:
        raise CompileError(
            f"model {spec.name!r}: the schema's fields {list(spec.feature_names)} do not match the "
            f"artifact's features {list(names)}; reorder or rename the schema fields (or their aliases)"
        )
    if booster.num_features() != len(spec.feature_names):
        raise CompileError(
            f"model {spec.name!r}: the schema has {len(spec.feature_names)} fields but the artifact "
            f"takes {booster.num_features()} features"
        )


def _generate_sources(booster: Any, src_dir: Path, metadata: Mapping[str, Any]) -> list[Path]:
    """Write tl2cgen's C for the booster, the batch entry point and its header; return the .c files."""
    import shutil

    import tl2cgen
    import treelite

    try:
        # Unknown fields are those of a newer xgboost than this treelite; the parity check then
        # decides whether the model was understood.
        model = treelite.frontend.from_xgboost_json(booster.save_raw("json"), allow_unknown_field=True)
    except treelite.TreeliteError as exc:
        raise CompileError(
            f"treelite {treelite.__version__} cannot read this model ({_first_line(exc)}); "
            "upgrade it (pip install -U treelite tl2cgen)"
        ) from None
    tl2cgen.generate_c_code(model, src_dir, params=dict(CODEGEN_PARAMS))
    recipe = json.loads((src_dir / "recipe.json").read_text(encoding="utf-8"))
    sources = [src_dir / f"{source['name']}.c" for source in recipe["sources"]]
    shutil.copyfile(BATCH_SOURCE, src_dir / BATCH_SOURCE.name)
    (src_dir / "lms_model.h").write_text(_model_header(model.num_feature, metadata), encoding="utf-8")
    return [*sources, src_dir / BATCH_SOURCE.name]


def _model_header(num_feature: int, metadata: Mapping[str, Any]) -> str:
    """The C header compiled_batch.c includes: the feature count and the metadata as a C string."""
    text = json.dumps(metadata, ensure_ascii=True, separators=(",", ":"))
    # ASCII JSON has no control characters; escape what C would read differently (? for trigraphs).
    literal = text.replace("\\", "\\\\").replace('"', '\\"').replace("?", "\\?")
    return (
        "/* Written by the compiled backend of lambda-ml-serve. */\n"
        f"#define LMS_NUM_FEATURE {num_feature}\n"
        f'#define LMS_METADATA "{literal}"\n'
    )


def _compile(jobs: Sequence[tuple[Compiler, Sequence[str], Path]], sources: Sequence[Path]) -> None:
    """Run one compiler per (compiler, flags, output) job, all at once, and wait for every one."""
    import subprocess

    include = f"-I{sources[0].parent}"
    running = []
    for compiler, flags, output in jobs:
        argv = [*compiler.argv, *COMMON_FLAGS, *flags, include, "-o", str(output), *map(str, sources), "-lm"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


# --------------------------------------------------------------------------------------------
# Build time: the parity check against xgboost.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """Where a feature's generated values come from."""

    lo: float
    hi: float
    #: Integer-valued (an int or bool field): only whole numbers are generated.
    integral: bool
    #: The schema allows null (XGBoost's missing value, NaN in the batch).
    nullable: bool
    #: Split thresholds inside [lo, hi], float32, sorted.
    thresholds: Any


def xgboost_predictions(booster: Any, matrix: Any) -> Any:
    """The reference the compiled library must reproduce: xgboost's own prediction, as served."""
    return booster.inplace_predict(matrix, validate_features=False)


def check_parity(predictor: CompiledPredictor, booster: Any, spec: ModelSpec | None) -> float:
    """Predict the example and generated rows with both; raise ParityError past the tolerance.

    Returns the largest absolute difference seen.
    """
    import numpy as np

    num_feature = booster.num_features()
    matrix, n_examples = parity_rows(booster, spec)
    got = np.asarray(predictor.predict(Batch(array("f", matrix.tobytes()), len(matrix), num_feature)), dtype=np.float64)
    want = np.asarray(xgboost_predictions(booster, matrix), dtype=np.float64).reshape(-1)
    diff = np.abs(got - want)
    diff[np.isnan(got) & np.isnan(want)] = 0.0  # both missing agrees; one NaN does not
    diff[np.isnan(diff)] = np.inf
    worst = int(np.argmax(diff))
    if diff[worst] > PARITY_TOLERANCE:
        names = (spec.feature_names if spec is not None else booster.feature_names) or [
            f"f{j}" for j in range(num_feature)
        ]
        row = {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, matrix[worst], strict=True)}
        where = f"example row {worst}" if worst < n_examples else f"generated row {worst - n_examples}"
        raise ParityError(
            f"the compiled model differs from xgboost by up to {diff[worst]:.3g} (tolerance "
            f"{PARITY_TOLERANCE:g}) on {len(matrix)} rows; worst at {where}: compiled {got[worst]!r}, "
            f"xgboost {want[worst]!r}, input {row}"
        )
    return float(diff.max())


def parity_rows(booster: Any, spec: ModelSpec | None) -> tuple[Any, int]:
    """The float32 matrix the parity check predicts, and how many of its first rows are examples.

    After the spec's example rows: rows that put each feature on every split threshold and on the
    float32 just below it, then ``PARITY_ROWS`` rows drawn within the schema's bounds (uniform,
    thresholds, and missing where the schema allows it).
    """
    import numpy as np

    num_feature = booster.num_features()
    examples = _example_matrix(spec, num_feature)
    columns = _columns(booster, spec, num_feature)
    matrix = np.vstack([examples, _threshold_rows(columns), _random_rows(columns, PARITY_ROWS)])
    return np.ascontiguousarray(matrix, dtype=np.float32), len(examples)


def _example_matrix(spec: ModelSpec | None, num_feature: int) -> Any:
    """The spec's example rows, validated and packed exactly as a request's rows are."""
    import numpy as np

    if spec is None or not spec.example:
        return np.empty((0, num_feature), dtype=np.float32)
    from lambda_ml_serve.runtime.errors import ApiError
    from lambda_ml_serve.runtime.validation import RowValidator

    try:
        batch = RowValidator(spec, len(spec.example)).to_batch(list(spec.example))
    except ApiError as exc:
        raise CompileError(f"model {spec.name!r}: its example rows are invalid: {exc.message}") from None
    return np.frombuffer(batch.values, dtype=np.float32).reshape(batch.n_rows, batch.n_features)


def _split_thresholds(booster: Any, num_feature: int) -> list[Any]:
    """Each feature's split thresholds, read from xgboost's own dump (not from treelite's reading)."""
    import numpy as np

    gradient_booster = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    trees = gradient_booster.get("gbtree", gradient_booster)["model"]["trees"]  # dart wraps a gbtree
    found: list[set[float]] = [set() for _ in range(num_feature)]
    for tree in trees:
        for left, feature, threshold in zip(
            tree["left_children"], tree["split_indices"], tree["split_conditions"], strict=True
        ):
            if left != -1:
                found[feature].add(threshold)
    return [np.unique(np.array(sorted(values), dtype=np.float32)) for values in found]


def _columns(booster: Any, spec: ModelSpec | None, num_feature: int) -> list[_Column]:
    """Value ranges per feature: the thresholds' span, padded by a tenth, within the schema's bounds."""
    import numpy as np

    fields = list(spec.schema.model_fields.values()) if spec is not None else [None] * num_feature
    columns = []
    for field, thresholds in zip(fields, _split_thresholds(booster, num_feature), strict=True):
        lo, hi = _schema_bounds(field)
        integral, nullable = _field_kind(field)
        if len(thresholds):
            span = float(thresholds[-1] - thresholds[0])
            pad = span / 10 or abs(float(thresholds[0])) / 10 or 1.0  # a single threshold: around it
            t_lo, t_hi = float(thresholds[0]) - pad, float(thresholds[-1]) + pad
        else:  # an unused feature: any value will do
            t_lo, t_hi = 0.0, 1.0
        lo, hi = (max(lo, t_lo), min(hi, t_hi)) if max(lo, t_lo) <= min(hi, t_hi) else _finite(lo, hi)
        inside = thresholds[(thresholds >= lo) & (thresholds <= hi)]
        if integral:
            inside = inside[inside == np.round(inside)]
        columns.append(_Column(lo, hi, integral, nullable, inside))
    return columns


def _schema_bounds(field: Any) -> tuple[float, float]:
    """A pydantic field's numeric bounds (ge/gt/le/lt constraints); booleans are 0..1."""
    if field is None:
        return -math.inf, math.inf
    lo, hi = (0.0, 1.0) if _base_type(field.annotation) is bool else (-math.inf, math.inf)
    for constraint in field.metadata:
        for name in ("ge", "gt"):
            if getattr(constraint, name, None) is not None:
                lo = max(lo, float(getattr(constraint, name)))
        for name in ("le", "lt"):
            if getattr(constraint, name, None) is not None:
                hi = min(hi, float(getattr(constraint, name)))
    return lo, hi


def _base_type(annotation: Any) -> Any:
    """``float`` for ``float | None``; the annotation itself otherwise."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation


def _field_kind(field: Any) -> tuple[bool, bool]:
    """(integral, nullable) for a schema field; a feature without a schema may be missing."""
    if field is None:
        return False, True
    nullable = type(None) in typing.get_args(field.annotation)
    return _base_type(field.annotation) in (int, bool), nullable


def _finite(lo: float, hi: float) -> tuple[float, float]:
    """A finite range within [lo, hi] to sample from when the thresholds lie outside the schema's."""
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    if math.isfinite(lo):
        return lo, lo + 1.0
    if math.isfinite(hi):
        return hi - 1.0, hi
    return 0.0, 1.0


def _edges(column: _Column) -> Any:
    """Every threshold and, for real-valued features, the float32 just below it.

    A value equal to a threshold goes right and the one below it left, so a threshold that was
    rounded differently anywhere on the way to C sends one of the two the wrong way.
    """
    import numpy as np

    t = column.thresholds
    if column.integral or not len(t):
        return t
    below = np.nextafter(t, np.float32(-np.inf))
    return np.concatenate([t, below[below >= column.lo]])


def _threshold_rows(columns: Sequence[_Column]) -> Any:
    """Rows that put every feature on each of its edges at least once (cycling the shorter lists)."""
    import numpy as np

    edges = [_edges(c) for c in columns]
    n = max((len(e) for e in edges), default=0)
    rng = np.random.default_rng(1)
    matrix = _random_rows(columns, n, rng=rng, edge_share=0.0, missing_share=0.0)
    for j, e in enumerate(edges):
        if len(e):
            matrix[:, j] = e[np.arange(n) % len(e)]
    return matrix


def _random_rows(
    columns: Sequence[_Column], n: int, *, rng: Any = None, edge_share: float = 0.3, missing_share: float = 0.1
) -> Any:
    """``n`` rows, each value uniform in its column's range, or an edge, or missing where allowed."""
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng(0)
    matrix = np.empty((n, len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        values = rng.uniform(column.lo, column.hi, n)
        if column.integral:
            values = np.clip(np.round(values), np.ceil(column.lo), np.floor(column.hi))
        draw = rng.random(n)
        edges = _edges(column)
        if len(edges):
            on_edge = draw < edge_share
            values[on_edge] = rng.choice(edges, int(on_edge.sum()))
        if column.nullable:
            values[draw >= 1.0 - missing_share] = np.nan
        matrix[:, j] = values
    return matrix
