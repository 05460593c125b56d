"""What the image runs for the compiled backend: open a model library with ctypes and predict.

Standard library only: no xgboost, lightgbm, scikit-learn, numpy or treelite in the image. A library
is self-describing: ``lms_metadata()`` returns the JSON written at build time (features, source,
layout, what one prediction is), and ``lms_predict_batch`` predicts a whole batch in one native call
on the batch's own buffer.
"""

from __future__ import annotations

import json
import platform
import sys
import threading
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import INPUT_TYPES, Batch, ExplainUnavailable, Explanation

PREPARED_NAME = "model.so"
#: Serialises the one-time building of a library's TreeSHAP tables (ctypes calls release the GIL).
_EXPLAIN_INIT = threading.Lock()
#: Version of the JSON metadata embedded in the library; bumped when its meaning changes (3: class
#: probabilities for every classifier, ``num_output`` sums per row, categorical splits).
METADATA_FORMAT = 3
#: What one row's answer is: the model's value (a regression), or the probability of each class in
#: ``classes`` order (a binary classifier's library computes the second one; the first is 1 - p).
OUTPUTS = ("value", "probabilities")


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
    # The x86-64 baseline (SSE2), stated so that a compiler defaulting to a higher level does not
    # leak it in: every Lambda x86_64 host runs it.
    "x86_64": Target("x86_64", "x86_64", 62, ("-march=x86-64", "-mtune=generic")),
    # Plain ARMv8-A runs on every Graviton; tuning for Graviton2 (Neoverse N1), Lambda's arm64
    # baseline, only orders instructions and stays correct on newer cores.
    "arm64": Target("arm64", "aarch64", 183, ("-march=armv8-a", "-mtune=neoverse-n1")),
}
_HOST_ELF_MACHINES = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183}


