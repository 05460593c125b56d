"""What the image runs for the ONNX backend: an onnxruntime session on one intra-op thread, numpy only.

A model takes either one matrix input (``[rows, features]``) or one input per feature (``[rows, 1]``
each, as converters write for named columns); each input gets the batch in its own element type. A
string input is a category feature: the batch holds its codes (see ``lambda_ml_serve.fields``),
turned back into the category strings here from the categories ``prepare`` recorded in the model's
metadata (``lambda_ml_serve.categories``) or given in ``ModelSpec.extra["categories"]``
(``{input name: [strings in code order]}``). A missing or unknown category (NaN, or code -1) is
fed as a string no category has, which the converted encoders answer as scikit-learn's do.
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
from lambda_ml_serve.spec import Batch, ExplainUnavailable

#: Model metadata keys written by ``prepare`` (and readable from any ONNX file that sets them).
FEATURE_NAMES_KEY = "lambda_ml_serve.feature_names"
ANSWER_KEY = "lambda_ml_serve.answer"
CATEGORIES_KEY = "lambda_ml_serve.categories"
CATEGORIES = "categories"
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
STRING = "tensor(string)"
#: What a missing or unknown category is fed as: a string no encoder was fitted on.
UNKNOWN_CATEGORY = "\x00unknown category"


class OnnxPredictor:
    """An inference session answering one value (or list, for probabilities) per row."""

    def __init__(self, session: Any, options: Mapping[str, Any]) -> None:
        import numpy as np

        self._np = np
        self._session = session
        inputs = session.get_inputs()
        meta = session.get_modelmeta().custom_metadata_map
        categories = {**json.loads(meta.get(CATEGORIES_KEY, "{}")), **dict(options.get(CATEGORIES) or {})}
        #: Per string input, the strings its codes stand for, then the unknown string (index n).
        self._lookups: dict[str, Any] = {}
        for item in inputs:
            if item.type == STRING:
                known = categories.get(item.name)
                if not known:
                    raise ValueError(
                        f"input {item.name!r} is a string tensor and its categories are not known; list them in "
                        f"ModelSpec.extra[{CATEGORIES!r}][{item.name!r}] (the strings in code order)"
                    )
                self._lookups[item.name] = np.array([*map(str, known), UNKNOWN_CATEGORY], dtype=object)
            elif item.type not in NUMPY_TYPES:
                raise ValueError(
                    f"input {item.name!r} is a {item.type}; the onnx backend feeds numbers "
                    f"({', '.join(NUMPY_TYPES)}) and category strings: convert the model with those inputs"
                )
        self._inputs = [(item.name, np.dtype(NUMPY_TYPES.get(item.type, "object"))) for item in inputs]
        #: A model with a double input is fed float64 batches (the client's values as written); any other
        #: reads float32, so the batch is packed in it.
        self.input_type = "float64" if any(item.type == "tensor(double)" for item in inputs) else "float32"
        stored = json.loads(meta[FEATURE_NAMES_KEY]) if FEATURE_NAMES_KEY in meta else None
        if len(inputs) > 1:
            # A converter may rename the inputs (skl2onnx: "fixed acidity" -> "fixed_acidity"); the
            # names recorded at conversion are the features', input by input.
            names = stored if stored is not None and len(stored) == len(inputs) else [i.name for i in inputs]
            self.feature_names: Sequence[str] | None = names
        else:
            self.feature_names = stored
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

    #: ONNX models are not explained (see ``explain``).
    explains = False

    def explain(self, batch: Batch) -> Any:
        """Refused: an ONNX graph keeps no node covers, which exact TreeSHAP weighs paths by."""
        raise ExplainUnavailable(
            "the onnx backend cannot explain predictions: an ONNX graph keeps no tree statistics (covers) that "
            "exact TreeSHAP needs; serve the tree model with backend xgboost, lightgbm, sklearn or compiled"
        )

    def predict(self, batch: Batch) -> list[Any]:
        np = self._np
        matrix = np.frombuffer(batch.values, dtype=batch.values.typecode).reshape(batch.n_rows, batch.n_features)
        if len(self._inputs) == 1:
            name, dtype = self._inputs[0]
            feed = {name: matrix.astype(dtype, copy=False)}
        else:
            feed = {
                name: self._strings(name, matrix[:, j]) if name in self._lookups else matrix[:, [j]].astype(dtype)
                for j, (name, dtype) in enumerate(self._inputs)
            }
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

    def _strings(self, name: str, codes: Any) -> Any:
        """A category column's codes as its strings, ``[rows, 1]``; NaN, -1 and non-codes as the unknown one."""
        np = self._np
        lookup = self._lookups[name]
        n = len(lookup) - 1
        whole = np.nan_to_num(codes, nan=-1.0)
        known = (whole >= 0) & (whole < n) & (whole == np.floor(whole))
        index = np.where(known, whole, n).astype(np.intp)
        return lookup[index].reshape(-1, 1)


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
