"""What the image runs for the ONNX backend: an onnxruntime session on one intra-op thread, numpy only.

A model takes either one matrix input (``[rows, features]``) or one input per feature (``[rows, 1]``
each, as converters write for named columns); each input gets the batch in its own element type.
What a row is answered with is chosen in this order: ``ModelSpec.extra["output"]`` (an output's
name), the answer ``prepare`` recorded in the model's metadata (``lambda_ml_serve.answer``), then
the probabilities when ``extra["predict_proba"]`` is set, else the model's first output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import ModelLoadError
from lambda_ml_serve.spec import Batch

#: Model metadata keys written by ``prepare`` (and readable from any ONNX file that sets them).
FEATURE_NAMES_KEY = "lambda_ml_serve.feature_names"
ANSWER_KEY = "lambda_ml_serve.answer"
PREDICT_PROBA = "predict_proba"
OUTPUT = "output"
THREADS = "threads"
#: ONNX tensor element types a float batch can be fed as, and their numpy names.
NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


class OnnxPredictor:
    """An inference session answering one value (or list, for probabilities) per row."""

    def __init__(self, session: Any, options: Mapping[str, Any]) -> None:
        import numpy as np

        self._np = np
        self._session = session
        inputs = session.get_inputs()
        for item in inputs:
            if item.type not in NUMPY_TYPES:
                raise ValueError(
                    f"input {item.name!r} is a {item.type}; the onnx backend feeds numbers "
                    f"({', '.join(NUMPY_TYPES)}): convert the model with numeric inputs"
                )
        self._inputs = [(item.name, np.dtype(NUMPY_TYPES[item.type])) for item in inputs]
        meta = session.get_modelmeta().custom_metadata_map
        if len(inputs) > 1:
            self.feature_names: Sequence[str] | None = [item.name for item in inputs]
        else:
            self.feature_names = json.loads(meta[FEATURE_NAMES_KEY]) if FEATURE_NAMES_KEY in meta else None
        outputs = [item.name for item in session.get_outputs()]
        answer = json.loads(meta.get(ANSWER_KEY, "{}"))
        if options.get(OUTPUT):
            answer = {"output": options[OUTPUT]}
        elif not answer and options.get(PREDICT_PROBA):
            answer = {"output": next((o for o in outputs if "prob" in o.lower()), outputs[-1])}
        self._output = answer.get("output", outputs[0])
        if self._output not in outputs:
            raise ValueError(f"the model has no output {self._output!r}; its outputs are {outputs}")
        #: A column of a matrix output (e.g. the positive class of a binary classifier), or None.
        self._column: int | None = answer.get("column")
        self.classes: list[Any] | None = answer.get("classes")

    def predict(self, batch: Batch) -> list[Any]:
        np = self._np
        matrix = np.frombuffer(batch.values, dtype=np.float32).reshape(batch.n_rows, batch.n_features)
        if len(self._inputs) == 1:
            name, dtype = self._inputs[0]
            feed = {name: matrix.astype(dtype, copy=False)}
        else:
            feed = {name: matrix[:, [j]].astype(dtype) for j, (name, dtype) in enumerate(self._inputs)}
        (result,) = self._session.run([self._output], feed)
        if isinstance(result, list) and result and isinstance(result[0], dict):
            # A ZipMap output (skl2onnx's default for classifiers): one {class: probability} per row.
            classes = list(result[0])
            return [[row[c] for c in classes] for row in result]
        result = np.asarray(result)
        if self._column is not None:
            result = result[:, self._column]
        elif result.ndim == 2 and result.shape[1] == 1:
            result = result[:, 0]
        return result.tolist()


def load(artifact: Path, options: Mapping[str, Any] | None = None) -> OnnxPredictor:
    """Open ``artifact`` with onnxruntime's CPU provider, on ``options["threads"]`` threads (default 1)."""
    import onnxruntime

    options = options or {}
    settings = onnxruntime.SessionOptions()
    # One thread: Lambda gives one or two vCPUs, and a pool's hand-offs cost more than they win on
    # small batches. Sequential execution keeps the inter-op pool from starting at all.
    settings.intra_op_num_threads = int(options.get(THREADS, 1))
    settings.inter_op_num_threads = 1
    settings.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    settings.log_severity_level = 3  # converters declare fixed output shapes; the warnings say nothing
    try:
        session = onnxruntime.InferenceSession(str(artifact), settings, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's error classes live in its private pybind module
        if "INVALID_PROTOBUF" not in str(exc):
            raise
        raise ModelLoadError(f"{artifact} is not an ONNX model (onnxruntime cannot parse it as one)") from None
    return OnnxPredictor(session, options)
