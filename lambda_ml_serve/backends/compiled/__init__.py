"""Compiled tree backend: XGBoost, LightGBM and scikit-learn tree ensembles as native code.

Build time (``prepare``, in :mod:`.prepare` and the modules it uses): treelite reads the model, a
flat branch-free kernel is generated for it as C and compiled with gcc (or Debian's cross compiler
for arm64) into one self-describing ``model.so``, checked against the source library's own
predictions before it is put in place. Run time (``load``, :mod:`.runtime`): ctypes opens it; only
the standard library is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.backends.compiled.runtime import CompiledPredictor, read_metadata

if TYPE_CHECKING:
    from lambda_ml_serve.spec import ModelSpec


class CompiledBackend:
    """Tree ensembles compiled to a native library; accepts the artifacts of backends ``xgboost``,
    ``lightgbm`` (a LightGBM text model) and ``sklearn`` (a joblib tree ensemble)."""

    name = "compiled"
    #: The library needs only the C runtime and ctypes: nothing beyond the framework.
    requirements: Sequence[str] = ()

    def load(self, artifact: Path, options: Mapping[str, Any] | None = None) -> CompiledPredictor:
        """Open a library written by ``prepare``; ``options`` are not used (the library says what it answers)."""
        return CompiledPredictor(Path(artifact))

    def prepare(self, artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
        """Compile the tree model ``artifact`` for ``arch`` into ``out_dir/model.so``; see :func:`.prepare.prepare`."""
        from lambda_ml_serve.backends.compiled.prepare import prepare

        return prepare(Path(artifact), Path(out_dir), arch=arch, spec=spec)

    def describe(self, prepared: Path) -> dict[str, Any]:
        """What the build decided for ``prepared`` (layout and why, trees, compiler and flags), for build-info.json."""
        metadata = read_metadata(Path(prepared))
        keys = ("layout", "layout_reason", "trees", "depth", "output", "classes", "compiler", "flags", "generator")
        return {key: metadata[key] for key in keys if key in metadata}
