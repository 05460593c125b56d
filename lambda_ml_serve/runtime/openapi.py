"""The OpenAPI 3.1 document of one model's HTTP API, generated from its schema and the app's routes.

OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic writes, so the row schema goes in
as it is. Examples are the model's own example rows in every request format, with the real answer.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from lambda_ml_serve.runtime.errors import STATUS
from lambda_ml_serve.runtime.v2 import DATATYPES

if TYPE_CHECKING:
    from lambda_ml_serve.runtime.view import ModelView

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    "bad_request": "The body is not JSON (or CSV), not UTF-8, bad base64, bad compressed data or bad binary tensors.",
    "not_found": "No such route, or no such model (v2).",
    "method_not_allowed": "The route does not take this method; `allow` lists those it takes.",
    "payload_too_large": "More rows than the maximum per request, or a body that decompresses beyond 6 MB.",
    "unsupported_media_type": "A Content-Encoding other than gzip or deflate.",
    "validation_error": "Invalid rows: every bad field of every row, or a body in no known format.",
    "internal_error": "A fault of the service; the message quotes the request id.",
    "not_implemented": "The backend cannot explain this model (onnx); the message names the backends that can.",
}
FORMAT_TEXT = {
    "rows": "A list of rows",
    "instances": "Rows under `instances`",
    "instances_lists": "Rows as lists of values in feature order, under `instances`",
    "one_row": "One row object",
    "dataframe_split": "MLflow `dataframe_split` (pandas split orient)",
    "dataframe_records": "MLflow `dataframe_records`",
    "inputs": "MLflow `inputs` (a column per feature)",
    "pandas_columns": "pandas `DataFrame.to_json()` (column orient)",
    "columns": "A list of values per column",
}
#: What a route that reads a body may answer besides 200.
BODY_ERRORS = ("bad_request", "payload_too_large", "unsupported_media_type", "validation_error")


def _csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV with a header row (values as JSON writes them, so booleans stay ``true``)."""
    columns = list(rows[0]) if rows else []
    lines = [",".join(columns)]
    lines += [",".join("" if row.get(c) is None else json.dumps(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], example: Any = None, examples: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if examples is not None:
        media["examples"] = examples
    elif example is not None:
        media["example"] = example
    return {"application/json": media}


def _errors(types: tuple[str, ...], schema: str) -> dict[str, Any]:
    return {str(STATUS[t]): {"description": ERROR_TEXT[t], "content": _json(_ref(schema))} for t in types}


def _components(model: ModelView) -> dict[str, Any]:
    spec = model.spec
    row = spec.schema.model_json_schema(by_alias=True, ref_template=REF)
    schemas: dict[str, Any] = row.pop("$defs", {})
    n = len(spec.feature_names)
    values = {
        "type": "array",
        "description": f"One row as {n} values in feature order: {', '.join(spec.feature_names)}",
        "items": {"type": ["number", "boolean", "string", "null"]},
        "minItems": n,
        "maxItems": n,
    }
    row_or_values = {"anyOf": [_ref("Row"), _ref("RowValues")]}
    rows = {"type": "array", "items": _ref("Row"), "minItems": 1, "maxItems": model.max_rows}
    predictions = {"type": "array", "description": spec.output, "items": {}}
    if model.classes is not None:
        predictions = {"type": "array", "description": "each row's label", "items": {"enum": list(model.classes)}}
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
            "datatype": {"type": "string", "enum": sorted(DATATYPES)},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    schemas |= {
        "Row": row,
        "RowValues": values,
        "Rows": rows,
        "Instances": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {"instances": {"type": "array", "items": row_or_values, "minItems": 1}},
        },
        "DataframeSplit": {
            "type": "object",
            "required": ["dataframe_split"],
            "additionalProperties": False,
            "properties": {
                "dataframe_split": {
                    "type": "object",
                    "required": ["data"],
                    "additionalProperties": False,
                    "properties": {
                        "columns": {"type": "array", "items": {"type": "string"}},
                        "data": {"type": "array", "items": {"type": "array"}},
                        "index": {"type": "array"},
                    },
                }
            },
        },
        "DataframeRecords": {
            "type": "object",
            "required": ["dataframe_records"],
            "additionalProperties": False,
            "properties": {"dataframe_records": rows},
        },
        "MlflowInputs": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "inputs": {
                    "anyOf": [
                        {"type": "array", "items": row_or_values},
                        {"type": "object", "additionalProperties": {"type": "array"}},
                    ]
                }
            },
        },
        "Columns": {
            "type": "object",
            "description": "pandas' column orient ({column: {index: value}}) or a list per column",
            "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "array"}]},
        },
        "PredictRequest": {
            "anyOf": [
                _ref(name)
                for name in (
                    "Rows",
                    "Instances",
                    "DataframeSplit",
                    "DataframeRecords",
                    "MlflowInputs",
                    "Row",
                    "Columns",
                )
            ]
        },
        "PredictResponse": predictions if model.response == "predictions" else _response(model, predictions),
        "ExplanationHeader": {
            "type": "object",
            "description": "What the numbers are: exact path-dependent TreeSHAP values in the model's margin "
            "(before the link function); fields name the contributions, outputs the classes of a multi-class model",
            "required": ["method", "space", "link", "fields"],
            "properties": {
                "method": {"type": "string"},
                "space": {"const": "margin"},
                "link": {"type": "string", "enum": ["identity", "logistic", "softmax", "exp"]},
                "fields": {"type": "array", "items": {"type": "string"}},
                "outputs": {"type": "array", "description": "the class of each output (several outputs)"},
                "top": {"type": "integer"},
                "note": {"type": "string"},
                "additivity": {"type": "string"},
            },
        },
        "RowExplanation": {
            "type": "object",
            "description": "expected_value + sum(contributions) (+ rest) == margin; a list per class for "
            "several outputs",
            "required": ["margin", "expected_value", "contributions"],
            "properties": {
                "margin": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
                "expected_value": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
                "contributions": {
                    "anyOf": [
                        {"type": "object", "additionalProperties": {"type": "number"}},
                        {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}},
                    ]
                },
                "rest": {
                    "description": "the sum of the contributions top= left out",
                    "anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}],
                },
            },
        },
        "ExplainResponse": {
            "type": "object",
            "required": ["model", "version", "predictions", "explanation", "explanations"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "predictions": predictions,
                "explanation": _ref("ExplanationHeader"),
                "explanations": {"type": "array", "items": _ref("RowExplanation"), "maxItems": model.explain_max_rows},
            },
        },
        "ErrorDetail": {
            "type": "object",
            "required": ["row", "field", "message"],
            "properties": {
                "row": {"type": ["integer", "null"]},
                "field": {"type": ["string", "null"]},
                "message": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "message", "details"],
                    "properties": {
                        "type": {"type": "string", "enum": list(STATUS)},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": _ref("ErrorDetail")},
                    },
                }
            },
        },
        "Metadata": {"type": "object", "description": "Model name, version, features, input schema, example"},
        "V2Tensor": tensor,
        "V2InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "explain": {
                            "type": "boolean",
                            "description": "true: add the outputs margin, expected_value and contributions "
                            "([rows, fields], or [rows, classes, fields]; the fields in its parameters)",
                        }
                    },
                },
                "inputs": {"type": "array", "items": _ref("V2Tensor"), "minItems": 1},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "V2InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("V2Tensor")},
            },
        },
        "V2ModelMetadata": {"type": "object", "required": ["name", "platform", "inputs", "outputs"]},
        "V2Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "details": {"type": "array", "items": _ref("ErrorDetail")}},
        },
    }
    return {"schemas": schemas}


