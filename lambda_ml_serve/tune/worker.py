"""Runs inside the measured process: import a handler, answer Function URL events, report timings as JSON lines.

    python [-S -E] -c BOOTSTRAP HANDLER_MODULE PRELOAD_JSON cold|serve

Standard library only, so the handler's own imports are all the process loads: ``tune`` runs it from
a build context (or an image), and ``bench/`` runs the same file in the original service's venv too.
The bootstrap puts the handler's paths first on sys.path and executes this file.

Timestamps are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process), so the parent can
split a cold start into interpreter start, imports, model load and first answer.

``cold``: stdin holds one request body; prints when the interpreter reached this file, when imports,
model load and the first answer ended, and the peak RSS, then exits.
``serve``: the first stdin line maps body ids to bodies; each further line is a command:
``{"run": id, "repeats": n}`` answers with n handler durations (seconds), ``{"answer": id}`` with the
response body, ``{"done": true}`` with the peak RSS and the heavy modules imported, then exits.
A handler answer other than 200 ends the process with exit status 3 and the answer's start on stderr.
"""

import time

STARTED = time.monotonic()

import importlib  # noqa: E402 (the timestamp above is when the interpreter reached this file)
import json  # noqa: E402
import sys  # noqa: E402

#: Modules whose presence in sys.modules the ``done`` reply names.
HEAVY = ("numpy", "scipy", "pandas", "sklearn", "xgboost", "lightgbm", "onnxruntime", "boto3")


def event(body: str) -> dict:
    """A Function URL event (payload 2.0) carrying ``body``."""
    return {
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"requestId": "measured", "http": {"method": "POST", "path": "/"}},
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


def checked(response: dict) -> str:
    """The body of a 200 answer; any other answer ends the process (the figures would be an error's)."""
    if response.get("statusCode") != 200:
        sys.stderr.write(f"the handler answered {response.get('statusCode')}: {str(response.get('body'))[:300]}\n")
        raise SystemExit(3)
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
        checked(handler(event(sys.stdin.read()), None))
        answered = time.monotonic()
        reply(
            {"started": STARTED, "imported": imported, "loaded": loaded, "answered": answered, "rss_kb": peak_rss_kb()}
        )
        return
    events = {key: event(body) for key, body in json.loads(sys.stdin.readline()).items()}
    warmed: set[str] = set()
    for line in sys.stdin:
        command = json.loads(line)
        if "run" in command:
            ev = events[command["run"]]
            if command["run"] not in warmed:  # the first calls of a size warm caches and allocators
                for _ in range(3):
                    checked(handler(ev, None))
                warmed.add(command["run"])
            times = []
            for _ in range(command["repeats"]):
                started = time.perf_counter()
                response = handler(ev, None)
                times.append(time.perf_counter() - started)
                checked(response)  # after the clock: the check is not the handler's time
            reply(times)
        elif "answer" in command:
            reply(checked(handler(events[command["answer"]], None)))
        else:
            reply({"rss_kb": peak_rss_kb(), "modules": [m for m in HEAVY if m in sys.modules]})
            return


if __name__ == "__main__":
    main()
