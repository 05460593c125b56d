"""Explanations: the compiled backend's TreeSHAP against XGBoost's and LightGBM's own, one CPU.

    taskset -c 1 python bench/explain.py [--rounds 5] [--json out.json]

Three models on the rows of wine_concat.csv (cycled): the wine plugin's XGBoost model (553 trees,
depth 5), a LightGBM regressor trained here on the same data (200 trees, 31 leaves), and one trained
with two categorical features (the colour, and total sulfur dioxide cut into 32 categories), whose
splits on them are category sets. At 1, 100
and 1,000 rows it times:

- kernel: the compiled library's ``lms_explain_batch`` through the backend's predictor
  (``explain_values``: the rows x (features + 1) doubles, expected value last);
- xgboost: ``Booster.predict(DMatrix(rows), pred_contribs=True)``, nthread=1 (DMatrix included, as a
  caller must build one);
- lightgbm: ``Booster.predict(rows, pred_contrib=True, num_threads=1)``.

Every round runs every variant at every size in turn (interleaved), each timing the mean of enough
calls to last ~20 ms (at least one), each call on other rows; the table shows medians over rounds
and the library / kernel ratio. Both answers are also compared (largest absolute difference).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
from array import array
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel
from kernel import per_call

#: The shared data folder beside the checkout (``LAMBDA_ML_SERVE_DATA`` points elsewhere).
DATA = Path(os.environ.get("LAMBDA_ML_SERVE_DATA", kernel.DATA))
SIZES = (1, 100, 1_000)


def wine_rows(names: list[str]):
    """wine_concat.csv as a float32 matrix in ``names``' order, and its quality column."""
    import numpy as np

    with (DATA / "wine_concat.csv").open(newline="") as fh:
        records = list(csv.DictReader(fh))
    rows = []
    for record in records:
        values = {**record, "color_red": record["color"] == "red", "color_white": record["color"] == "white"}
        rows.append([float(values[name]) for name in names])
    return np.array(rows, dtype=np.float32), np.array([float(r["quality"]) for r in records])


def categorical_matrix(matrix, names: list[str]):
    """The wine rows with two categorical columns last: the colour (0 red, 1 white) in place of its one-hot
    columns, and total sulfur dioxide cut into 32 quantile bins, each bin a category (as a column with
    many categories would be): the model's splits on them are category sets."""
    import numpy as np

    sulfur = matrix[:, names.index("total sulfur dioxide")]
    bins = np.digitize(sulfur, np.quantile(sulfur, np.linspace(0, 1, 33)[1:-1])).astype(np.float32)
    keep = [j for j, name in enumerate(names) if name not in ("color_red", "color_white", "total sulfur dioxide")]
    colour = matrix[:, names.index("color_white")]
    return np.ascontiguousarray(np.column_stack([matrix[:, keep], colour, bins]), dtype=np.float32)


def measure(label: str, artifact: Path, source: str, spec, matrix, rounds: int) -> dict:
    import numpy as np

    from lambda_ml_serve.backends.compiled import CompiledBackend
    from lambda_ml_serve.spec import Batch

    with tempfile.TemporaryDirectory() as tmp:
        library = CompiledBackend().prepare(artifact, Path(tmp) / "kernel", arch="x86_64", spec=spec)
        kernel = CompiledBackend().load(library)
        width = matrix.shape[1] + 1
        if source == "xgboost":
            import xgboost

            booster = xgboost.Booster(model_file=str(artifact))
            booster.set_param({"nthread": 1})

            def library_explain(rows):
                dmatrix = xgboost.DMatrix(rows, missing=np.nan, nthread=1)
                return booster.predict(dmatrix, pred_contribs=True, validate_features=False)
        else:
            import lightgbm

            booster = lightgbm.Booster(model_file=str(artifact))

            def library_explain(rows):
                return booster.predict(rows, pred_contrib=True, num_threads=1)

        def kernel_explain(batch):
            return kernel.explain_values(batch)

        check = np.ascontiguousarray(matrix[:200])
        got = np.frombuffer(kernel_explain(Batch(array("f", check.tobytes()), *check.shape))).reshape(-1, width)
        worst = float(np.max(np.abs(got - np.asarray(library_explain(check), dtype=np.float64))))
        samples: dict[tuple[str, int], list[float]] = {}
        for _ in range(rounds):
            for n in SIZES:
                chunks = [np.ascontiguousarray(matrix[i : i + n]) for i in range(0, len(matrix) - n + 1, n)][:200]
                calls = {
                    "kernel": [partial(kernel_explain, Batch(array("f", c.tobytes()), n, c.shape[1])) for c in chunks],
                    source: [partial(library_explain, c) for c in chunks],
                }
                for name, fns in calls.items():
                    samples.setdefault((name, n), []).append(per_call(fns))
        return {
            "model": label,
            "library": source,
            "max_abs_difference": worst,
            "explain": kernel.metadata["explain"] | {"expected_value": None},
            "us": {f"{name}@{n}": statistics.median(v) * 1e6 for (name, n), v in samples.items()},
        }


def table(result: dict) -> str:
    source = result["library"]
    lines = [
        f"{result['model']}: largest difference from {source}'s {result['max_abs_difference']:.2g}",
        f"| rows | kernel (µs) | {source} (µs) | {source} / kernel |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for n in SIZES:
        kernel, other = result["us"][f"kernel@{n}"], result["us"][f"{source}@{n}"]
        lines.append(f"| {n:,} | {kernel:,.1f} | {other:,.1f} | {other / kernel:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) != 1:
        print("note: not pinned to one CPU; run under taskset -c 1", file=sys.stderr)
    import lightgbm

    from lambda_ml_serve.plugins import get_registry

    spec = get_registry().model("wine_quality").spec
    matrix, quality = wine_rows(list(spec.feature_names))
    results = [measure("wine XGBoost (553 trees, depth 5)", spec.artifact_path, "xgboost", spec, matrix, args.rounds)]
    print(table(results[-1]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "wine-lightgbm.txt"
        params = {"num_leaves": 31, "verbose": -1, "num_threads": 1, "seed": 0}
        lightgbm.train(params, lightgbm.Dataset(matrix, quality), 200).save_model(model)
        results.append(measure("wine LightGBM (200 trees, 31 leaves)", model, "lightgbm", None, matrix, args.rounds))
        print(table(results[-1]), flush=True)
        categorical = Path(tmp) / "wine-lightgbm-categorical.txt"
        coded = categorical_matrix(matrix, list(spec.feature_names))
        data = lightgbm.Dataset(coded, quality, categorical_feature=[coded.shape[1] - 2, coded.shape[1] - 1])
        lightgbm.train(params | {"min_data_per_group": 20}, data, 200).save_model(categorical)
        label = "wine LightGBM, categorical (200 trees, 31 leaves; colour and a 32-category column)"
        results.append(measure(label, categorical, "lightgbm", None, coded, args.rounds))
    print(table(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
