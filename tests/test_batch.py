"""Batch scoring: files of rows through the model in chunks, nothing lost, resumable; Distributed Map batches."""

from __future__ import annotations

import csv
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import DATA, cli, shared_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from served import serving

from lambda_ml_serve.batch import BatchFileError, BatchRejectedError, RejectLimit, Retry, score_file
from lambda_ml_serve.runtime.items import score_rows


@pytest.fixture(scope="module")
def wine_rows() -> list[list[str]]:
    with shared_file(DATA / "wine_concat.csv").open(newline="") as fh:
        return list(csv.reader(fh))


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory, wine_rows) -> tuple[Path, dict[int, str | None]]:
    """wine_concat.csv with bad rows planted: row number -> the field named in its error (None: unreadable)."""
    rows = [list(r) for r in wine_rows]
    header = rows[0]
    bad: dict[int, str | None] = {}
    for number, column, value in [
        (7, "pH", "15"),
        (300, "density", "abc"),
        (2048, "alcohol", ""),
        (5000, "color", "rosé"),
    ]:
        rows[number][header.index(column)] = value
        bad[number] = column
    rows[4321] = rows[4321][:5]  # a short line
    bad[4321] = None
    return write_csv(tmp_path_factory.mktemp("planted") / "wine.csv", rows), bad


def read_output(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def expected_predictions(wine_app, wine_rows, numbers) -> dict[int, float]:
    header = wine_rows[0]
    rows = [{k: v for k, v in zip(header, wine_rows[n], strict=True) if k != "quality"} for n in numbers]
    return dict(zip(numbers, wine_app.predict(rows)["predictions"], strict=True))


def test_every_row_is_scored_or_rejected(tmp_path, planted, wine_app, wine_rows):
    path, bad = planted
    out = tmp_path / "scores.csv"
    summary = score_file(path, out, model="wine_quality", chunk_rows=700)
    n_rows = len(wine_rows) - 1
    assert (summary.rows, summary.scored, summary.rejected) == (n_rows, n_rows - len(bad), len(bad))
    assert summary.ignored_columns == ["quality"]

    scored = read_output(out)
    errors = read_output(tmp_path / "scores.errors.csv")
    scored_rows = {int(r["row"]) for r in scored}
    error_rows = {int(r["row"]) for r in errors}
    assert scored_rows.isdisjoint(error_rows)
    assert scored_rows | error_rows == set(range(1, n_rows + 1))
    fields = {int(r["row"]): (r["field"] or None) for r in errors}
    # The colour rule is the schema's row-level check: its error names the row, not always a field.
    assert fields.pop(5000) in ("color", None)
    assert fields == {n: f for n, f in bad.items() if n != 5000}
    assert all(r["message"] for r in errors)
    # The planted values themselves are never quoted back.
    assert not any(v in r["message"] for r in errors for v in ("abc", "rosé"))

    sample = [1, 2, 8, 1999, 5320]
    expected = expected_predictions(wine_app, wine_rows, sample)
    got = {int(r["row"]): float(r["prediction"]) for r in scored if int(r["row"]) in expected}
    assert got == pytest.approx(expected, abs=1e-6)
    assert not (tmp_path / "scores.csv.partial").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_formats_and_id_column(tmp_path, wine_rows, fmt):
    pa = pytest.importorskip("pyarrow") if fmt == "parquet" else None
    header, rows = wine_rows[0], wine_rows[1:301]
    records = [dict(zip(header, r, strict=True)) | {"wine_id": f"w{i}"} for i, r in enumerate(rows)]
    records[10]["pH"] = "-1"
    source = tmp_path / f"in.{fmt}"
    if pa is None:
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), source)
    out = tmp_path / f"out.{fmt}"
    summary = score_file(source, out, model="wine_quality", chunk_rows=64, id_column="wine_id")
    assert (summary.scored, summary.rejected) == (299, 1)
    scored = read_output(out)
    assert [r["wine_id"] for r in scored] == [f"w{i}" for i in range(300) if i != 10]
    [error] = read_output(tmp_path / f"out.errors.{fmt}")
    assert (error["row"], error["wine_id"], error["field"]) == (11, "w10", "pH")


