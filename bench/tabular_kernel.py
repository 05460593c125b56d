"""The compiled kernel on tabular models, against the libraries' own predict.

    taskset -c 1 python bench/tabular_kernel.py [--rounds 7] [--case categorical|leafwise|all]

- ``categorical``: an XGBoost multi-class classifier (3 classes, 100 rounds, depth 6) trained on a
  frame with a categorical colour (8 categories), two numbers with missing values: the compiled
  library (through the backend's predictor: probability rows out) against ``Booster.predict`` on a
  pandas DataFrame with the ``category`` column, as the library serves it; cold start (load and
  answer one row, in a fresh interpreter) and 1 / 100 / 10,000 rows.
- ``leafwise``: a 500-tree, 127-leaf LightGBM regressor (8 features): the compiled library (given
  float64 rows, as the app packs them for a LightGBM library) against lleaves (LLVM, compiled for this
  CPU) and ``Booster.predict``, at 1 / 100 / 1,000 / 10,000 rows.
  lleaves 1.3 cannot run beside numba's llvmlite, so it runs in bench/.venv-lleaves (created on
  first use with LLEAVES_PACKAGES) as a long-lived worker (bench/lleaves_worker.py) pinned to this
  process's CPU, asked for its timing in turn with the others; its answers are checked against
  LightGBM's on all 10,000 rows.

Every round runs every variant at every size in turn (interleaved), each timing the mean of enough
calls to last ~20 ms; the table shows medians over rounds and ratios to the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
LLEAVES_VENV = HERE / ".venv-lleaves"
COLORS = ["red", "white", "rose", "orange", "green", "blue", "black", "amber"]


def per_call(fn, budget: float = 0.02) -> float:
    fn()
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            return elapsed / calls


def frame(n: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "acidity": rng.normal(size=n),
            "sugar": rng.normal(size=n),
            "color": pd.Categorical(rng.choice(COLORS, n), categories=COLORS),
        }
    )
    data.loc[rng.random(n) < 0.1, "acidity"] = np.nan
    code = data["color"].cat.codes.to_numpy()
    classes = np.isin(code, [1, 4]).astype(int) + (data["sugar"].to_numpy() > 0.3)
    return data, classes


def cold(script: str) -> float:
    """Seconds for a fresh interpreter to run ``script`` (load the model, answer one row)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - started


