"""An MLflow model directory (``MLmodel`` + the flavour's file): which file to serve, its signature, its example.

Read with PyYAML alone: MLflow itself is needed neither here nor in the image. The flavours served are
those whose file a backend reads as it is: xgboost, lightgbm, sklearn (a pickle) and onnx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_ml_serve.modelfiles import ModelFileError

MLMODEL = "MLmodel"
#: Flavour -> the key of its ``MLmodel`` entry that names the model file.
FLAVOURS = {"xgboost": "data", "lightgbm": "data", "sklearn": "pickled_model", "onnx": "data"}
#: MLflow signature column types -> the feature kinds of :mod:`.describe`.
SIGNATURE_KINDS = {
    "double": "float",
    "float": "float",
    "long": "integer",
    "integer": "integer",
    "boolean": "boolean",
    "string": "categorical",
}


@dataclass
class SignatureColumn:
    name: str
    kind: str
    required: bool = True


@dataclass
class MlflowModel:
    """What an MLflow model directory holds for serving."""

    directory: Path
    flavour: str
    #: The flavour's model file, which the plugin ships and the backend loads.
    artifact: Path
    columns: list[SignatureColumn] = field(default_factory=list)
    #: The input example as rows keyed by column name (None values for missing ones).
    example: list[dict[str, Any]] = field(default_factory=list)


def read_mlmodel(directory: Path) -> MlflowModel:
    """Read ``directory/MLmodel``; refuse in one line what cannot be served."""
    import yaml

    path = Path(directory) / MLMODEL
    if not path.is_file():
        raise ModelFileError(
            f"{directory} is a directory without an {MLMODEL} file; give a model file, or an MLflow model directory"
        )
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError, OSError) as exc:
        raise ModelFileError(
            f"{path} is not a readable MLmodel file ({type(exc).__name__}); save the model again"
        ) from None
    flavours = (meta or {}).get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavours, dict):
        raise ModelFileError(f"{path} names no flavours; save the model again with mlflow.<flavour>.save_model")
    flavour = next((f for f in FLAVOURS if f in flavours), None)
    if flavour is None:
        named = ", ".join(sorted(f for f in flavours if f != "python_function")) or "python_function only"
        raise ModelFileError(
            f"{path}: flavour {named} is not served; lambda-ml-serve serves the xgboost, lightgbm, sklearn and onnx "
            "flavours (a python_function model runs arbitrary code)"
        )
    entry = flavours[flavour] if isinstance(flavours[flavour], dict) else {}
    if flavour == "sklearn" and entry.get("serialization_format", "cloudpickle") not in ("pickle", "cloudpickle"):
        raise ModelFileError(
            f"{path}: the sklearn model is saved as {entry.get('serialization_format')!r}; save it with "
            "serialization_format='cloudpickle' or 'pickle'"
        )
    name = entry.get(FLAVOURS[flavour]) or entry.get("data")
    artifact = (Path(directory) / name) if isinstance(name, str) and name else None
    if artifact is None or not artifact.is_file() or artifact.parent.resolve() != Path(directory).resolve():
        raise ModelFileError(f"{path}: the {flavour} flavour's model file {name!r} is not in {directory}")
    model = MlflowModel(Path(directory), flavour, artifact)
    signature = meta.get("signature")
    model.columns = _signature(path, signature.get("inputs") if isinstance(signature, dict) else None)
    model.example = _example(Path(directory), meta.get("saved_input_example_info"))
    return model


def _signature(path: Path, inputs: Any) -> list[SignatureColumn]:
    if not inputs:
        return []
    try:
        specs = json.loads(inputs) if isinstance(inputs, str) else inputs
    except ValueError:
        raise ModelFileError(f"{path}: its signature's inputs are not JSON; save the model again") from None
    if not isinstance(specs, list):
        raise ModelFileError(f"{path}: its signature's inputs are not a list of columns; save the model again")
    columns = []
    for spec in specs:
        if not isinstance(spec, dict) or "name" not in spec:
            raise ModelFileError(
                f"{path}: its signature is a tensor signature without column names; log the model with a "
                "DataFrame input example or a column signature"
            )
        kind = SIGNATURE_KINDS.get(str(spec.get("type")))
        if kind is None:
            raise ModelFileError(
                f"{path}: signature column {spec['name']!r} has type {spec.get('type')!r}; served columns are "
                f"{', '.join(SIGNATURE_KINDS)}"
            )
        columns.append(SignatureColumn(str(spec["name"]), kind, bool(spec.get("required", True))))
    return columns


def _example(directory: Path, info: Any) -> list[dict[str, Any]]:
    """The saved input example as rows (pandas split or records orient)."""
    name = info.get("artifact_path") if isinstance(info, dict) else None
    if not isinstance(name, str) or not name:
        return []
    example = directory / name
    if example.resolve().parent != directory.resolve():
        return []  # only a file of the model directory itself
    try:
        data = json.loads(example.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    data = data.get("dataframe_split", data.get("dataframe_records", data)) if isinstance(data, dict) else data
    if isinstance(data, dict) and isinstance(data.get("columns"), list) and isinstance(data.get("data"), list):
        return [dict(zip(data["columns"], row, strict=False)) for row in data["data"] if isinstance(row, list)]
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    return []
