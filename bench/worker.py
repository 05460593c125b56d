"""Runs inside a fresh interpreter: import a handler, answer events, print timings as JSON.

Only the standard library is imported here, so the variant's own imports are all that is measured.
"""

import importlib
import json
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


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM).

    Not getrusage's ru_maxrss: Linux carries that across exec, so a child would report the larger
    RSS of the parent that started it.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


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
    results["max_rss_kb"] = peak_rss_kb()
    results["modules"] = sorted(m for m in sys.modules if m in ("pandas", "sklearn", "boto3"))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
