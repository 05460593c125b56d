"""The Open Inference Protocol v2 (KServe, MLServer, Triton): tensors in, tensors out.

An inference request carries either one tensor per feature (named by the feature, shape ``[n]`` or
``[n, 1]``) or one ``[n, features]`` tensor in feature order; both become the same rows as every other
format, so validation answers the same 422 details with row and field.
"""

from __future__ import annotations

import json
import math
import re
import struct
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
INFER_SHAPE = (
    'a v2 inference request is {"inputs": [{"name", "shape", "datatype", "data"}]}: one tensor per '
    "feature, or one [rows, features] tensor in feature order"
)
#: The binary tensor extension: the JSON header's length, the rest of the body is the tensors' bytes.
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data",)
BINARY = "application/octet-stream"
#: struct's format of one little-endian element of each fixed-size datatype.
_ELEMENT = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}


def _flatten(data: Any) -> list[Any]:
    """v2 allows tensor data flat (row-major) or nested as the shape; both become one flat list.

    Iterative, so however deep the nesting a client sends, it costs no recursion.
    """
    if not isinstance(data, list):
        return [data]
    if list not in set(map(type, data)):
        return data  # already flat, as binary tensors and flat JSON data are
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
        raise ApiError("validation_error", INFER_SHAPE)
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


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data of a body (all JSON when no header length is given)."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise ApiError("bad_request", "Inference-Header-Content-Length must be the JSON header's length in bytes")
    length = int(text)
    if length > len(body):
        raise ApiError(
            "bad_request",
            f"Inference-Header-Content-Length says the JSON header is {length} bytes, but the whole body has "
            f"{len(body)}: the body is truncated or the length is wrong",
        )
    return body[:length], body[length:]


def attach_binary(payload: Any, data: bytes) -> None:
    """Give each input sent as binary (``parameters.binary_data_size``) its values, read from ``data`` in order."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    offset = 0
    for i, tensor in enumerate(inputs if isinstance(inputs, list) else []):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        if type(size) is not int or size < 0:
            raise ApiError("bad_request", f"inputs[{i}].parameters.binary_data_size must be a number of bytes")
        if "data" in tensor:
            raise ApiError("bad_request", f"inputs[{i}] has both data and binary_data_size; send its values one way")
        if size > len(data) - offset:
            raise ApiError(
                "bad_request",
                f"inputs[{i}] declares {size} bytes of binary data but only {len(data) - offset} remain in the "
                "body: the body is truncated or a binary_data_size is wrong",
            )
        tensor["data"] = _binary_values(tensor, data[offset : offset + size], i)
        offset += size
    if offset != len(data):
        raise ApiError(
            "bad_request",
            f"the body has {len(data) - offset} bytes of binary data beyond what the inputs' binary_data_size "
            "declare: a binary_data_size or Inference-Header-Content-Length is wrong",
        )


def _binary_values(tensor: dict[str, Any], chunk: bytes, i: int) -> list[Any]:
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype == "BYTES":
        values = _bytes_elements(chunk, i)
    elif datatype in _ELEMENT:
        width = struct.calcsize("<" + _ELEMENT[datatype])
        if len(chunk) % width:
            raise ApiError(
                "bad_request",
                f"inputs[{i}]: binary_data_size {len(chunk)} is not a whole number of {datatype} values "
                f"({width} bytes each)",
            )
        values = list(struct.unpack(f"<{len(chunk) // width}{_ELEMENT[datatype]}", chunk))
    else:
        raise ApiError("bad_request", f"inputs[{i}]: binary data needs a datatype among {', '.join(sorted(DATATYPES))}")
    if isinstance(shape, list) and all(type(d) is int for d in shape) and len(values) != math.prod(shape):
        raise ApiError(
            "bad_request",
            f"inputs[{i}]: its binary data holds {len(values)} {datatype} values but shape {shape} needs "
            f"{math.prod(shape)}: binary_data_size or the shape is wrong",
        )
    return values


def _bytes_elements(chunk: bytes, i: int) -> list[str]:
    """BYTES elements: each a 4-byte little-endian length and that many bytes (UTF-8 text here)."""
    values: list[str] = []
    offset = 0
    while offset < len(chunk):
        if len(chunk) - offset < 4:
            raise ApiError("bad_request", f"inputs[{i}]: BYTES data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if length > len(chunk) - offset:
            raise ApiError("bad_request", f"inputs[{i}]: a BYTES element's length runs past its binary_data_size")
        try:
            values.append(chunk[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError("bad_request", f"inputs[{i}]: a BYTES element is not UTF-8 text") from None
        offset += length
    return values


def wants_binary(payload: dict[str, Any]) -> bool:
    """Whether the request asks for the predictions as binary data (per output, or for every output)."""
    parameters = payload.get("parameters")
    binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    outputs = payload.get("outputs")
    for output in outputs if isinstance(outputs, list) else []:
        options = output.get("parameters") if isinstance(output, dict) and output.get("name") == OUTPUT else None
        if isinstance(options, dict) and "binary_data" in options:
            return options["binary_data"] is True
    return binary


def binary_response(response: dict[str, Any]) -> tuple[bytes, int]:
    """An inference response with its outputs' data as binary, in output order: the body and its header's length."""
    parts = []
    for output in response["outputs"]:
        data, datatype = output.pop("data"), output["datatype"]
        if datatype == "BYTES":
            encoded = [str(v).encode("utf-8") for v in data]
            raw = b"".join(struct.pack("<I", len(e)) + e for e in encoded)
        else:
            raw = struct.pack(f"<{len(data)}{_ELEMENT[datatype]}", *data)
        # A classifier's outputs keep their "classes" beside the size.
        output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(raw)}
        parts.append(raw)
    header = json.dumps(response, separators=(",", ":")).encode("utf-8")
    return header + b"".join(parts), len(header)


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


def explanation_outputs(explained: dict[str, Any]) -> list[dict[str, Any]]:
    """An explanation as v2 output tensors: ``margin``, ``expected_value`` (``[n]`` or ``[n, classes]``)
    and ``contributions`` (``[n, fields]`` or ``[n, classes, fields]``), the fields named in its parameters."""
    header, rows = explained["explanation"], explained["explanations"]
    fields = header["fields"]
    several = "outputs" in header and rows and isinstance(rows[0]["margin"], list)
    parameters = {k: header[k] for k in ("method", "space", "link", "fields", "outputs", "note") if k in header}
    n = len(rows)
    if several:
        k = len(rows[0]["margin"])
        margin = [m for row in rows for m in row["margin"]]
        base = [b for row in rows for b in row["expected_value"]]
        values = [c[f] for row in rows for c in row["contributions"] for f in fields]
        shapes = ([n, k], [n, k], [n, k, len(fields)])
    else:
        margin = [row["margin"] for row in rows]
        base = [row["expected_value"] for row in rows]
        values = [row["contributions"][f] for row in rows for f in fields]
        shapes = ([n], [n], [n, len(fields)])
    return [
        {"name": "margin", "shape": shapes[0], "datatype": "FP64", "data": margin},
        {"name": "expected_value", "shape": shapes[1], "datatype": "FP64", "data": base},
        {"name": "contributions", "shape": shapes[2], "datatype": "FP64", "data": values, "parameters": parameters},
    ]


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
    """v2 errors are ``{"error": "<message>"}``; the row/field details ride along, bounded as every error is."""
    bounded = error.to_dict()["error"]
    body: dict[str, Any] = {"error": f"{error.type}: {bounded['message']}"}
    if bounded["details"]:
        body["details"] = bounded["details"]
    return body