def categorical(rounds: int, work: Path) -> list[str]:
    import numpy as np
    import xgboost

    from lambda_ml_serve.backends.compiled import CompiledBackend
    from lambda_ml_serve.spec import Batch

    data, classes = frame(5000)
    params = {"max_depth": 6, "objective": "multi:softprob", "num_class": 3, "nthread": 1}
    booster = xgboost.train(params, xgboost.DMatrix(data, classes, enable_categorical=True), num_boost_round=100)
    booster.save_model(str(work / "model.ubj"))
    library = CompiledBackend().prepare(work / "model.ubj", work / "out", arch="x86_64")
    kernel = CompiledBackend().load(library)
    requests, _ = frame(10_000, seed=1)
    codes = requests.assign(color=requests["color"].cat.codes.astype("float32")).to_numpy("float32")
    sizes = (1, 100, 10_000)
    samples: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for n in sizes:
            rows = np.ascontiguousarray(codes[:n])
            batch = Batch(array("f", rows.tobytes()), n, 3)
            part = requests.iloc[:n]
            samples.setdefault(("kernel", n), []).append(per_call(lambda b=batch: kernel.predict(b)))
            samples.setdefault(("xgboost", n), []).append(per_call(lambda p=part: booster.inplace_predict(p).tolist()))
    load_kernel = (
        "from pathlib import Path\nfrom array import array\nfrom lambda_ml_serve.spec import Batch\n"
        "from lambda_ml_serve.backends.compiled.runtime import CompiledPredictor\n"
        f"p = CompiledPredictor(Path({str(library)!r}))\np.predict(Batch(array('f', [0.1, 0.2, 1.0]), 1, 3))\n"
    )
    load_xgboost = (
        "import pandas as pd, xgboost\n"
        f"b = xgboost.Booster(model_file={str(work / 'model.ubj')!r})\n"
        f"row = pd.DataFrame({{'acidity': [0.1], 'sugar': [0.2], "
        f"'color': pd.Categorical(['white'], categories={COLORS!r})}})\n"
        "b.inplace_predict(row)\n"
    )
    starts = {"kernel": [], "xgboost": []}
    for _ in range(max(rounds // 2, 3)):
        starts["kernel"].append(cold(load_kernel))
        starts["xgboost"].append(cold(load_xgboost))
    cold_k, cold_x = (statistics.median(starts[k]) for k in ("kernel", "xgboost"))
    lines = [
        "categorical multi-class (XGBoost, 3 classes x 100 rounds, depth 6, 8 categories):",
        "| | compiled | xgboost (DataFrame) | xgboost / compiled |",
        "| --- | ---: | ---: | ---: |",
        f"| cold start | {cold_k * 1e3:,.0f} ms | {cold_x * 1e3:,.0f} ms | {cold_x / cold_k:.1f}x |",
    ]
    for n in sizes:
        k, x = (statistics.median(samples[name, n]) * 1e6 for name in ("kernel", "xgboost"))
        lines.append(f"| {n:,} rows | {k:,.1f} µs | {x:,.1f} µs | {x / k:.1f}x |")
    return lines


def leafwise(rounds: int, work: Path) -> list[str]:
    import lightgbm
    import numpy as np

    from lambda_ml_serve.backends.compiled import CompiledBackend
    from lambda_ml_serve.spec import Batch

    rng = np.random.default_rng(0)
    features = rng.normal(size=(20_000, 8))
    target = features[:, 0] * 2 + np.sin(features[:, 1] * 3) + features[:, 2] * features[:, 3] + rng.normal(size=20_000)
    params = {"num_leaves": 127, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1}
    booster = lightgbm.train(params, lightgbm.Dataset(features, target), num_boost_round=500)
    booster.save_model(str(work / "leafwise.txt"))
    kernel = CompiledBackend().load(CompiledBackend().prepare(work / "leafwise.txt", work / "lw", arch="x86_64"))
    requests = np.ascontiguousarray(rng.normal(size=(10_000, 8)))
    typecode = {"float32": "f", "float64": "d"}[kernel.input_type]
    np.save(work / "rows.npy", requests)
    compiled_lleaves = LleavesWorker(work / "leafwise.txt", work / "rows.npy", work / "lleaves.o")
    sizes = (1, 100, 1_000, 10_000)
    samples: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(rounds):
            for n in sizes:
                wide = np.ascontiguousarray(requests[:n])
                # The rows as the app packs them for this library: float64 (LightGBM compares float64).
                batch = Batch(array(typecode, wide.astype(typecode).tobytes()), n, 8)
                samples.setdefault(("kernel", n), []).append(per_call(lambda b=batch: kernel.predict(b)))
                samples.setdefault(("lleaves", n), []).append(compiled_lleaves.ask({"time": n})["seconds"])
                samples.setdefault(("lightgbm", n), []).append(
                    per_call(lambda w=wide: booster.predict(w, num_threads=1).tolist())
                )
        want = booster.predict(requests, num_threads=1)
        got = np.array(compiled_lleaves.ask({"answer": len(requests)})["predictions"])
    finally:
        compiled_lleaves.close()
    kernel_got = np.array(kernel.predict(Batch(array(typecode, requests.astype(typecode).tobytes()), len(requests), 8)))
    kernel_want = booster.predict(requests.astype(typecode), num_threads=1)
    names = ("kernel", "lleaves", "lightgbm")
    lines = [
        f"leaf-wise LightGBM (500 trees, 127 leaves; layout {kernel.metadata['layout']!r}; "
        f"lleaves {compiled_lleaves.version}):",
        "| rows | " + " | ".join(f"{n} (µs)" for n in names) + " | lleaves / kernel | lightgbm / kernel |",
        "| ---: |" + " ---: |" * (len(names) + 2),
    ]
    for n in sizes:
        us = {name: statistics.median(samples[name, n]) * 1e6 for name in names}
        cells = " | ".join(f"{us[name]:,.1f}" for name in names)
        lines.append(
            f"| {n:,} | {cells} | {us['lleaves'] / us['kernel']:.2f}x | {us['lightgbm'] / us['kernel']:.2f}x |"
        )
    lines.append(
        f"Largest difference from LightGBM on the 10,000 rows: lleaves {np.abs(got - want).max():.2g} "
        f"(float64 rows), kernel {np.abs(kernel_got - kernel_want).max():.2g} ({kernel.input_type} rows)."
    )
    return lines


def lleaves_packages() -> tuple[str, ...]:
    """lleaves and the llvmlite it calls (< 0.45 still has PassManagerBuilder; 0.44 has Python 3.11
    wheels); lightgbm and numpy as in this environment."""
    import lightgbm
    import numpy

    return ("lleaves==1.3.0", "llvmlite==0.44.0", f"lightgbm=={lightgbm.__version__}", f"numpy=={numpy.__version__}")


class LleavesWorker:
    """lleaves compiled for this CPU in its own environment, timed on request (bench/lleaves_worker.py)."""

    def __init__(self, model: Path, rows: Path, cache: Path) -> None:
        from variants import venv_python

        python = venv_python(LLEAVES_VENV, lleaves_packages())
        command = [python, str(HERE / "lleaves_worker.py"), str(model), str(rows), str(cache)]
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if len(cpus) == 1:
            command = ["taskset", "-c", str(next(iter(cpus))), *command]
        # -I: the venv's own packages only, nothing from this environment's PYTHONPATH.
        command[command.index(python) + 1 : command.index(python) + 1] = ["-I"]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version: str = self._read()["ready"]

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the lleaves worker exited (exit {self.proc.wait()}); see its messages above")
        return json.loads(line)

    def ask(self, command: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"done": True}) + "\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--case", choices=("categorical", "leafwise", "all"), default="all")
    args = parser.parse_args()
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) != 1:
        print("note: not pinned to one CPU; run under taskset -c 1", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("categorical", "leafwise"):
            if args.case in (case, "all"):
                print(
                    "\n".join((categorical if case == "categorical" else leafwise)(args.rounds, Path(tmp))), flush=True
                )


if __name__ == "__main__":
    main()
