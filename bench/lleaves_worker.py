"""lleaves in its own environment, answering bench/tabular_kernel.py's timing commands.

    bench/.venv-lleaves/bin/python bench/lleaves_worker.py MODEL.txt ROWS.npy CACHE.o

lleaves 1.3 calls llvmlite API that llvmlite 0.45 removed, and the main environment's numba needs a
newer llvmlite, so lleaves runs in bench/.venv-lleaves (created by tabular_kernel.py) as a long-lived
process. One JSON command per line on stdin, one JSON answer per line on stdout:
``{"time": n}`` -> ``{"seconds": s}`` (the mean call on the first n rows), ``{"answer": n}`` ->
``{"predictions": [...]}``, ``{"done": true}`` ends it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Standard library only: the very timing the kernel and LightGBM get.
from tabular_kernel import per_call


def main() -> None:
    from importlib.metadata import version

    import lleaves
    import numpy as np

    model_file, rows_file, cache = sys.argv[1:4]
    model = lleaves.Model(model_file=model_file)
    model.compile(cache=cache)  # for this CPU, as lleaves does by default
    rows = np.load(rows_file)
    print(json.dumps({"ready": version("lleaves")}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if "time" in command:
            part = np.ascontiguousarray(rows[: command["time"]])
            answer = {"seconds": per_call(lambda p=part: model.predict(p, n_jobs=1).tolist())}
        elif "answer" in command:
            answer = {"predictions": model.predict(rows[: command["answer"]], n_jobs=1).tolist()}
        else:
            break
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
