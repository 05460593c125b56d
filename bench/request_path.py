"""A/B of the handler call (event to response) between source trees: where a release's request path got slower.

    python bench/request_path.py --variant old=/tmp/old:compiled:/tmp/old.so \\
        --variant new=.:compiled:.cache/bench/compiled/artifacts/model.so [--rows 1 100 10000] [--cpu 0]

Each variant is ``LABEL=TREE:BACKEND:ARTIFACT``: one process with ``TREE`` (and its wine_quality plugin)
first on ``sys.path`` loads the model with ``App.load`` and answers timing commands. The processes
run at once, pinned to one CPU, and take turns in rounds, so load from elsewhere hits every variant
alike. The handler writes its log line to a real file (its stderr), as in a function. Prints the
median and p90 per call of each variant and its ratio to the first one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import rows_from
from variants import DATA

WORKER = r"""
import json, sys, time
from pathlib import Path
from lambda_ml_serve.runtime.app import App

backend, artifact = sys.argv[1], Path(sys.argv[2])
app = App.load("wine_quality", artifact=artifact, backend=backend)
bodies = json.loads(sys.stdin.readline())
template = json.loads(sys.argv[3])
events = {n: {**template, "body": body} for n, body in bodies.items()}
for n, ev in events.items():
    response = app(ev)
    assert response["statusCode"] == 200, response["body"][:300]
print(json.dumps({n: app(ev)["body"] for n, ev in events.items()}), flush=True)
clock = time.perf_counter
for line in sys.stdin:
    command = json.loads(line)
    ev = events[command["rows"]]
    times = []
    for _ in range(command["calls"]):
        started = clock()
        app(ev)
        times.append(clock() - started)
    print(json.dumps(times), flush=True)
"""


#: The Function URL event bench/run.py sends (tune's worker), and a whole one as AWS sends it.
EVENTS = {
    "bench": {
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"requestId": "measured", "http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "isBase64Encoded": False,
    },
    "full": json.loads((Path(__file__).parent.parent / "tests/events/function-url.json").read_text()),
}
# A real request id is a UUID (the sample's is "id").
EVENTS["full"]["requestContext"]["requestId"] = "c0ffee00-1234-4cde-8f00-000000000001"


def start(label: str, spec: str, cpu: int, log: Path, template: dict) -> subprocess.Popen:
    tree, backend, artifact = spec.split(":", 2)
    root = Path(tree).resolve()
    env = {**os.environ, "PYTHONPATH": f"{root}:{root / 'models' / 'wine_quality'}"}
    for name in list(env):
        if name.startswith("LAMBDA_ML_SERVE_"):
            del env[name]  # the variant's own arguments decide what is served
    return subprocess.Popen(
        [
            "taskset",
            "-c",
            str(cpu),
            sys.executable,
            "-c",
            WORKER,
            backend,
            str(Path(artifact).resolve()),
            json.dumps(template),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="LABEL=TREE:BACKEND:ARTIFACT")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100, 10_000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of calls per variant and batch size")
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--event", choices=EVENTS, default="bench", help="bench/run.py's minimal event, or a full one")
    parser.add_argument("--data", type=Path, default=DATA / "wine_concat.csv")
    args = parser.parse_args()
    bodies = {str(n): json.dumps(rows_from(args.data, n)) for n in args.rows}
    variants = dict(v.split("=", 1) for v in args.variant)
    logs = Path(tempfile.mkdtemp(prefix="request-path-"))
    procs = {
        label: start(label, spec, args.cpu, logs / f"{label}.log", EVENTS[args.event])
        for label, spec in variants.items()
    }
    answers = {}
    for label, proc in procs.items():
        proc.stdin.write(json.dumps(bodies) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"{label} failed: {(logs / f'{label}.log').read_text()[-2000:]}")
        answers[label] = json.loads(line)
    for n in bodies:
        same = {
            label: json.loads(a[n])["predictions"] == json.loads(answers[next(iter(answers))][n])["predictions"]
            for label, a in answers.items()
        }
        print(f"{n} rows: same predictions as the first variant: {same}", file=sys.stderr)
    first = next(iter(procs))
    print(
        f"{args.event} event, CPU {args.cpu}, {args.rounds} interleaved rounds; "
        f"µs per call (median / p90), ratio to {first}\n"
    )
    print("| rows | " + " | ".join(procs) + " |")
    print("| ---: |" + " ---: |" * len(procs))
    for n in bodies:
        # Calls per round: about budget/rounds seconds at the first variant's speed.
        probe = {}
        for label, proc in procs.items():
            proc.stdin.write(json.dumps({"rows": n, "calls": 20}) + "\n")
            proc.stdin.flush()
            probe[label] = statistics.median(json.loads(proc.stdout.readline()))
        calls = max(3, int(args.budget / args.rounds / max(probe.values())))
        times: dict[str, list[float]] = {label: [] for label in procs}
        for r in range(args.rounds):
            order = list(procs) if r % 2 == 0 else list(reversed(procs))
            for label in order:
                procs[label].stdin.write(json.dumps({"rows": n, "calls": calls}) + "\n")
                procs[label].stdin.flush()
                times[label] += json.loads(procs[label].stdout.readline())
        first = statistics.median(times[next(iter(procs))])
        cells = []
        for label in procs:
            ordered = sorted(times[label])
            median, p90 = statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]
            cells.append(f"{median * 1e6:,.1f} / {p90 * 1e6:,.1f} ({first / median:.2f}x)")
        print(f"| {int(n):,} | " + " | ".join(cells) + " |", flush=True)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()


if __name__ == "__main__":
    main()
