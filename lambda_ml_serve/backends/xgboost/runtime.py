"""What the image runs for the xgboost backend: libxgboost's C API through ctypes.

The shared library is the one the ``xgboost-cpu`` wheel ships (``xgboost/lib/libxgboost.so``, with
the OpenMP runtime it links in ``xgboost_cpu.libs/``). Calling it directly predicts exactly what
``Booster.inplace_predict`` does (the Python package makes the same call) without importing the
xgboost package, numpy or scipy, which cost most of a cold start. Standard library only.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import sys
from array import array
from collections.abc import Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import Batch, Explanation

#: Where the wheel puts the library, relative to the folder that holds the ``xgboost`` package.
LIBRARY_NAMES = {"linux": "libxgboost.so", "darwin": "libxgboost.dylib", "win32": "xgboost.dll"}
LIBRARY_DIR = ("xgboost", "lib")
#: A plain prediction (not margins, contributions or leaf indices) over every tree, NaN as missing:
#: the arguments ``inplace_predict`` passes by default. Written once; xgboost's JSON reader takes NaN.
PREDICT_CONFIG = json.dumps(
    {
        "type": 0,
        "training": False,
        "iteration_begin": 0,
        "iteration_end": 0,
        "missing": float("nan"),
        "strict_shape": False,
        "cache_id": 0,
    }
).encode()

#: SHAP contributions: ``type`` 2 of libxgboost's PredictionType (0 value, 1 margin, 2 contribution,
#: 3 approximate contribution, 4 interaction, 5 approximate interaction, 6 leaf). In-place prediction
#: answers types 0 and 1 only, so contributions go through a DMatrix (XGBoosterPredictFromDMatrix),
#: as ``Booster.predict(pred_contribs=True)`` does.
CONTRIBUTIONS_CONFIG = json.dumps(
    {"type": 2, "training": False, "iteration_begin": 0, "iteration_end": 0, "strict_shape": False}
).encode()
DMATRIX_CONFIG = json.dumps({"missing": float("nan"), "nthread": 1}).encode()
#: The link from each objective's margin to its prediction (anything else: identity).
OBJECTIVE_LINKS = {
    "binary:logistic": "logistic",
    "reg:logistic": "logistic",
    "multi:softprob": "softmax",
    "multi:softmax": "softmax",
    "count:poisson": "exp",
    "reg:gamma": "exp",
    "reg:tweedie": "exp",
    "survival:cox": "exp",
}

_ulong = ctypes.c_uint64


class XGBoostError(RuntimeError):
    """libxgboost reported an error; the message is its own."""


def library_path() -> Path:
    """The libxgboost of the ``xgboost`` package folder first found on ``sys.path``, without importing it.

    In the image that folder holds only ``lib/`` (the build vendors the library, not the package);
    on a developer machine it is the installed xgboost package.
    """
    name = LIBRARY_NAMES.get(sys.platform, "libxgboost.so")
    spec = importlib.util.find_spec(LIBRARY_DIR[0])
    for folder in (spec.submodule_search_locations or ()) if spec else ():
        candidate = Path(folder, *LIBRARY_DIR[1:], name)
        if candidate.is_file():
            return candidate
    raise XGBoostError(
        f"no {name} found in an xgboost/lib folder on sys.path; install xgboost-cpu "
        "(pip install 'lambda-ml-serve[xgboost]'), or rebuild the image"
    )


@cache
def library() -> ctypes.CDLL:
    """libxgboost opened once per process, with the signatures of the functions used here."""
    lib = ctypes.CDLL(str(library_path()))
    handle, handle_p, ulong_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_ulong)
    signatures: dict[str, list[Any]] = {
        "XGBoosterCreate": [handle_p, _ulong, handle_p],
        "XGBoosterFree": [handle],
        "XGBoosterLoadModel": [handle, ctypes.c_char_p],
        "XGBoosterSetParam": [handle, ctypes.c_char_p, ctypes.c_char_p],
        "XGBoosterGetNumFeature": [handle, ulong_p],
        "XGBoosterSaveJsonConfig": [handle, ulong_p, ctypes.POINTER(ctypes.c_char_p)],
        "XGBoosterGetStrFeatureInfo": [
            handle,
            ctypes.c_char_p,
            ulong_p,
            ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)),
        ],
        "XGDMatrixCreateFromDense": [ctypes.c_char_p, ctypes.c_char_p, handle_p],
        "XGDMatrixFree": [handle],
        "XGBoosterPredictFromDMatrix": [
            handle,
            handle,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.POINTER(_ulong)),
            ulong_p,
            ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
        ],
        "XGBoosterPredictFromDense": [
            handle,
            ctypes.c_char_p,
            ctypes.c_char_p,
            handle,
            ctypes.POINTER(ctypes.POINTER(_ulong)),
            ulong_p,
            ctypes.POINTER(ctypes.POINTER(ctypes.c_float)),
        ],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    lib.XGBGetLastError.restype = ctypes.c_char_p
    return lib


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise XGBoostError(last_error((lib.XGBGetLastError() or b"").decode("utf-8", "replace")))


def last_error(message: str, limit: int = 300) -> str:
    """XGBoost's error on one line: its message without the ``[time] file:line:`` prefix and the stack trace."""
    message = message.split("Stack trace:")[0].strip()
    first = next((line.strip() for line in message.splitlines() if line.strip()), "unknown error")
    if first.startswith("[") and ": " in first:
        first = first.split(": ", 1)[1]  # "[10:34:11] /workspace/src/c_api/c_api.cc:1532: Check failed..."
    return first if len(first) <= limit else first[: limit - 3] + "..."


