"""Runs inside a fresh interpreter: import a handler, answer events, report timings as JSON lines.

    worker.py HANDLER_MODULE PRELOAD_JSON cold|serve

Only the standard library is imported here, so the variant's own imports are all that is measured.
Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process), so the parent can
split a cold start into interpreter start, imports, model load and first answer.

``cold``: stdin holds one request body; prints the four timestamps and exits.
``serve``: the first stdin line maps body ids to bodies; each further line is a command:
``{"run": id, "repeats": n}`` answers with n handler timings (seconds), ``{"answer": id}`` with the
response body, ``{"done": true}`` with peak RSS and the heavy modules imported, then exits.
"""

import time

STARTED = time.monotonic()

import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

#: Modules whose presence in sys.modules the report shows.
HEAVY = ("numpy", "scipy", "pandas", "sklearn", "xgboost", "boto3")


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


def answer(handler, ev: dict) -> str:
    response = handler(ev, None)
    if response.get("statusCode") != 200:
        raise SystemExit(f"the handler answered {response.get('statusCode')}: {str(response.get('body'))[:300]}")
    return response["body"]


def reply(payload: object) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> None:
    module_name, preload, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    for name in preload:
        importlib.import_module(name)
    imported = time.monotonic()
    handler = importlib.import_module(module_name).handler
    loaded = time.monotonic()
    if mode == "cold":
        answer(handler, event(sys.stdin.read()))
        reply({"started": STARTED, "imported": imported, "loaded": loaded, "answered": time.monotonic()})
        return
    events = {key: event(body) for key, body in json.loads(sys.stdin.readline()).items()}
    warmed: set[str] = set()
    for line in sys.stdin:
        command = json.loads(line)
        if "run" in command:
            ev = events[command["run"]]
            if command["run"] not in warmed:  # the first calls of a size warm caches and allocators
                for _ in range(3):
                    answer(handler, ev)
                warmed.add(command["run"])
            times = []
            for _ in range(command["repeats"]):
                started = time.perf_counter()
                handler(ev, None)
                times.append(time.perf_counter() - started)
            reply(times)
        elif "answer" in command:
            reply(answer(handler, events[command["answer"]]))
        else:
            reply({"max_rss_kb": peak_rss_kb(), "modules": [m for m in HEAVY if m in sys.modules]})
            return


if __name__ == "__main__":
    main()
