"""The Open Inference Protocol v2 (KServe, MLServer, Triton): tensors in, tensors out.

An inference request carries either one tensor per feature (named by the feature, shape ``[n]`` or
``[n, 1]``) or one ``[n, features]`` tensor in feature order; both become the same rows as every other
format, so validation answers the same 422 details with row and field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from lambda_ml_serve.runtime.errors import ApiError

#: v2 paths: /v2/models/{name}[/versions/{version}][/infer|/ready]
MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready)?$")
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)
OUTPUT = "predictions"
#: A classifier's second output: the class probabilities, ``[n, classes]``.
PROBABILITIES = "probabilities"


def _flatten(data: Any) -> list[Any]:
    """v2 allows tensor data flat (row-major) or nested as the shape; both become one flat list.

    Iterative, so however deep the nesting a client sends, it costs no recursion.
    """
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _tensor(tensor: Any, i: int) -> tuple[str, list[int], list[Any]]:
    if not isinstance(tensor, dict):
        raise ApiError("validation_error", f"inputs[{i}] must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise ApiError("validation_error", f"inputs[{i}] lacks {', '.join(missing)}")
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(name, str):
        raise ApiError("validation_error", f"inputs[{i}].name must be a string")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ApiError("validation_error", f"inputs[{i}] ({name!r}): shape must be a list of sizes, e.g. [2, 13]")
    if datatype not in DATATYPES:
        raise ApiError(
            "validation_error", f"inputs[{i}] ({name!r}): datatype must be one of {', '.join(sorted(DATATYPES))}"
        )
    data = _flatten(tensor["data"])
    if len(data) != math.prod(shape):
        raise ApiError(
            "validation_error",
            f"inputs[{i}] ({name!r}): shape {shape} holds {math.prod(shape)} values but data has {len(data)}",
        )
    return name, shape, data


def rows_of_infer(payload: Any, features: tuple[str, ...]) -> list[Any]:
    """An inference request's tensors -> rows keyed by feature (validation happens afterwards)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise ApiError(
            "validation_error",
            'a v2 inference request is {"inputs": [{"name", "shape", "datatype", "data"}]}: one tensor per '
            "feature, or one [rows, features] tensor in feature order",
        )
    tensors = [_tensor(t, i) for i, t in enumerate(payload["inputs"])]
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] == len(features) != 1:
        _, (n, width), data = tensors[0]
        return [dict(zip(features, data[r * width : (r + 1) * width], strict=True)) for r in range(n)]
    for name, shape, _ in tensors:
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise ApiError(
                "validation_error",
                f"tensor {name!r} has shape {shape}: send one [n] tensor per feature, or a single "
                f"[n, {len(features)}] tensor in feature order",
            )
    sizes = {len(data) for _, _, data in tensors}
    if len(sizes) > 1:
        raise ApiError("validation_error", "the input tensors hold different numbers of rows")
    names = [name for name, _, _ in tensors]
    if len(set(names)) != len(names):
        raise ApiError("validation_error", "two input tensors have the same name")
    n = sizes.pop()
    return [{name: data[r] for name, _, data in tensors} for r in range(n)]


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def _output(name: str, values: list[Any]) -> dict[str, Any]:
    if values and all(isinstance(v, list) for v in values):
        shape = [len(values), len(values[0])]
        data = [v for row in values for v in row]
    else:
        shape, data = [len(values)], values
    return {"name": name, "shape": shape, "datatype": _datatype(data), "data": data}


def infer_response(
    name: str, version: str, predictions: list[Any], request_id: str | None, classes: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The v2 inference response: one output tensor ``predictions``, ``[n]`` or ``[n, k]``.

    A classifier answers two: ``predictions`` (a label per row, ``[n]``) and ``probabilities``
    (``[n, classes]``), each naming the classes in its ``parameters``.
    """
    if classes is None:
        outputs = [_output(OUTPUT, predictions)]
    else:
        from lambda_ml_serve.runtime.classifier import answer

        answered = answer(predictions, classes)
        parameters = {"classes": list(classes)}
        outputs = [
            _output(OUTPUT, answered["predictions"]) | {"parameters": parameters},
            _output(PROBABILITIES, answered["probabilities"]) | {"parameters": parameters},
        ]
    response: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    return response


def _input_datatype(prop: dict[str, Any]) -> str:
    kinds = [prop, *prop.get("anyOf", ())]
    if any("x-categories" in p or p.get("type") == "string" for p in kinds):
        return "BYTES"
    return "BOOL" if any(p.get("type") == "boolean" for p in kinds) else "FP32"


def model_metadata(
    name: str, version: str, platform: str, input_schema: dict[str, Any], classes: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The v2 model metadata: one input tensor per feature (BYTES for a category), the predictions out."""
    properties = input_schema.get("properties", {})
    inputs = [
        {"name": feature, "datatype": _input_datatype(prop), "shape": [-1]} for feature, prop in properties.items()
    ]
    if classes is not None:
        parameters = {"classes": list(classes)}
        labels = _datatype(list(classes))
        return {
            "name": name,
            "versions": [version],
            "platform": platform,
            "inputs": inputs,
            "outputs": [
                {"name": OUTPUT, "datatype": labels, "shape": [-1], "parameters": parameters},
                {"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(classes)], "parameters": parameters},
            ],
        }
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": inputs,
        "outputs": [{"name": OUTPUT, "datatype": "FP64", "shape": [-1]}],
    }


def error_body(error: ApiError) -> dict[str, Any]:
    """v2 errors are ``{"error": "<message>"}``; the row/field details ride along."""
    body: dict[str, Any] = {"error": f"{error.type}: {error.message}"}
    if error.details:
        body["details"] = error.details
    return body