def test_workers_give_the_same_files(tmp_path, planted):
    path, _ = planted
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    score_file(path, one, model="wine_quality", chunk_rows=500)
    score_file(path, two, model="wine_quality", chunk_rows=500, workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert (tmp_path / "one.errors.csv").read_bytes() == (tmp_path / "two.errors.csv").read_bytes()


def test_interrupted_run_leaves_no_output_and_resumes_to_the_same_result(tmp_path, wine_rows):
    """A real SIGINT to the command mid-run; --resume then finishes with the uninterrupted run's files."""
    big = write_csv(tmp_path / "big.csv", [wine_rows[0]] + wine_rows[1:] * 8)  # 42,560 rows
    reference = tmp_path / "reference.csv"
    score_file(big, reference, model="wine_quality", chunk_rows=1000)

    out = tmp_path / "scores.csv"
    parts = tmp_path / "scores.csv.partial"
    command = cli("batch wine_quality", big, "-o", out, "--chunk-rows", "1000")
    # A shell without job control starts background jobs with SIGINT ignored, and Python then installs
    # no KeyboardInterrupt: the command gets SIGINT as a terminal would deliver it.
    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    deadline = time.monotonic() + 120
    while len(list(parts.glob("*.out.jsonl"))) < 3:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert not out.exists() and parts.is_dir()
    kept = len(list(parts.glob("*.out.jsonl")))
    assert 3 <= kept < 43

    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr  # refuses to start over silently

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept} of 43 chunks from the interrupted run" in resumed.stderr
    assert out.read_bytes() == reference.read_bytes()
    assert not parts.exists()


