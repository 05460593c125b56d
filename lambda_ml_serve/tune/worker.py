"""Runs inside the measured process: import a handler, answer Function URL events, report timings as JSON lines.

    python -S -E -c BOOTSTRAP HANDLER_MODULE PRELOAD_JSON cold|serve

Standard library only, so the handler's own imports are all the process loads. The bootstrap puts the
build context's site-packages first on sys.path and executes this file.

``cold``: stdin holds one request body; prints when imports, model load and the first answer ended
(``time.monotonic()``, shared by every process) and the peak RSS, and exits.
``serve``: the first stdin line maps body ids to bodies; each further line is a command:
``{"run": id, "repeats": n}`` answers with n handler durations (seconds), ``{"done": true}`` with the
peak RSS, then exits.
"""

import importlib
import json
import sys
import time


def event(body: str) -> dict:
    """A Function URL event (payload 2.0) carrying ``body``."""
    return {
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"requestId": "tune", "http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "body": body,
        "isBase64Encoded": False,
    }


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM; ru_maxrss would carry the parent's across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def answer(handler, ev: dict) -> None:
    response = handler(ev, None)
    if response.get("statusCode") != 200:
        sys.stderr.write(f"the handler answered {response.get('statusCode')}: {str(response.get('body'))[:300]}\n")
        raise SystemExit(3)


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
        answered = time.monotonic()
        reply({"imported": imported, "loaded": loaded, "answered": answered, "rss_kb": peak_rss_kb()})
        return
    events = {key: event(body) for key, body in json.loads(sys.stdin.readline()).items()}
    warmed: set[str] = set()
    for line in sys.stdin:
        command = json.loads(line)
        if "run" in command:
            ev = events[command["run"]]
            if command["run"] not in warmed:  # the first calls of a size warm caches and allocators
                for _ in range(2):
                    answer(handler, ev)
                warmed.add(command["run"])
            times = []
            for _ in range(command["repeats"]):
                started = time.perf_counter()
                answer(handler, ev)
                times.append(time.perf_counter() - started)
            reply(times)
        else:
            reply({"rss_kb": peak_rss_kb()})
            return


if __name__ == "__main__":
    main()
