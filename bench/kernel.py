"""The compiled backend's kernel against tl2cgen's code and XGBoost's own predictor, prediction only.

    taskset -c 1 python bench/kernel.py [--rounds 15] [--json out.json]

For the wine plugin's model (553 trees, depth 5) and the original project's XGBoost 1.6.2 model
(427 trees, depth 4) from ../shared/data, at 1, 10, 100, 1,000 and 10,000 rows of wine_concat.csv
(cycled past its 5,320 rows), it times:

- kernel: the library `prepare` writes (the flat kernel, layout chosen from the trees' shapes), through the
  backend's predictor (a Python list out);
- tl2cgen: the library the backend built before the kernel: treelite + tl2cgen's nested if/else C
  with the batch entry point of commit TL2CGEN_COMMIT (`git show`), -O1, called the same way;
- xgboost: `Booster.inplace_predict` on a float32 numpy matrix, one thread, `.tolist()`.

Every round runs every variant at every size in turn (interleaved), each timing the mean of enough
calls to last ~20 ms, each call on the next rows of the data (up to 1,000 different batches); the
table shows medians over rounds and the ratios to the kernel. It also reports each library's size
and the compiler's wall time. Needs the compiled extra, tl2cgen (`pip install tl2cgen`) for the
tl2cgen column, gcc, and git for the old entry point.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODELS = {
    "wine (553 trees, depth 5)": None,  # the plugin's own artifact
    "1.6.2 (427 trees, depth 4)": DATA / "xgboost_wine_quality__lambda-with-ML-container.json",
}
SIZES = (1, 10, 100, 1_000, 10_000)
#: The last commit whose compiled backend used tl2cgen (its batch entry point is read from there).
TL2CGEN_COMMIT = "87a03cd"
TL2CGEN_FLAGS = ("-O1", "-fPIC", "-shared", "-ffp-contract=off", "-s", "-march=x86-64", "-mtune=generic")


def wine_rows(names: list[str], n: int):
    """``n`` rows of wine_concat.csv as a float32 matrix in the model's feature order."""
    import numpy as np

    with (DATA / "wine_concat.csv").open(newline="") as fh:
        records = list(csv.DictReader(fh))
    rows = []
    for record in records:
        values = {**record, "color_red": record["color"] == "red", "color_white": record["color"] == "white"}
        rows.append([float(values[name]) for name in names])
    matrix = np.array(rows, dtype=np.float32)
    return np.ascontiguousarray(matrix[np.arange(n) % len(matrix)])


def build_kernel(artifact: Path, spec, work: Path) -> tuple[Path, float]:
    """The compiled backend's library, and gcc's wall time for the kept layout alone."""
    from lambda_ml_serve.backends.compiled import CompiledBackend, toolchain

    library = CompiledBackend().prepare(artifact, work / "kernel", arch="x86_64", spec=spec)
    from lambda_ml_serve.backends.compiled import codegen
    from lambda_ml_serve.backends.compiled.ensemble import read_ensemble
    from lambda_ml_serve.backends.compiled.runtime import CompiledPredictor

    metadata = CompiledPredictor(library).metadata
    source = work / "kernel.c"
    source.write_text(codegen.render(read_ensemble(artifact, spec), metadata["layout"], metadata))
    started = time.perf_counter()
    toolchain.compile_all([(toolchain.find_compiler(toolchain.host_target()), source, work / "again.so")])
    return library, time.perf_counter() - started


def build_tl2cgen(artifact: Path, work: Path) -> tuple[Path, float] | None:
    """The library as the backend built it with tl2cgen, or None without tl2cgen."""
    try:
        import tl2cgen
    except ImportError:
        return None
    import treelite
    import xgboost

    booster = xgboost.Booster(model_file=str(artifact))
    model = treelite.frontend.from_xgboost_json(booster.save_raw("json"), allow_unknown_field=True)
    src = work / "tl2cgen"
    tl2cgen.generate_c_code(model, src, params={"quantize": 0, "parallel_comp": 0})
    batch = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{TL2CGEN_COMMIT}:lambda_ml_serve/backends/compiled_batch.c"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (src / "compiled_batch.c").write_text(batch)
    (src / "lms_model.h").write_text(f'#define LMS_NUM_FEATURE {model.num_feature}\n#define LMS_METADATA "{{}}"\n')
    sources = [src / f"{s['name']}.c" for s in json.loads((src / "recipe.json").read_text())["sources"]]
    library = work / "tl2cgen.so"
    started = time.perf_counter()
    argv = ["gcc", *TL2CGEN_FLAGS, f"-I{src}", "-o", str(library), *map(str, sources), str(src / "compiled_batch.c")]
    subprocess.run([*argv, "-lm"], check=True)
    return library, time.perf_counter() - started


