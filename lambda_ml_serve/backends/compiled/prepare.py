"""Build time: a tree model in, a parity-checked native library for the target out.

1. read the model through treelite (:mod:`.ensemble`), refusing in one line what the kernel cannot do;
2. generate the kernel's C in the layout the trees' shapes call for (:mod:`.codegen`; never from a
   timing, so the same model gives the same bytes);
3. compile it for the target (:mod:`.toolchain`; Debian's cross compiler for arm64);
4. check it against the source library's own predictions (:mod:`.parity`), then put it in place.

The tools (numpy, treelite, Jinja2, the source library, a C compiler) are looked up only here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.backends.compiled import codegen, parity, shap, toolchain
from lambda_ml_serve.backends.compiled.ensemble import Ensemble, read_ensemble
from lambda_ml_serve.backends.compiled.runtime import METADATA_FORMAT, PREPARED_NAME, CompiledPredictor
from lambda_ml_serve.errors import CompileError

if TYPE_CHECKING:
    from lambda_ml_serve.spec import ModelSpec


def prepare(artifact: Path, out_dir: Path, *, arch: str = "x86_64", spec: ModelSpec | None = None) -> Path:
    """Compile the tree model ``artifact`` for ``arch`` into ``out_dir/model.so``.

    ``artifact`` is read as the artifact of ``spec.backend`` (xgboost, lightgbm or sklearn), or
    without a spec by its content. The library is checked against the source library on ``spec``'s
    example rows and on generated rows (within the schema's bounds, at every split threshold, and
    missing where the schema allows it; without a spec, over the thresholds' range with missing
    values anywhere). For a target the build machine cannot run, the same C is compiled for the
    build machine too and that library is checked. Nothing is written to ``out_dir`` unless every
    step succeeds. The layout chosen and why are in the library's metadata and on stderr.
    """
    import hashlib
    import shutil
    import tempfile

    target = toolchain.target(arch)
    ensemble = read_ensemble(artifact, spec)
    _check_spec(ensemble, spec)
    target_cc = toolchain.find_compiler(target)
    host = toolchain.host_target()
    host_cc = target_cc if host == target else toolchain.find_compiler(None)

    out_dir.mkdir(parents=True, exist_ok=True)
    # A hidden work folder beside the result, so the final rename stays on one file system.
    work = Path(tempfile.mkdtemp(prefix=".compiled-", dir=out_dir))
    try:
        metadata: dict[str, Any] = {
            "format": METADATA_FORMAT,
            "arch": target.arch,
            "num_feature": ensemble.num_feature,
            "feature_names": ensemble.feature_names,
            "output": ensemble.output,
            "num_output": ensemble.num_output,
            "answer": ensemble.accumulator,
            "classes": ensemble.classes,
            # Categorical features (by index) and how many categories the model knows of each.
            "categories": {str(j): n for j, n in ensemble.categories.items()},
            "source": {
                "file": artifact.name,
                "backend": ensemble.source,
                "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
                **ensemble.library,
            },
            # float64: rows arrive in float64 and lms_narrow brings them to the kernel (see Ensemble.boundaries).
            "input_type": "float32" if ensemble.boundaries is None else "float64",
            "trees": len(ensemble.trees),
            "depth": ensemble.max_depth(),
            "generator": _generator_versions(),
            "compiler": target_cc.version(),
            "flags": [*toolchain.COMMON_FLAGS, *target.flags],
        }
        layout, reason = codegen.choose_layout(ensemble)
        metadata |= {"layout": layout, "layout_reason": reason}
        source = work / "model.c"
        explain_source, metadata["explain"] = _explain_source(ensemble)
        source.write_text(codegen.render(ensemble, layout, metadata) + explain_source, encoding="utf-8")
        library = work / PREPARED_NAME
        jobs = [(target_cc, source, library)]
        host_library = library
        if host != target:
            host_library = work / f"host-{PREPARED_NAME}"
            jobs.append((host_cc, source, host_library))
        toolchain.compile_all(jobs)
        host_predictor = CompiledPredictor(host_library)
        parity.check_parity(host_predictor, ensemble, spec)
        if metadata["explain"] is not None:
            names = spec.feature_names if spec is not None else ensemble.feature_names
            names = names or [f"f{j}" for j in range(ensemble.num_feature)]
            matrix, _ = parity.parity_rows(ensemble, spec)
            shap.check_explain_parity(host_predictor, ensemble, artifact, matrix, names)
        final = out_dir / PREPARED_NAME
        os.replace(library, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"compiled {artifact.name}: {len(ensemble.trees)} trees, depth {ensemble.max_depth()}; layout {reason}; "
        f"{final.stat().st_size / 1024:.0f} KiB for {target.arch}",
        file=sys.stderr,
    )
    return final


#: The link function of each kernel transform, as explanations name it.
LINKS = {"identity": "identity", "sigmoid": "logistic", "exp": "exp", "softmax": "softmax"}


def _explain_source(ensemble: Ensemble) -> tuple[str, dict[str, Any] | None]:
    """The TreeSHAP C appended to the kernel and its metadata; none for trees without covers (said on stderr)."""
    try:
        source, info = shap.render(ensemble)
    except CompileError as exc:
        print(f"no explanations compiled: {exc}", file=sys.stderr)
        return "", None
    classes = ensemble.classes
    if classes is not None and info["outputs"] == 1:
        classes = classes[-1:]  # a binary classifier's single output is its positive class
    return source, info | {"link": LINKS.get(ensemble.transform, ensemble.transform), "classes": classes}


def _generator_versions() -> dict[str, str]:
    import jinja2
    import treelite

    from lambda_ml_serve import __version__

    return {"lambda-ml-serve": __version__, "treelite": treelite.__version__, "jinja2": jinja2.__version__}


def _check_spec(ensemble: Ensemble, spec: ModelSpec | None) -> None:
    if spec is None:
        return
    names = ensemble.feature_names
    if names is not None and tuple(names) != spec.feature_names:
        raise CompileError(
            f"model {spec.name!r}: the schema's fields {list(spec.feature_names)} do not match the "
            f"artifact's features {list(names)}; reorder or rename the schema fields (or their aliases)"
        )
    if ensemble.num_feature != len(spec.feature_names):
        raise CompileError(
            f"model {spec.name!r}: the schema has {len(spec.feature_names)} fields but the artifact "
            f"takes {ensemble.num_feature} features"
        )