class CompiledPredictor:
    """A model library opened with ctypes, predicting a batch per native call."""

    def __init__(self, library: Path) -> None:
        import ctypes

        _check_library_machine(library)
        try:
            lib = ctypes.CDLL(str(library.absolute()))  # a bare name would be searched for, not opened
        except OSError as exc:
            raise ModelLoadError(f"cannot load the compiled model {library}: {exc}") from None
        try:
            metadata_fn, predict_fn = lib.lms_metadata, lib.lms_predict_batch
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
        #: The precision the kernel reads its rows in (metadata ``input_type``; float32 when absent).
        self.input_type: str = metadata.get("input_type", "float32")
        if self.input_type not in INPUT_TYPES:
            raise ModelLoadError(
                f"{library} declares input_type {self.input_type!r}; this lambda-ml-serve reads "
                f"{', '.join(INPUT_TYPES)}: rebuild the image with this version"
            )
        self._typecode = INPUT_TYPES[self.input_type]
        #: A float64 library's lms_narrow: each float64 value to the float32 on the same side of every
        #: split the source library makes on it (the kernel walks float32 rows).
        self._narrow: Any = None
        if self.input_type == "float64":
            narrow_fn = getattr(lib, "lms_narrow", None)
            if narrow_fn is None:
                raise ModelLoadError(
                    f"{library} declares float64 rows but has no lms_narrow: rebuild the image with this version"
                )
            narrow_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
            narrow_fn.restype = ctypes.c_int
            self._narrow = narrow_fn
        # The rows go in as the float32 array's own address (void*), with no copy.
        predict_fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
        predict_fn.restype = ctypes.c_int
        self._predict_batch = predict_fn
        self._library = lib  # the functions are valid only while the library stays loaded
        self.metadata: dict[str, Any] = metadata
        self.num_feature: int = metadata["num_feature"]
        names = metadata.get("feature_names")
        self.feature_names: Sequence[str] | None = tuple(names) if names else None
        self._output: str = metadata.get("output", "value")
        #: The library's values per row: 1, or one per class of a multi-class model.
        self.num_output: int = int(metadata.get("num_output", 1))
        #: The array type of the library's answers: float32 (XGBoost's own) or float64.
        self._answer_type = "f" if metadata.get("answer") == "float" else "d"
        self._answer_size = array(self._answer_type).itemsize
        #: The labels of a classifier's probabilities, in their order (None for a regressor).
        self.classes: list[Any] | None = metadata.get("classes") if self._output == "probabilities" else None
        explain = metadata.get("explain")
        #: What lms_explain_batch answers (outputs, expected values), or None for a library built without it.
        self.explain_info: dict[str, Any] | None = explain if explain and hasattr(lib, "lms_explain_batch") else None
        self._explain_ready = False
        if self.explain_info is not None:
            lib.lms_explain_batch.argtypes = predict_fn.argtypes
            lib.lms_explain_batch.restype = ctypes.c_int
            lib.lms_explain_init.restype = ctypes.c_int

    def predict(self, batch: Batch) -> list[Any]:
        """One value per row (a regressor), or one probability row in ``classes`` order (a classifier)."""
        values = self.raw(batch).tolist()
        if self._output != "probabilities":
            return values
        if self.num_output == 1:
            return [[1.0 - p, p] for p in values]
        k = self.num_output
        return [values[i : i + k] for i in range(0, len(values), k)]

    def scores(self, batch: Batch) -> list[Any]:
        """What the kernel computes per row: the value (a binary classifier's: the second class's
        probability), or a row of class probabilities."""
        values = self.raw(batch).tolist()
        k = self.num_output
        return values if k == 1 else [values[i : i + k] for i in range(0, len(values), k)]

    def raw(self, batch: Batch) -> array:
        """The library's answers for ``batch``, flat: ``num_output`` per row."""
        values, n_rows = self._rows(batch), batch.n_rows
        out = array(self._answer_type, bytes(self._answer_size * n_rows * self.num_output))
        # buffer_info()[0] is the array's own memory: the native code reads the batch and writes the
        # output in place, with no copy and no ctypes array object per call.
        status = self._predict_batch(values.buffer_info()[0], n_rows, self.num_feature, out.buffer_info()[0])
        if status != 0:
            raise RuntimeError(f"lms_predict_batch failed with status {status}")
        return out

    def _rows(self, batch: Batch) -> array:
        """The batch's values as the float32 rows the kernel walks.

        A float32 library takes them as they are. A float64 library's rows (the app packs them in
        float64 for it) go through lms_narrow, which picks for each value the float32 on the same side
        of every split the source library makes on that feature, so the float32 walk answers what the
        library answers on the float64 value.
        """
        values, n_rows = batch.values, batch.n_rows
        if batch.n_features != self.num_feature or len(values) != n_rows * self.num_feature:
            raise ValueError(
                f"batch of {n_rows} rows x {batch.n_features} features ({len(values)} values); "
                f"the compiled model takes {self.num_feature} features per row"
            )
        if values.typecode != self._typecode:
            # A batch built by other code in another precision: converted as the app would have packed
            # it (past float32's range, infinite).
            values = array(self._typecode, values)
        if self._narrow is None:
            return values
        narrowed = array("f", bytes(4 * len(values)))
        self._narrow(values.buffer_info()[0], len(values), narrowed.buffer_info()[0])
        return narrowed

    @property
    def explains(self) -> bool:
        """Whether the library was built with its TreeSHAP code."""
        return self.explain_info is not None

    def explain_values(self, batch: Batch) -> array:
        """The library's TreeSHAP values, flat: rows x outputs x (features + 1), the expected value last."""
        if self.explain_info is None:
            raise ExplainUnavailable(
                "this compiled model was built without explanations; rebuild it with this version "
                "(lambda-ml-serve build MODEL --backend compiled)"
            )
        values, n_rows = self._rows(batch), batch.n_rows
        lib = self._library
        if not self._explain_ready:
            # The leaf tables are built once, on the first explanation, not at cold start.
            with _EXPLAIN_INIT:
                if lib.lms_explain_init() != 0:
                    raise MemoryError("lms_explain_init could not allocate its tables")
                self._explain_ready = True
        width = self.explain_info["outputs"] * (self.num_feature + 1)
        out = array("d", bytes(8 * width * n_rows))
        status = lib.lms_explain_batch(values.buffer_info()[0], n_rows, self.num_feature, out.buffer_info()[0])
        if status != 0:
            raise RuntimeError(f"lms_explain_batch failed with status {status}")
        return out

    def explain(self, batch: Batch) -> Explanation:
        """Each row's expected value and feature contributions, in the margin (before the link function)."""
        flat = self.explain_values(batch).tolist()
        assert self.explain_info is not None
        outputs, width = self.explain_info["outputs"], self.num_feature + 1
        base, contributions = [], []
        for r in range(batch.n_rows):
            row = flat[r * outputs * width : (r + 1) * outputs * width]
            base.append([row[c * width + width - 1] for c in range(outputs)])
            contributions.append([row[c * width : c * width + width - 1] for c in range(outputs)])
        return Explanation(
            base,
            contributions,
            link=self.explain_info.get("link", "identity"),
            outputs=self.explain_info.get("classes"),
            note=self.explain_info.get("note"),
        )


def read_metadata(library: Path) -> dict[str, Any]:
    """The metadata JSON a model library embeds, read from the file without loading it (so a library
    built for another architecture can be described too)."""
    data = library.read_bytes()
    start = data.find(b'{"format":')
    end = data.find(b"\0", start)
    if start < 0 or end < 0:
        raise ModelLoadError(f"{library} holds no compiled model metadata; build it with --backend compiled")
    return json.loads(data[start:end])


def elf_machine(header: bytes) -> int | None:
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
    found = elf_machine(header)
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
