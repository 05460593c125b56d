"""Recognise a model file by its bytes, and read pickles only from libraries known to be models.

Tooling only (``new --from-model``, the onnx backend's conversions): the serving path never imports
this module. Each failure is a :class:`ModelFileError` whose message names the file and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import LambdaMLServeError

#: The formats recognised, by what ``sniff`` answers.
FORMATS = ("xgboost", "lightgbm", "onnx", "pickle")
#: Top-level modules whose objects a model pickle may hold. Anything else is refused before it is
#: imported, so a pickle from an unknown library runs none of its code here.
PICKLE_MODULES = frozenset(
    {"sklearn", "numpy", "scipy", "joblib", "lightgbm", "xgboost", "collections", "copyreg", "_codecs", "datetime"}
)
#: The few builtins a fitted estimator's pickle refers to; never eval, exec, getattr, __import__...
PICKLE_BUILTINS = frozenset(
    [
        "object",
        "set",
        "frozenset",
        "slice",
        "complex",
        "bytearray",
        "range",
        "dict",
        "list",
        "tuple",
        "int",
        "float",
        "str",
        "bytes",
        "bool",
    ]
)
#: Single objects allowed from other modules. ``functools.partial`` (HistGradientBoosting keeps one of
#: scikit-learn's ``check_array`` in its preprocessor) only binds arguments to a function: that function
#: is itself a global of the pickle, resolved here like any other, so a partial of a function outside
#: :data:`PICKLE_MODULES` is refused as that function would be.
PICKLE_GLOBALS = frozenset({("functools", "partial")})
#: Distributions to pin for the libraries a pickle refers to (module -> distribution).
PICKLE_DISTRIBUTIONS = {"sklearn": "scikit-learn", "lightgbm": "lightgbm", "xgboost": "xgboost-cpu"}
_COMPRESSED = (b"ZF", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x04\x22\x4d\x18", b"\x5d\x00\x00")


class ModelFileError(LambdaMLServeError):
    """A model file that cannot be read, or that holds something this tool does not serve."""


def sniff(path: Path) -> str:
    """The format of the model file ``path``: one of :data:`FORMATS`, from its first bytes."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file; give the path of a saved model") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read it ({exc.strerror})") from None
    if not head:
        raise ModelFileError(f"{path} is empty; save the model again")
    if head.startswith(b"{") and b"learner" in head:
        return "xgboost"  # JSON, or UBJ (whose object also opens with '{')
    if head.startswith(b"tree\n") and b"version=" in head:
        return "lightgbm"
    if head[:1] == b"\x80" or head.startswith(_COMPRESSED):
        return "pickle"
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ONNX: protobuf field 1, ir_version
        return "onnx"
    if head.lstrip().startswith(b"{"):
        raise ModelFileError(
            f"{path} is JSON but not an XGBoost model (no 'learner'); save the model with its library's own "
            "save_model (XGBoost JSON/UBJ, LightGBM text), joblib.dump (scikit-learn) or as ONNX"
        )
    raise ModelFileError(
        f"{path} is not a model file lambda-ml-serve reads (XGBoost JSON/UBJ, LightGBM text, a scikit-learn "
        "joblib/pickle, ONNX); save the model in one of these formats"
    )


#: How each format is loaded in the probe process (the argument is the file).
_PROBES = {
    "xgboost": "import sys, xgboost; xgboost.Booster().load_model(sys.argv[1])",
    "lightgbm": "import sys, lightgbm; lightgbm.Booster(model_file=sys.argv[1])",
    "onnx": "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1]))",
    "pickle": "import sys; from lambda_ml_serve.modelfiles import load_pickle; load_pickle(sys.argv[1])",
}


