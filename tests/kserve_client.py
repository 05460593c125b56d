"""Run in the kserve environment: KServe's ``InferenceRESTClient`` asks ``BASE_URL`` for predictions.

Reads rows (a JSON list of objects) on stdin and prints ``{case: predictions}`` as JSON. First the
client exactly as it comes (``RESTConfig()``: KServe's own v1 protocol, ``GET /v1/models/NAME`` and
``POST /v1/models/NAME:predict`` with ``{"instances": rows}``), then over the Open Inference Protocol
(``protocol="v2"``) with its other defaults (tensors set from numpy are sent as binary) and with JSON
tensors.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

MODEL = "wine_quality"


def per_feature(rows: list[dict], dtype: str, binary: bool) -> list[InferInput]:
    tensors = []
    for name in rows[0]:
        tensor = InferInput(name, [len(rows)], dtype)
        values = numpy.asarray([row[name] for row in rows], dtype=numpy.float32 if dtype == "FP32" else numpy.float64)
        tensor.set_data_from_numpy(values, binary_data=binary)
        tensors.append(tensor)
    return tensors


def matrix(rows: list[dict], dtype: str, binary: bool) -> list[InferInput]:
    values = numpy.asarray([list(row.values()) for row in rows], dtype=numpy.float32 if dtype == "FP32" else "f8")
    tensor = InferInput("input-0", list(values.shape), dtype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return [tensor]


async def v1_default(base_url: str, rows: list[dict]) -> list[float]:
    client = InferenceRESTClient(RESTConfig())
    try:
        assert await client.is_model_ready(base_url, MODEL)
        response = await client.infer(base_url, {"instances": rows}, model_name=MODEL)
    finally:
        await client.close()
    return response["predictions"]


async def main(base_url: str, rows: list[dict]) -> dict[str, list[float]]:
    answers = {"v1-default": await v1_default(base_url, rows)}
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        assert await client.is_server_ready(base_url) and await client.is_server_live(base_url)
        assert await client.is_model_ready(base_url, MODEL)
        for layout in (per_feature, matrix):
            for dtype in ("FP32", "FP64"):
                for binary in (True, False):
                    inputs = layout(rows, dtype, binary)
                    response = await client.infer(base_url, InferRequest(MODEL, inputs), model_name=MODEL)
                    case = f"{layout.__name__}-{dtype}-{'binary' if binary else 'json'}"
                    answers[case] = response.outputs[0].as_numpy().tolist()
    finally:
        await client.close()
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.stdin.read())))))
