"""Build-time work for the LightGBM backend: the text model as it is, and the OpenMP runtime for the target."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lambda_ml_serve.backends.lightgbm.runtime import OPENMP_LIBRARY
from lambda_ml_serve.errors import BuildError

#: GNU triples of Lambda's architectures, and the Debian package with each one's libgomp.
TRIPLES = {"x86_64": ("x86_64-linux-gnu", "libgomp1"), "arm64": ("aarch64-linux-gnu", "libgomp1-arm64-cross")}


def find_openmp(arch: str) -> Path:
    """This machine's libgomp for ``arch``: its compiler's, else Debian's multiarch or cross location."""
    if arch not in TRIPLES:
        raise BuildError(f"unknown architecture {arch!r}; Lambda runs {' or '.join(TRIPLES)}")
    triple, package = TRIPLES[arch]
    candidates = [Path(f"/usr/lib/{triple}/{OPENMP_LIBRARY}"), Path(f"/usr/{triple}/lib/{OPENMP_LIBRARY}")]
    compiler = shutil.which(f"{triple}-gcc")
    if compiler:
        asked = subprocess.run(
            [compiler, f"-print-file-name={OPENMP_LIBRARY}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if asked and Path(asked).is_absolute():
            candidates.insert(0, Path(asked))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise BuildError(
        f"the lightgbm backend ships {OPENMP_LIBRARY} ({arch}) in the image, since Lambda's base images "
        f"lack it, and this machine has none: apt-get install {package}"
    )


def prepare(artifact: Path, out_dir: Path, arch: str) -> Path:
    """Check that ``artifact`` is a LightGBM model; copy it and the target's OpenMP runtime into ``out_dir``."""
    import lightgbm

    try:
        lightgbm.Booster(model_file=str(artifact))
    except lightgbm.basic.LightGBMError as exc:
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise BuildError(f"cannot read {artifact} as a LightGBM text model: {first}") from None
    openmp = find_openmp(arch)
    target = out_dir / artifact.name
    shutil.copyfile(artifact, target)
    shutil.copyfile(openmp, out_dir / OPENMP_LIBRARY)
    return target