class XGBoostPredictor:
    """A Booster loaded through the C API, predicting a batch in place on its float32 buffer."""

    #: XGBoost reads its input as float32 itself: the batch holds exactly the values it compares.
    input_type = "float32"

    def __init__(self, artifact: Path, *, nthread: int = 1) -> None:
        lib = library()
        self._lib = lib
        self._handle = ctypes.c_void_p()
        _check(lib, lib.XGBoosterCreate(None, 0, ctypes.byref(self._handle)))
        try:
            try:
                _check(lib, lib.XGBoosterLoadModel(self._handle, str(artifact).encode()))
            except XGBoostError as exc:
                raise ModelLoadError(
                    f"{artifact} is not an XGBoost model (JSON or UBJ written by Booster.save_model); "
                    f"XGBoost says: {exc}"
                ) from None
            _check(lib, lib.XGBoosterSetParam(self._handle, b"nthread", str(nthread).encode()))
            count = _ulong()
            _check(lib, lib.XGBoosterGetNumFeature(self._handle, ctypes.byref(count)))
        except (XGBoostError, ModelLoadError):
            self.close()
            raise
        self.num_feature: int = count.value
        self.feature_names: Sequence[str] | None = self._feature_info(b"feature_name")

    def _feature_info(self, field: bytes) -> tuple[str, ...] | None:
        length, strings = _ulong(), ctypes.POINTER(ctypes.c_char_p)()
        _check(
            self._lib,
            self._lib.XGBoosterGetStrFeatureInfo(self._handle, field, ctypes.byref(length), ctypes.byref(strings)),
        )
        return tuple(strings[i].decode() for i in range(length.value)) or None

    def predict(self, batch: Batch) -> list[Any]:
        """One prediction per row: a float, or a list of floats for multi-output models."""
        shape, values = self._predict(batch, PREDICT_CONFIG)
        size = len(values)
        if len(shape) < 2 or size == shape[0]:
            return values
        width = size // shape[0]
        return [values[i : i + width] for i in range(0, size, width)]

    def explain(self, batch: Batch) -> Explanation:
        """libxgboost's exact TreeSHAP (``pred_contribs``): per row and output, the features' parts and the bias."""
        _, values = self._predict(batch, CONTRIBUTIONS_CONFIG, dmatrix=True)
        width = self.num_feature + 1
        outputs = len(values) // (width * batch.n_rows) if batch.n_rows else 1
        base, contributions = [], []
        for r in range(batch.n_rows):
            row = values[r * outputs * width : (r + 1) * outputs * width]
            base.append([row[k * width + width - 1] for k in range(outputs)])
            contributions.append([row[k * width : (k + 1) * width - 1] for k in range(outputs)])
        return Explanation(base, contributions, link=self.link)

    @cached_property
    def link(self) -> str:
        """How the margin becomes the prediction, from the booster's objective (read once)."""
        length, text = _ulong(), ctypes.c_char_p()
        _check(self._lib, self._lib.XGBoosterSaveJsonConfig(self._handle, ctypes.byref(length), ctypes.byref(text)))
        objective = json.loads(ctypes.string_at(text, length.value))["learner"]["objective"]["name"]
        return OBJECTIVE_LINKS.get(objective, "identity")

    def _predict(self, batch: Batch, config: bytes, *, dmatrix: bool = False) -> tuple[list[int], list[float]]:
        n_rows, n_features = batch.n_rows, batch.n_features
        if n_features != self.num_feature or len(batch.values) != n_rows * n_features:
            raise ValueError(
                f"batch of {n_rows} rows x {n_features} features ({len(batch.values)} values); "
                f"the model takes {self.num_feature} features per row"
            )
        # The array interface points xgboost at the batch's own memory: no copy on the way in. A float64
        # batch (built by other code than the app's) is narrowed by xgboost itself.
        typestr = "<f4" if batch.values.typecode == "f" else "<f8"
        interface = (
            f'{{"data": [{batch.values.buffer_info()[0]}, true], "shape": [{n_rows}, {n_features}], '
            f'"typestr": "{typestr}", "version": 3}}'
        ).encode()
        lib = self._lib
        shape_p, dims, result = ctypes.POINTER(_ulong)(), _ulong(), ctypes.POINTER(ctypes.c_float)()
        out_args = (ctypes.byref(shape_p), ctypes.byref(dims), ctypes.byref(result))
        if dmatrix:
            matrix = ctypes.c_void_p()
            _check(lib, lib.XGDMatrixCreateFromDense(interface, DMATRIX_CONFIG, ctypes.byref(matrix)))
            try:
                _check(lib, lib.XGBoosterPredictFromDMatrix(self._handle, matrix, config, *out_args))
                return self._copy(shape_p, dims, result)
            finally:
                lib.XGDMatrixFree(matrix)
        _check(lib, lib.XGBoosterPredictFromDense(self._handle, interface, config, None, *out_args))
        return self._copy(shape_p, dims, result)

    @staticmethod
    def _copy(shape_p: Any, dims: Any, result: Any) -> tuple[list[int], list[float]]:
        shape = [shape_p[i] for i in range(dims.value)]
        size = 1
        for extent in shape:
            size *= extent
        # The result buffer belongs to the booster (per thread) until its next call: copy it now.
        out = array("f")
        out.frombytes(ctypes.string_at(result, 4 * size))
        return shape, out.tolist()

    def close(self) -> None:
        """Free the booster (also done when the predictor is garbage-collected)."""
        handle, self._handle = getattr(self, "_handle", None), ctypes.c_void_p()
        if handle:  # None when the constructor failed before creating it
            self._lib.XGBoosterFree(handle)

    def __del__(self) -> None:
        self.close()