def _response(model: ModelView, predictions: dict[str, Any]) -> dict[str, Any]:
    """The answer object; a classifier's adds the class probabilities and the classes, named once."""
    properties = {"model": {"type": "string"}, "version": {"type": "string"}, "predictions": predictions}
    if model.classes is None:
        return {"type": "object", "required": list(properties), "properties": properties}
    n = len(model.classes)
    properties |= {
        "probabilities": {
            "type": "array",
            "description": "each row's class probabilities, in the order of `classes`",
            "items": {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n},
        },
        "classes": {"type": "array", "const": list(model.classes), "description": "the labels, in probability order"},
    }
    return {"type": "object", "required": list(properties), "properties": properties}


def openapi_document(model: ModelView) -> dict[str, Any]:
    """OpenAPI 3.1 for the function's routes; the examples are answered by the model itself."""
    spec = model.spec
    examples = model.examples
    answer = model.example_answer
    request_examples = {key: {"summary": FORMAT_TEXT[key], "value": value} for key, value in examples.items()}
    tensors = [
        {
            "name": feature,
            "shape": [len(examples["rows"])],
            # A category column is sent as its strings.
            "datatype": "BYTES" if any(isinstance(v, str) for v in column) else "FP32",
            "data": list(column),
        }
        for feature, column in examples["columns"].items()
    ]
    predict_op = {
        "summary": "Predict",
        "description": f"{spec.output}, one per row, in the order of the rows.",
        "requestBody": {"required": True, "content": _json(_ref("PredictRequest"), examples=request_examples)},
        "responses": {
            "200": {"description": "The predictions", "content": _json(_ref("PredictResponse"), answer)},
            **_errors((*BODY_ERRORS, "internal_error"), "Error"),
        },
    }
    explain_query = [
        {
            "name": "explain",
            "in": "query",
            "required": False,
            "description": "true: answer each row's explanation too (as POST /explain does)",
            "schema": {"type": "boolean"},
        },
        {
            "name": "top",
            "in": "query",
            "required": False,
            "description": "with explanations: keep the K largest contributions by magnitude (the others' sum is rest)",
            "schema": {"type": "integer", "minimum": 1, "maximum": len(spec.feature_names)},
        },
    ]
    explain_errors = ("bad_request", "payload_too_large", "validation_error", "not_implemented", "internal_error")
    explain_op = {
        "summary": "Explain",
        "operationId": "explain",
        "description": (
            "The predictions and, per row, exact TreeSHAP contributions: the expected value and one contribution "
            "per field, summing to the model's margin (per class for a multi-class model). At most "
            f"{model.explain_max_rows} rows per request (413 beyond); a backend that cannot explain answers 501."
        ),
        "parameters": explain_query[1:],
        "requestBody": {"required": True, "content": _json(_ref("PredictRequest"), examples=request_examples)},
        "responses": {
            "200": {
                "description": "Predictions and explanations",
                "content": _json(_ref("ExplainResponse"), model.example_explanation),
            },
            **_errors(explain_errors, "Error"),
        },
    }
    predict_op["parameters"] = explain_query
    predict_op["responses"] |= _errors(("not_implemented",), "Error")
    csv = {"text/csv": {"schema": {"type": "string"}, "example": _csv(examples["rows"])}}
    predict_op["requestBody"]["content"] |= csv
    invocations = {
        "summary": "Predict (MLflow's scoring protocol)",
        "description": "Any JSON format of `POST /`, or CSV with a header row; `params` is accepted and ignored.",
        "operationId": "invocations",
        "requestBody": {"required": True, "content": _json(_ref("PredictRequest"), examples=request_examples) | csv},
        "responses": {
            "200": {
                "description": "The predictions, in MLflow's response shape",
                "content": _json({"type": "object", "properties": {"predictions": {"type": "array"}}}),
            },
            **_errors((*BODY_ERRORS, "internal_error"), "Error"),
        },
    }
    ping = {"get": {"summary": "Health (MLflow, SageMaker)", "responses": {"200": {"description": "Healthy"}}}}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [spec.name]}}
    v1_predict = {
        "summary": "Predict (KServe's v1 protocol)",
        "description": '`{"instances": [...]}` or any JSON format of `POST /`.',
        "operationId": "kserve_v1_predict",
        "parameters": [name],
        "requestBody": {"required": True, "content": _json(_ref("PredictRequest"), examples=request_examples)},
        "responses": {
            "200": {
                "description": "The predictions (a classifier adds probabilities and classes)",
                "content": _json({"type": "object", "properties": {"predictions": {"type": "array"}}}),
            },
            **_errors((*BODY_ERRORS, "internal_error"), "Error"),
        },
    }
    v2_errors = _errors((*BODY_ERRORS, "not_implemented"), "V2Error")
    paths = {
        "/": {
            "get": {
                "summary": "Model metadata",
                "responses": {"200": {"description": "Metadata", "content": _json(_ref("Metadata"))}},
            },
            "post": predict_op | {"operationId": "predict_root"},
        },
        "/predict": {"post": predict_op | {"operationId": "predict"}},
        "/explain": {"post": explain_op},
        "/invocations": {"post": invocations},
        "/ping": ping,
        "/health": copy.deepcopy(ping),
        "/v1/models/{name}": {
            "get": {
                "summary": "Model readiness (KServe's v1 protocol)",
                "parameters": [name],
                "responses": {"200": {"description": "`{name, ready: true}`"}},
            }
        },
        "/v1/models/{name}:predict": {"post": v1_predict},
        "/v1/models/{name}:explain": {
            "post": explain_op | {"operationId": "kserve_v1_explain", "parameters": [name, *explain_query[1:]]}
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/v2": {"get": {"summary": "v2 server and extensions", "responses": {"200": {"description": "Server"}}}},
        "/v2/health/live": {"get": {"summary": "v2 liveness", "responses": {"200": {"description": "Live"}}}},
        "/v2/health/ready": {"get": {"summary": "v2 readiness", "responses": {"200": {"description": "Ready"}}}},
        "/v2/models/{name}": {
            "get": {
                "summary": "v2 model metadata",
                "parameters": [name],
                "responses": {
                    "200": {"description": "Metadata", "content": _json(_ref("V2ModelMetadata"))},
                    **v2_errors,
                },
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "summary": "v2 inference",
                "operationId": "v2_infer",
                "parameters": [name],
                "requestBody": {
                    "required": True,
                    "content": _json(_ref("V2InferenceRequest"), {"inputs": tensors}),
                },
                "responses": {
                    "200": {"description": "The predictions tensor", "content": _json(_ref("V2InferenceResponse"))},
                    **v2_errors,
                },
            }
        },
    }
    if model.docs:
        paths["/docs"] = {
            "get": {
                "summary": "A page to try the model",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        }
    # Every route can answer these; v2 routes answer errors in v2's shape.
    for path, item in paths.items():
        common = _errors(
            ("not_found", "method_not_allowed", "internal_error"), "V2Error" if path.startswith("/v2/") else "Error"
        )
        for op in item.values():
            op["responses"] |= common
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{spec.name} (lambda-ml-serve)", "version": spec.version, "description": spec.description},
        "paths": paths,
        "components": _components(model),
    }
