"""What category and nullable fields cost on the request path: decode + validate + pack, fast and full.

    taskset -c 1 python bench/categories.py [--rounds 15]

Three schemas of 12 features over the same wine rows: numbers only; the colour as a category string
(``Category(["red", "white"])``); and the colour as a category with every number nullable, half the
rows holding a null. Each is decoded by the fast path (msgspec, strings mapped to codes while
decoding) and by the full path (pydantic), for 1, 100 and 10,000 rows. Schemas and sizes are
interleaved round by round; each figure is the median of per-round medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Annotated

from lambda_ml_serve_wine_quality.data import PHYSICO_CHEMICAL
from pydantic import BaseModel, ConfigDict, create_model
from run import REPO, machine, rows_from

from lambda_ml_serve.fields import Category
from lambda_ml_serve.runtime.fast import FastPath, derive
from lambda_ml_serve.runtime.validation import RowValidator
from lambda_ml_serve.spec import ModelSpec

NUMBERS = list(PHYSICO_CHEMICAL)
SIZES = (1, 100, 10_000)
COLOUR = Annotated[str, Category(["red", "white"])]


def schema(name: str, number: object, colour: object) -> type[BaseModel]:
    fields = {f"f{i}": (number, ...) for i in range(len(NUMBERS))} | {"color": (colour, ...)}
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def spec(model: type[BaseModel]) -> ModelSpec:
    return ModelSpec(
        name="bench", version="1", backend="none", package="lambda_ml_serve", artifact="py.typed", schema=model
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "wine_concat.csv")
    args = parser.parse_args()
    wine = rows_from(args.data, max(SIZES))
    base = [{f"f{i}": float(row[name]) for i, name in enumerate(NUMBERS)} for row in wine]
    colours = ["red" if row.get("color_red") else "white" for row in wine]
    cases = {
        "numbers": (
            schema("Numbers", float, float),
            [r | {"color": float(c == "red")} for r, c in zip(base, colours, strict=True)],
        ),
        "category": (
            schema("Categories", float, COLOUR),
            [r | {"color": c} for r, c in zip(base, colours, strict=True)],
        ),
        "category + nulls": (
            schema("Nullable", float | None, COLOUR | None),
            [
                ({k: None for k in r} if j % 2 else r) | {"color": c}
                for j, (r, c) in enumerate(zip(base, colours, strict=True))
            ],
        ),
    }
    paths = {}
    for label, (model, rows) in cases.items():
        fast = FastPath(derive(spec(model)).plan, max(SIZES), {"/"})
        full = RowValidator(spec(model), max(SIZES))
        for size in SIZES:
            body = json.dumps(rows[:size])
            event = {"requestContext": {"http": {"method": "POST"}}, "rawPath": "/", "body": body}
            assert fast.batch_of(event) is not None, label
            paths[(label, size, "fast")] = lambda e=event, f=fast: f.batch_of(e)
            paths[(label, size, "full")] = lambda b=body, v=full: v.to_batch(json.loads(b))
    medians: dict[tuple, list[float]] = {key: [] for key in paths}
    for _ in range(args.rounds):
        for key, call in paths.items():
            calls = 5 if key[1] == 10_000 else 50
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            medians[key].append(statistics.median(times))
    print(machine())
    print("| schema | rows | fast path | full path | full / fast |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label in cases:
        for size in SIZES:
            fast = statistics.median(medians[(label, size, "fast")]) * 1e3
            full = statistics.median(medians[(label, size, "full")]) * 1e3
            print(f"| {label} | {size:,} | {fast:.3f} ms | {full:.3f} ms | {full / fast:.1f}x |")


if __name__ == "__main__":
    main()
