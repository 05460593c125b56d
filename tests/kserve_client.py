"""Run in the kserve environment: KServe's ``InferenceRESTClient`` asks ``BASE_URL`` for predictions.

Reads rows (a JSON list of objects) on stdin and prints ``{case: predictions}`` as JSON. The client
keeps its defaults (tensors set from numpy are sent as binary) except the protocol: its default is
KServe's own v1 (``/v1/models/NAME:predict``); the Open Inference Protocol is v2.
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


async def main(base_url: str, rows: list[dict]) -> dict[str, list[float]]:
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    answers = {}
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
