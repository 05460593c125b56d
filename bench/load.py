"""Load on the local Function URL: many keep-alive clients against `lambda-ml-serve serve`.

    python bench/load.py [--clients 50] [--requests 20] [--concurrency 1 2] [--rounds 3] [--pin-server CPU]
                         [--baseline SRC]

Each run starts `serve wine_quality --concurrency N` on a free loopback port, waits for it, then
--clients threads, released together, each open one keep-alive connection and send --requests POSTs of samples.json one
after another. Every request's latency (send to last byte) is kept; a connection reset, any other
failure and any non-200 answer are counted. The runs for each N take turns, --rounds times, and the
table reports the median over rounds of each round's p50/p99 and throughput, and the total failures.
With --pin-server the server (not the clients) runs on that one CPU (`taskset`). --baseline SRC also
runs `serve` from another source tree of the framework (e.g. `git archive REV lambda_ml_serve | tar -x
-C SRC`), as it was before, with its default concurrency.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", REPO.parent / "shared")) / "data" / "samples.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(concurrency: int | None, pin: str | None, src: str | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "lambda_ml_serve.cli", "serve", "wine_quality", "--port", str(port)]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if pin is not None:
        command = ["taskset", "-c", pin, *command]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    # The function's log lines would cost the server a write per request: keep them off the console.
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited with {proc.returncode}") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("serve did not start within 120 s")


def client(
    port: int, body: bytes, requests: int, latencies: list[float], failures: dict[str, int], go: threading.Barrier
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    go.wait()  # every client connects at once, as a burst of real traffic does
    for _ in range(requests):
        started = time.perf_counter()
        try:
            connection.request("POST", "/", body, {"content-type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            latencies.append(time.perf_counter() - started)
            if answer.status != 200:
                failures["non-200"] += 1
        except ConnectionResetError:
            failures["resets"] += 1
            connection.close()
        except (OSError, http.client.HTTPException):
            failures["other"] += 1
            connection.close()
    connection.close()


def run(concurrency: int | None, clients: int, requests: int, pin: str | None, src: str | None) -> dict[str, float]:
    body = SAMPLES.read_bytes()
    proc, port = start_server(concurrency, pin, src)
    try:
        latencies: list[float] = []
        failures = {"resets": 0, "other": 0, "non-200": 0}
        go = threading.Barrier(clients)
        threads = [
            threading.Thread(target=client, args=(port, body, requests, latencies, failures, go))
            for _ in range(clients)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "rps": len(latencies) / elapsed,
        "answered": len(latencies),
        **failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pin-server", metavar="CPU", help="run the server on this CPU only (taskset -c)")
    parser.add_argument("--baseline", metavar="SRC", help="also run serve from this source tree, as it was")
    args = parser.parse_args()

    variants = {f"--concurrency {n}": (n, None) for n in args.concurrency}
    if args.baseline:
        variants["baseline (before)"] = (None, args.baseline)
    results: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    for round_number in range(args.rounds):
        for label, (n, src) in variants.items():  # interleaved: drift on a shared machine hits all alike
            result = run(n, args.clients, args.requests, args.pin_server, src)
            results[label].append(result)
            print(f"round {round_number + 1} {label}: {result}", file=sys.stderr)

    total = args.clients * args.requests
    print(f"{args.clients} keep-alive clients x {args.requests} requests (samples.json, 2 rows), {args.rounds} rounds")
    print("\n| serve | p50 | p99 | requests/s | answered | resets | other failures | non-200 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, runs in results.items():
        median = {key: statistics.median(r[key] for r in runs) for key in ("p50_ms", "p99_ms", "rps")}
        sums = {key: sum(r[key] for r in runs) for key in ("answered", "resets", "other", "non-200")}
        print(
            f"| {label} | {median['p50_ms']:.1f} ms | {median['p99_ms']:.1f} ms | {median['rps']:.0f} "
            f"| {sums['answered']:.0f} / {total * len(runs)} | {sums['resets']:.0f} | {sums['other']:.0f} "
            f"| {sums['non-200']:.0f} |"
        )
    print(
        f"\nMachine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, server pinned: {args.pin_server or 'no'}"
    )


if __name__ == "__main__":
    main()