def check_loads_safely(path: Path, kind: str) -> None:
    """Load ``path`` once in a child process, so a damaged file that crashes a library's native code
    (LightGBM's text parser does, on some) is refused instead of killing this process. Errors the
    library raises normally are left to the in-process reader, which words them."""
    import signal
    import subprocess
    import sys

    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBES[kind], str(path)], capture_output=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            f"{path}: reading it did not finish in 5 minutes; the file is damaged, save it again"
        ) from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        raise ModelFileError(
            f"{path}: the {kind} library crashed reading it ({name}); the file is damaged, save it again"
        )


@contextmanager
def _restricted_globals() -> Iterator[list[str]]:
    """While active, joblib's unpickler resolves only :data:`PICKLE_MODULES`; yields the modules seen."""
    from joblib import numpy_pickle

    seen: list[str] = []
    base = numpy_pickle.NumpyUnpickler

    class Restricted(base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str) -> Any:
            root = module.split(".")[0]
            allowed = (
                root in PICKLE_MODULES
                or (root == "builtins" and name in PICKLE_BUILTINS)
                or (module, name) in PICKLE_GLOBALS
            )
            if not allowed:
                raise ModelFileError(f"{module}.{name}")
            seen.append(root)
            return super().find_class(module, name)

    numpy_pickle.NumpyUnpickler = Restricted
    try:
        yield seen
    finally:
        numpy_pickle.NumpyUnpickler = base


def load_pickle(path: Path) -> tuple[Any, dict[str, str]]:
    """Unpickle an estimator from ``path``; return it and ``{distribution: version}`` of what it needs.

    Objects from modules outside :data:`PICKLE_MODULES` are refused before their module is imported.
    A pickle written by another scikit-learn release than the installed one is refused too: it is
    supported only by the release that wrote it.
    """
    import importlib.metadata
    import pickle
    import warnings

    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    path = Path(path)
    with warnings.catch_warnings(), _restricted_globals() as seen:
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            estimator = joblib.load(path)
        except ModelFileError as exc:
            raise ModelFileError(
                f"{path} is a pickle of objects from {str(exc).split('.')[0]!r} ({exc}), which lambda-ml-serve "
                "does not load: only scikit-learn, LightGBM and XGBoost pickles are read; export the model "
                "to ONNX or save it with its library's own format"
            ) from None
        except InconsistentVersionWarning as exc:
            raise ModelFileError(
                f"{path} was written by scikit-learn {exc.original_sklearn_version} but "
                f"{exc.current_sklearn_version} is installed; pip install scikit-learn=="
                f"{exc.original_sklearn_version} and run again (a pickle is read only by the release that wrote it)"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, OSError) as exc:
            raise ModelFileError(
                f"{path} is a corrupt or truncated pickle ({type(exc).__name__}); save it again"
            ) from None
    if not callable(getattr(estimator, "predict", None)):
        raise ModelFileError(
            f"{path} holds a {type(estimator).__name__}, not a fitted estimator; joblib.dump the fitted model"
        )
    pins = {dist: importlib.metadata.version(dist) for module, dist in PICKLE_DISTRIBUTIONS.items() if module in seen}
    return estimator, pins


def xgboost_booster(path: Path) -> Any:
    """An XGBoost Booster from a JSON or UBJ file."""
    import warnings

    import xgboost

    booster = xgboost.Booster()
    try:
        # A damaged file makes XGBoost warn before it fails; the one-line refusal below says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            booster.load_model(str(path))
    except (xgboost.core.XGBoostError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable XGBoost model ({_first_line(exc)}); save it again") from None
    return booster


def lightgbm_booster(path: Path) -> Any:
    """A LightGBM Booster from a text model."""
    import lightgbm

    try:
        return lightgbm.Booster(model_file=str(path))
    except (lightgbm.basic.LightGBMError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable LightGBM model ({_first_line(exc)}); save it again") from None


def onnx_model(path: Path) -> Any:
    """A checked ONNX ModelProto."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... with no common base
        raise ModelFileError(f"{path} is not a valid ONNX model ({type(exc).__name__}); export it again") from None
    return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return next((line for line in text if line.strip()), type(exc).__name__)[:200]
