"""The library's own predict on a DataFrame, as MLflow- or BentoML-style serving does it.

The JSON rows become ``pd.DataFrame(rows)`` with the training dtypes set (numbers as float64, null as
NaN; the category column as a pandas ``category`` with the model's categories for XGBoost, the strings
as they are for a scikit-learn encoder), one ``predict_proba`` gives the probabilities and each label is
the likeliest class, as ``predict`` picks it. Nothing is validated. ``BENCH_LIBRARY`` names a JSON file
written by bench/tabular.py: the model file, its library, the columns, their dtypes and the classes.
"""

import json
import os

import numpy as np
import pandas as pd

with open(os.environ["BENCH_LIBRARY"]) as fh:
    SETUP = json.load(fh)

if SETUP["library"] == "xgboost":
    import xgboost

    model = xgboost.XGBClassifier(n_jobs=1)
    model.load_model(SETUP["model"])
else:
    import joblib

    model = joblib.load(SETUP["model"])

COLUMNS = SETUP["columns"]
#: A list is a category column's categories; a string a numpy dtype.
DTYPES = {c: pd.CategoricalDtype(t) if isinstance(t, list) else t for c, t in SETUP["dtypes"].items()}
CLASSES = np.array(SETUP["classes"], dtype=object)


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as the DataFrame the model was trained on."""
    return pd.DataFrame(rows, columns=COLUMNS).astype(DTYPES)


def handler(event, context):
    probabilities = model.predict_proba(frame(json.loads(event["body"])))
    labels = CLASSES[probabilities.argmax(axis=1)]
    body = {"predictions": labels.tolist(), "probabilities": probabilities.tolist(), "classes": SETUP["classes"]}
    return {"statusCode": 200, "body": json.dumps(body)}