def tl2cgen_predict(library: Path, n_features: int):
    lib = ctypes.CDLL(str(library))
    fn = lib.lms_predict_batch
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]

    def predict(values: array, n_rows: int) -> list[float]:
        out = array("f", bytes(4 * n_rows))
        fn(values.buffer_info()[0], n_rows, n_features, out.buffer_info()[0])
        return out.tolist()

    return predict


def xgboost_list(booster, rows) -> list[float]:
    return booster.inplace_predict(rows, validate_features=False).tolist()


def per_call(fns, budget: float = 0.02) -> float:
    """Mean seconds per call over enough calls to last about ``budget`` seconds, cycling ``fns``.

    Each call gets other rows than the one before (as real traffic does), so that branchy code is
    not timed on inputs its branch predictor has learnt by heart.
    """
    fns[-1]()
    calls, started = 0, time.perf_counter()
    while True:
        fns[calls % len(fns)]()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            return elapsed / calls


def measure(label: str, artifact: Path, spec, rounds: int) -> dict:
    import numpy as np
    import xgboost

    from lambda_ml_serve.backends.compiled import CompiledBackend
    from lambda_ml_serve.spec import Batch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kernel_lib, kernel_compile = build_kernel(artifact, spec, work)
        kernel = CompiledBackend().load(kernel_lib)
        old = build_tl2cgen(artifact, work)
        booster = xgboost.Booster(model_file=str(artifact))
        booster.set_param({"nthread": 1})
        matrix = wine_rows(list(spec.feature_names), max(SIZES))
        everything = Batch(array("f", matrix.tobytes()), *matrix.shape)
        got = np.array(kernel.predict(everything), dtype=np.float32)
        bit_identical = bool(np.array_equal(got, booster.inplace_predict(matrix, validate_features=False)))
        samples: dict[tuple[str, int], list[float]] = {}
        old_predict = tl2cgen_predict(old[0], matrix.shape[1]) if old else None
        for _ in range(rounds):
            for n in SIZES:
                chunks = [np.ascontiguousarray(matrix[i : i + n]) for i in range(0, max(SIZES), n)][:1000]
                calls = {
                    "kernel": [partial(kernel.predict, Batch(array("f", c.tobytes()), n, c.shape[1])) for c in chunks],
                    "xgboost": [partial(xgboost_list, booster, c) for c in chunks],
                }
                if old_predict:
                    calls["tl2cgen"] = [partial(old_predict, array("f", c.tobytes()), n) for c in chunks]
                for name, fns in calls.items():
                    samples.setdefault((name, n), []).append(per_call(fns))
        result = {
            "model": label,
            "layout": kernel.metadata["layout"],
            "layout_reason": kernel.metadata["layout_reason"],
            "bit_identical": bit_identical,
            "size_kib": {"kernel": kernel_lib.stat().st_size / 1024}
            | ({"tl2cgen": old[0].stat().st_size / 1024} if old else {}),
            "compile_s": {"kernel": kernel_compile} | ({"tl2cgen": old[1]} if old else {}),
            "us": {f"{name}@{n}": statistics.median(v) * 1e6 for (name, n), v in samples.items()},
        }
        return result


def table(result: dict) -> str:
    names = [n for n in ("kernel", "tl2cgen", "xgboost") if f"{n}@1" in result["us"]]
    lines = [
        f"{result['model']}: layout {result['layout_reason']}, bit-identical to xgboost: {result['bit_identical']}",
        "| rows | " + " | ".join(f"{n} (µs)" for n in names) + " | xgboost / kernel | tl2cgen / kernel |",
        "| ---: |" + " ---: |" * (len(names) + 2),
    ]
    for n in SIZES:
        us = {name: result["us"][f"{name}@{n}"] for name in names}
        ratio_old = f"{us['tl2cgen'] / us['kernel']:.2f}x" if "tl2cgen" in us else "-"
        cells = " | ".join(f"{us[name]:,.1f}" for name in names)
        lines.append(f"| {n:,} | {cells} | {us['xgboost'] / us['kernel']:.2f}x | {ratio_old} |")
    sizes = ", ".join(f"{k} {v:,.0f} KiB" for k, v in result["size_kib"].items())
    compiles = ", ".join(f"{k} {v:.2f} s" for k, v in result["compile_s"].items())
    lines.append(f"library: {sizes}; gcc: {compiles}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) != 1:
        print("note: not pinned to one CPU; run under taskset -c 1", file=sys.stderr)
    from lambda_ml_serve.plugins import get_registry

    spec = get_registry().model("wine_quality").spec
    results = []
    for label, artifact in MODELS.items():
        results.append(measure(label, artifact or spec.artifact_path, spec, args.rounds))
        print(table(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
