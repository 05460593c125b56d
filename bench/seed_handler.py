"""The seed-style baseline: JSON records -> pandas DataFrame -> XGBRegressor.predict.

A few lines, as the original service did it; needs xgboost, pandas and scikit-learn installed.
"""

import json
import os

import pandas as pd
import xgboost as xgb

model = xgb.XGBRegressor()
model.load_model(os.environ["SEED_MODEL"])


def handler(event, context):
    rows = json.loads(event["body"])
    predictions = model.predict(pd.DataFrame(rows)).tolist()
    return {"statusCode": 200, "body": json.dumps({"predictions": predictions})}