def test_resume_refuses_another_job(tmp_path, wine_rows):
    source = write_csv(tmp_path / "in.csv", wine_rows[:50])
    out = tmp_path / "out.csv"
    (tmp_path / "out.csv.partial").mkdir()
    (tmp_path / "out.csv.partial" / "state.json").write_text(json.dumps({"format": 1, "chunk_rows": 7}))
    with pytest.raises(BatchFileError, match=r"chunk_rows.* differ from the interrupted run"):
        score_file(source, out, model="wine_quality", resume=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wine_quality", "{tmp}/missing.csv", "-o", "{tmp}/o.csv"], "cannot read input"),
        (["wine_quality", "{tmp}/in.txt", "-o", "{tmp}/o.csv"], "cannot tell the format of input"),
        (["wine_quality", "{tmp}/in.csv", "-o", "{tmp}/nowhere/o.csv"], "folder .* does not exist"),
        (["wine_quality", "{tmp}/in.csv", "-o", "{tmp}/in.csv"], "three different files"),
        (["no_such_model", "{tmp}/in.csv", "-o", "{tmp}/o.csv"], "no model named 'no_such_model'"),
        (["{tmp}/in.csv", "-o", "{tmp}/o.csv"], "give MODEL and INPUT"),
        (["wine_quality", "{tmp}/empty.csv", "-o", "{tmp}/o.csv"], "is empty: it needs a header line"),
    ],
)
def test_one_line_errors(tmp_path, wine_rows, args, message):
    write_csv(tmp_path / "in.csv", wine_rows[:5])
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "empty.csv").write_text("")
    result = subprocess.run(cli("batch", *(a.format(tmp=tmp_path) for a in args)), capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert __import__("re").search(message, result.stderr), result.stderr
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob("*/o.*"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_splitting_isolates_exactly_the_bad_rows(wine_app, wine_rows, data):
    """Whatever rows are bad, score_rows rejects exactly those and predicts the rest as one call would."""
    header = wine_rows[0]
    n = data.draw(st.integers(1, 300))
    rows = [{k: v for k, v in zip(header, r, strict=True) if k != "quality"} for r in wine_rows[1 : n + 1]]
    bad = data.draw(st.sets(st.integers(0, n - 1), max_size=n))
    for i in bad:
        rows[i] = dict(rows[i], pH=data.draw(st.sampled_from(["15", "-2", "", "NaN", "x", None])))
    scored = score_rows(lambda part: wine_app.predict(part)["predictions"], rows)
    assert set(scored.errors) == bad
    good = [i for i in range(n) if i not in bad]
    if good:
        expected = wine_app.predict([rows[i] for i in good])["predictions"]
        assert [scored.predictions[i] for i in good] == expected


# -- Step Functions Distributed Map ------------------------------------------------------------


def test_distributed_map_batch_from_csv_items(wine_app, wine_rows):
    """An ItemBatcher's batch of S3CsvItemReader items (header row as keys, every value a string)."""
    header = wine_rows[0]
    items = [dict(zip(header, r, strict=True)) for r in wine_rows[1:6]]
    items[3]["pH"] = "99"
    event = {"Items": items, "BatchInput": {"id_column": "quality"}}
    answer = wine_app(event)
    assert (answer["scored"], answer["rejected"]) == (4, 1)
    assert [r["item"] for r in answer["results"]] == [0, 1, 2, 3, 4]
    assert [r.get("id") for r in answer["results"]] == [r[header.index("quality")] for r in wine_rows[1:6]]
    assert answer["results"][3]["error"] == [{"field": "pH", "message": "Input should be less than or equal to 14"}]
    good = [dict(i) for n, i in enumerate(items) if n != 3]
    for item in good:
        item.pop("quality")
    expected = wine_app.predict(good)["predictions"]
    assert [r["prediction"] for r in answer["results"] if "prediction" in r] == expected


def test_distributed_map_batch_limits(wine_app, samples):
    assert wine_app({"Items": [], "BatchInput": {}})["results"] == []
    too_many = wine_app({"Items": samples * 6000, "BatchInput": {}})
    assert too_many["error"]["type"] == "payload_too_large" and "MaxItemsPerBatch" in too_many["error"]["message"]
    bad_options = wine_app({"Items": samples, "BatchInput": {"id_column": 3}})
    assert bad_options["error"]["type"] == "validation_error"
    # Without BatchInput it is an ordinary direct invocation, not a batch.
    assert "predictions" in wine_app({"instances": samples})


# -- batch --url: the same through a Function URL, with throttles and faults -----------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultyProxy(http.server.ThreadingHTTPServer):
    """Forwards POSTs to ``target``, but answers 429, 500 or 503 (or hangs up) on some requests."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        self.target, self.count, self.faults = target, 0, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.server.lock:
            self.server.count += 1
            n = self.server.count
        fault = {1: 429, 2: 503, 4: 500}.get(n % 5) if n % 3 else None
        if n % 7 == 0:
            self.server.faults += 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # hang up with no answer
            return
        if fault:
            self.server.faults += 1
            payload = b'{"Message":"Rate Exceeded."}' if fault == 429 else b'{"Message":"Internal Server Error"}'
            self._answer(fault, payload)
            return
        request = urllib.request.Request(self.server.target, data=body, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                self._answer(response.status, response.read())
        except urllib.error.HTTPError as err:
            self._answer(err.code, err.read())

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def served():
    with serving() as url:
        yield f"{url}/"


def test_url_batch_loses_nothing_through_throttles_and_faults(tmp_path, served, planted):
    path, bad = planted
    local = tmp_path / "local.csv"
    score_file(path, local, model="wine_quality", chunk_rows=400)

    proxy = FaultyProxy(served)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        remote = tmp_path / "remote.csv"
        summary = score_file(
            path,
            remote,
            url=f"http://127.0.0.1:{proxy.server_address[1]}/",
            chunk_rows=400,
            workers=3,
            ignore_columns=("quality",),
            retry=Retry(attempts=10, base=0.01, cap=0.05),
            client_options={"auth": "NONE", "timeout": 30},
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert proxy.faults > 5
    assert summary.rejected == len(bad) and summary.rows == 5320
    assert remote.read_bytes() == local.read_bytes()
    assert (tmp_path / "remote.errors.csv").read_bytes() == (tmp_path / "local.errors.csv").read_bytes()


def test_url_batch_stops_cleanly_when_retries_run_out(tmp_path, wine_rows):
    """A URL that only ever throttles: the run stops, keeps nothing half-written and says how to resume."""
    source = write_csv(tmp_path / "in.csv", wine_rows[:30])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysThrottled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(BatchFileError, match=r"429.*no chunk was complete and nothing was written"):
            score_file(
                source,
                tmp_path / "out.csv",
                url=f"http://127.0.0.1:{server.server_address[1]}/",
                retry=Retry(attempts=3, base=0.001, cap=0.002),
                client_options={"auth": "NONE"},
            )
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "out.csv.partial").exists()


class _AlwaysThrottled(_ProxyHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self._answer(429, b'{"Message":"Rate Exceeded."}')


def test_progress_lines_without_a_terminal(tmp_path, wine_rows):
    from lambda_ml_serve.batch import Progress

    source = write_csv(tmp_path / "in.csv", [wine_rows[0]] + wine_rows[1:] * 2)
    log = tmp_path / "log.txt"
    with log.open("w") as stream:
        score_file(source, tmp_path / "o.csv", model="wine_quality", chunk_rows=500, progress=Progress(stream, every=0))
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("batch: ") and "rows/s" in line for line in lines)
    assert os.path.getsize(tmp_path / "o.csv") > 0


# -- honest exits: a run that scored nothing, or rejected too much, fails ----------------------


def run_batch_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(cli("batch", *args), capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    err = result.stderr.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.fixture
def small_csv(tmp_path, wine_rows) -> Path:
    """The header and 60 rows of wine_concat.csv, rows 5, 17 and 33 with a pH out of range."""
    rows = [list(r) for r in wine_rows[:61]]
    for number in (5, 17, 33):
        rows[number][rows[0].index("pH")] = "15"
    return write_csv(tmp_path / "small.csv", rows)


def test_a_folder_or_an_unknown_suffix_is_named_in_one_line(tmp_path):
    error = one_line_error(run_batch_cli("wine_quality", str(tmp_path), "-o", str(tmp_path / "x.csv")))
    assert error == f"Error: input {tmp_path} is a folder; give one file (.csv, .jsonl or .parquet) to score"
    text = tmp_path / "rows.txt"
    text.write_text("pH\n3.3\n")
    error = one_line_error(run_batch_cli("wine_quality", str(text), "-o", str(tmp_path / "x.csv")))
    assert error.endswith("or pass --input-format csv|jsonl|parquet")
    error = one_line_error(run_batch_cli("wine_quality", str(text), "--input-format", "csv", "-o", str(text) + ".out"))
    assert error.endswith("or pass --format csv|jsonl|parquet")


def test_a_run_that_scored_nothing_exits_non_zero_and_writes_no_output(tmp_path):
    json_as_csv = tmp_path / "samples.csv"
    json_as_csv.write_bytes(shared_file(DATA / "samples.json").read_bytes().replace(b"\n", b" "))
    out = tmp_path / "out.csv"
    error = one_line_error(run_batch_cli("wine_quality", str(json_as_csv), "-o", str(out)))
    assert error.startswith(f"Error: input {json_as_csv} has no data rows; no output written; a CSV file needs")
    assert not out.exists() and not (tmp_path / "out.errors.csv").exists()
    assert not (tmp_path / "out.csv.partial").exists()

    readme = Path(__file__).resolve().parents[1] / "README.md"
    error = one_line_error(run_batch_cli("wine_quality", str(readme), "--input-format", "csv", "-o", str(out)))
    assert " rows rejected; no output written; reasons per row in " in error and "had all " in error
    assert not out.exists()
    assert read_output(tmp_path / "out.errors.csv")  # why every row was refused


def test_max_rejected_fails_the_run_above_it(tmp_path, small_csv):
    out = tmp_path / "out.csv"
    for limit in ("3", "5%", "0.05"):  # 3 of 60 rows: 5% of them
        summary = score_file(small_csv, out, model="wine_quality", max_rejected=limit)
        assert (summary.scored, summary.rejected) == (57, 3)
        assert len(read_output(out)) == 57 and len(read_output(tmp_path / "out.errors.csv")) == 3
    out.unlink()
    for limit in ("2", "4%", "0.04", "0"):
        with pytest.raises(BatchRejectedError, match=r"had 3 (of 60 )?rows rejected, more than --max-rejected"):
            score_file(small_csv, out, model="wine_quality", max_rejected=limit)
        assert not out.exists() and len(read_output(tmp_path / "out.errors.csv")) == 3
    error = one_line_error(run_batch_cli("wine_quality", str(small_csv), "-o", str(out), "--max-rejected", "2"))
    assert error.startswith(f"Error: input {small_csv} had 3 rows rejected, more than --max-rejected 2;")
    assert not out.exists()


def test_the_errors_file_is_written_only_when_rows_are_rejected(tmp_path, wine_rows):
    clean = write_csv(tmp_path / "clean.csv", wine_rows[:21])
    out = tmp_path / "out.jsonl"
    stale = tmp_path / "out.errors.jsonl"
    stale.write_text('{"row": 1, "field": "pH", "message": "from an older run"}\n')
    summary = score_file(clean, out, model="wine_quality")
    assert (summary.scored, summary.rejected, summary.errors) == (20, 0, "")
    assert not stale.exists()  # an older run's errors would describe rows this run scored
    assert summary.where() == f"Predictions in {out}; no row rejected"


@given(st.one_of(st.none(), st.text(max_size=12), st.integers(-5, 10**9), st.floats(allow_nan=True)))
@settings(max_examples=300, deadline=None)
def test_max_rejected_parses_or_refuses_in_one_line(value):
    try:
        limit = RejectLimit.parse(value)
    except BatchFileError as exc:
        assert str(exc).startswith("--max-rejected takes a number of rows")
        return
    assert (limit.count is None) or (limit.count >= 0 and limit.share is None)
    assert (limit.share is None) or 0 <= limit.share <= 1
    # The rule's invariants: no rows or all rejected always fail, no rejection never does.
    assert limit.failure(0, 0) and limit.failure(7, 7) and limit.failure(7, 0) is None
