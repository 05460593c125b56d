"""The original service's handler, as it works: the body through ``pd.read_json`` into ``XGBRegressor.predict``.

Nothing is validated; the answer is the bare list of predictions. Runs in bench/.venv-original, with
the xgboost, pandas and scikit-learn versions that ran it (see ORIGINAL_PACKAGES in bench/variants.py).
"""

import json
import os

import pandas as pd
import xgboost as xgb

model = xgb.XGBRegressor()
model.load_model(os.environ["BENCH_MODEL"])


def handler(event, context):
    df = pd.read_json(event["body"])
    return {"statusCode": 200, "body": json.dumps(model.predict(df).tolist())}
