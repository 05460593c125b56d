"""A small Lambda handler for tune's tests: holds BALLAST_MB of touched memory from init, sums each row.

SLEEP_S makes each call that long, for tests that interrupt a measurement.
"""

import json
import os
import time

_ballast = bytearray(int(os.environ.get("BALLAST_MB", "0")) * 2**20)
for _page in range(0, len(_ballast), 4096):
    _ballast[_page] = 1  # touched, so the pages are really resident


def handler(event, context):
    time.sleep(float(os.environ.get("SLEEP_S", "0")))
    rows = json.loads(event["body"])
    return {"statusCode": 200, "body": json.dumps([sum(row.values()) for row in rows])}
