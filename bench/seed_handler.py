"""The seed-style handler: a faster variant of the original, JSON records -> DataFrame -> XGBRegressor.predict.

``json.loads`` and ``pd.DataFrame`` instead of ``pd.read_json``; nothing validated. Runs beside the
original handler, in the same environment.
"""

import json
import os

import pandas as pd
import xgboost as xgb

model = xgb.XGBRegressor()
model.load_model(os.environ["BENCH_MODEL"])


def handler(event, context):
    rows = json.loads(event["body"])
    predictions = model.predict(pd.DataFrame(rows)).tolist()
    return {"statusCode": 200, "body": json.dumps({"predictions": predictions})}
