"""Runs inside a fresh interpreter: import a handler, answer events, print timings as JSON.

Only the standard library is imported here, so the variant's own imports are all that is measured.
"""

import importlib
import json
import resource
import sys
import time


def event(body: str) -> dict:
    return {
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"requestId": "bench", "http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "body": body,
        "isBase64Encoded": False,
    }


def main() -> None:
    module_name, mode = sys.argv[1], sys.argv[2]
    bodies = json.loads(sys.stdin.read())
    if mode == "cold":
        handler = importlib.import_module(module_name).handler
        response = handler(event(bodies["1"]), None)
        assert response["statusCode"] == 200, response
        print(json.dumps({"ready": time.time()}), flush=True)
        return
    handler = importlib.import_module(module_name).handler
    repeats = json.loads(sys.argv[3])
    results = {}
    for size, body in bodies.items():
        ev = event(body)
        for _ in range(3):
            assert handler(ev, None)["statusCode"] == 200
        times = []
        for _ in range(repeats[size]):
            started = time.perf_counter()
            handler(ev, None)
            times.append(time.perf_counter() - started)
        results[size] = times
    results["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["modules"] = sorted(m for m in sys.modules if m in ("pandas", "sklearn", "boto3"))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
