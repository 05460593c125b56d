"""A batch run: a table in chunks through a scorer, with nothing lost and nothing half-written.

Every input row ends in the output (its prediction) or in the errors file (its row number, field and
message), never in neither. Each scored chunk is first written as its own part in ``OUTPUT.partial/``
(written under a temporary name and renamed, so a part is whole or absent); only when every chunk has
its part are the parts joined into the output and errors files, again under temporary names renamed
into place. An interrupted run therefore leaves no output file at all, and ``resume=True`` scores
only the chunks that have no part yet.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from lambda_ml_serve.batch.files import BatchFileError, Row, TableReader, write_table
from lambda_ml_serve.runtime.items import ScoredRows, clean_row

STATE_FORMAT = 1
PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class BatchJob:
    """What to score and where the answers go. ``scored_by`` names the model or URL (checked on resume)."""

    input: Path
    input_format: str
    output: Path
    output_format: str
    errors: Path
    errors_format: str
    scored_by: str
    chunk_rows: int = 1_000
    id_column: str | None = None
    ignore_columns: tuple[str, ...] = ()

    @property
    def parts(self) -> Path:
        return self.output.with_name(self.output.name + ".partial")


@dataclass
class Summary:
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    chunks: int = 0
    #: Chunks a previous, interrupted run had already scored.
    resumed_chunks: int = 0
    seconds: float = 0.0
    ignored_columns: list[str] = field(default_factory=list)
    output: str = ""
    errors: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def where(self) -> str:
        """Where the answers went: the output, and the errors file when rows were rejected."""
        if self.errors:
            return f"Predictions in {self.output}; rejected rows in {self.errors}"
        return f"Predictions in {self.output}; no row rejected"

    def line(self) -> str:
        text = (
            f"{self.rows:,} rows in, {self.scored:,} scored, {self.rejected:,} rejected, "
            f"{self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)"
        )
        if self.resumed_chunks:
            text += f"; {self.resumed_chunks} of {self.chunks} chunks from the interrupted run"
        if self.ignored_columns:
            text += f"; columns not used by the model: {', '.join(self.ignored_columns)}"
        return text


class BatchRunError(BatchFileError):
    """The run stopped before the end; the parts scored so far are kept for ``--resume``."""


class BatchRejectedError(BatchFileError):
    """The run read every row but scored too few: no rows, all rejected, or more than ``--max-rejected``."""


@dataclass(frozen=True)
class RejectLimit:
    """How many rejected rows a run may have and still succeed: a count, a share of the rows, or no limit.

    Without a limit, rejections are reported and only a run that scored nothing fails.
    """

    count: int | None = None
    share: float | None = None

    @classmethod
    def parse(cls, value: str | int | float | None) -> RejectLimit:
        """``None``: no limit; ``"10"``: ten rows; ``"0.05"`` or ``"5%"``: five per cent of the rows."""
        if value is None:
            return cls()
        text = str(value).strip()
        bad = BatchFileError(
            "--max-rejected takes a number of rows (10), or a share of the rows as a fraction (0.05) or a "
            "percentage (5%)"
        )
        try:
            if text.endswith("%"):
                share = float(text[:-1]) / 100
            elif "." in text or isinstance(value, float):
                share = float(text)
            else:
                count = int(text)
                if count < 0:
                    raise bad
                return cls(count=count)
        except ValueError:
            raise bad from None
        if not 0 <= share <= 1:
            raise bad
        return cls(share=share)

    def failure(self, rows: int, rejected: int) -> str | None:
        """Why a run with ``rows`` rows, ``rejected`` of them rejected, fails; None when it succeeds."""
        if rows == 0:
            return "has no data rows"
        if rejected == rows:
            return f"had all {rows:,} rows rejected"
        if self.count is not None and rejected > self.count:
            return f"had {rejected:,} rows rejected, more than --max-rejected {self.count:,}"
        if self.share is not None and rejected > self.share * rows:
            return f"had {rejected:,} of {rows:,} rows rejected, more than --max-rejected {self.share:.2%}"
        return None


#: Scores one chunk of cleaned rows (dicts); may run in another thread or process.
Scorer = Callable[[list[Any]], ScoredRows]


def run_batch(
    job: BatchJob,
    executor: Executor,
    score: Scorer,
    *,
    in_flight: int,
    resume: bool = False,
    unused_columns: Callable[[dict[str, Any]], list[str]] | None = None,
    progress: Progress | None = None,
    limit: RejectLimit | None = None,
) -> Summary:
    """Score every chunk of ``job.input`` with ``score`` on ``executor``, then join the parts.

    ``unused_columns`` names, from the first row, the columns the model does not take; they are left
    out of every row (and listed in the summary) so that a table with extra columns (a label, an id)
    can be scored as it is.
    """
    started = time.perf_counter()
    summary = Summary(output=str(job.output), errors=str(job.errors))
    state = _open_parts(job, resume)
    done = {int(p.name.split(".")[0]) for p in job.parts.glob("*.out.jsonl")}
    summary.resumed_chunks = len(done)
    drop = set(state.get("ignored_columns", job.ignore_columns))
    reader = TableReader(job.input, job.input_format, job.chunk_rows)
    pending: dict[Future[ScoredRows], tuple[int, list[Row]]] = {}
    first = "ignored_columns" not in state

    def finish(futures: set[Future[ScoredRows]]) -> None:
        for future in futures:
            index, rows = pending.pop(future)
            _write_part(job, index, rows, future.result())
            if progress:
                progress.advance(len(rows), reader.progress)

    try:
        for index, rows in enumerate(reader.chunks()):
            summary.chunks = index + 1
            if first:
                sample = next((r.values for r in rows if isinstance(r.values, dict)), None)
                if sample is not None and unused_columns is not None:
                    drop |= set(unused_columns(clean_row(sample, frozenset(drop))))
                drop.discard(job.id_column)  # the id is carried, never a feature
                state["ignored_columns"] = sorted(drop)
                _save_state(job, state)
                first = False
            if index in done:
                if progress:
                    progress.advance(len(rows), reader.progress)
                continue
            skip = frozenset(drop | ({job.id_column} if job.id_column else set()))
            values = [clean_row(r.values, skip) if isinstance(r.values, dict) else r.values for r in rows]
            readable = [v for r, v in zip(rows, values, strict=True) if r.unreadable is None]
            pending[executor.submit(score, readable)] = (index, rows)
            while len(pending) >= in_flight:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                finish(finished)
        finish(set(wait(pending).done))
    except BaseException as exc:
        for future in pending:
            future.cancel()
        if progress:
            progress.close()
        complete = len(list(job.parts.glob("*.out.jsonl")))
        if not complete:
            shutil.rmtree(job.parts, ignore_errors=True)  # nothing to resume: leave nothing behind
        if isinstance(exc, BatchFileError):
            raise
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped: {_first_line(exc)}"
        if not complete:
            raise BatchRunError(f"{what}; no chunk was complete and nothing was written") from exc
        raise BatchRunError(
            f"{what}; {complete} chunk(s) are scored and kept in {job.parts}: rerun the same command "
            "with --resume to score the rest"
        ) from exc
    summary.ignored_columns = state.get("ignored_columns", [])
    if progress:
        progress.close()
    _join_parts(job, summary.chunks, summary, limit or RejectLimit())
    summary.seconds = time.perf_counter() - started
    return summary


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _state_of(job: BatchJob) -> dict[str, Any]:
    stat = job.input.stat()
    return {
        "format": STATE_FORMAT,
        "input": str(job.input.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "scored_by": job.scored_by,
        "chunk_rows": job.chunk_rows,
        "id_column": job.id_column,
    }


def _open_parts(job: BatchJob, resume: bool) -> dict[str, Any]:
    """Create the parts folder, or (``resume``) reopen one left by the same job on the same input."""
    wanted = _state_of(job)
    state_file = job.parts / "state.json"
    if job.parts.exists():
        if not resume:
            raise BatchFileError(
                f"{job.parts} holds the parts of an interrupted run; add --resume to continue it, "
                "or remove that folder to start again"
            )
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise BatchFileError(f"{state_file} is missing or damaged; remove {job.parts} to start again") from None
        changed = [k for k, v in wanted.items() if state.get(k) != v]
        if changed:
            raise BatchFileError(
                f"cannot resume from {job.parts}: {', '.join(changed)} differ from the interrupted run; "
                f"run it as it was, or remove {job.parts} to start again"
            )
        return state
    job.parts.mkdir(parents=True)
    _save_state(job, wanted)
    return wanted


def _save_state(job: BatchJob, state: dict[str, Any]) -> None:
    tmp = job.parts / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(tmp, job.parts / "state.json")


def _row_id(job: BatchJob, row: Row) -> Any:
    if job.id_column and isinstance(row.values, dict):
        return row.values.get(job.id_column)
    return None


def _write_part(job: BatchJob, index: int, rows: list[Row], scored: ScoredRows) -> None:
    """One chunk's predictions and errors, each whole or absent; the ``.out`` part marks it done."""
    out_lines, err_lines = [], []
    readable = iter(range(len(scored.predictions)))
    for row in rows:
        row_id = _row_id(job, row)
        if row.unreadable is not None:
            err_lines.append([row.number, row_id, None, f"row {row.unreadable}"])
            continue
        position = next(readable)
        if position in scored.errors:
            err_lines += [[row.number, row_id, d["field"], d["message"]] for d in scored.errors[position]]
        else:
            out_lines.append([row.number, row_id, scored.predictions[position]])
    stem = job.parts / f"{index:06d}"
    for suffix, lines in ((".errors.jsonl", err_lines), (".out.jsonl", out_lines)):
        tmp = stem.with_suffix(suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, stem.with_suffix(suffix))


def _part_lines(job: BatchJob, chunks: int, suffix: str) -> Iterator[list[Any]]:
    for index in range(chunks):
        with (job.parts / f"{index:06d}{suffix}").open(encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)


def _count_lines(job: BatchJob, chunks: int, suffix: str) -> int:
    total = 0
    for index in range(chunks):
        with (job.parts / f"{index:06d}{suffix}").open("rb") as fh:
            total += sum(1 for _ in fh)
    return total


def _join_parts(job: BatchJob, chunks: int, summary: Summary, limit: RejectLimit) -> None:
    """Join the parts into the output and errors files (temporary names, then renamed).

    The errors file is written only when rows were rejected (an older one at its path is removed,
    as the output is replaced). When the run fails (``limit``), the errors file says why and no
    output is written.
    """
    key = job.id_column or "row"
    rejected: set[int] = set()

    def errors() -> Iterator[list[Any]]:
        for number, row_id, field_name, message in _part_lines(job, chunks, ".errors.jsonl"):
            rejected.add(number)
            yield [number, row_id, field_name, message] if job.id_column else [number, field_name, message]

    def outputs() -> Iterator[list[Any]]:
        for number, row_id, prediction in _part_lines(job, chunks, ".out.jsonl"):
            yield [row_id if job.id_column else number, prediction]

    error_columns = ["row", key, "field", "message"] if job.id_column else ["row", "field", "message"]
    tmp_out = job.output.with_name(f".{job.output.name}.tmp")
    tmp_err = job.errors.with_name(f".{job.errors.name}.tmp")
    try:
        has_errors = _count_lines(job, chunks, ".errors.jsonl") > 0
        if has_errors:
            write_table(tmp_err, job.errors_format, error_columns, errors())
        summary.rejected = len(rejected)
        summary.scored = _count_lines(job, chunks, ".out.jsonl")
        summary.rows = summary.scored + summary.rejected
        failure = limit.failure(summary.rows, summary.rejected)
        if failure is None:
            write_table(tmp_out, job.output_format, [key, PREDICTION_COLUMN], outputs())
        if has_errors:
            os.replace(tmp_err, job.errors)
        else:
            job.errors.unlink(missing_ok=True)
            summary.errors = ""
        if failure is None:
            os.replace(tmp_out, job.output)
    finally:
        for tmp in (tmp_out, tmp_err):
            tmp.unlink(missing_ok=True)
    shutil.rmtree(job.parts)  # every row has its answer or its reason: nothing is left to resume
    if failure is not None:
        why = f"reasons per row in {job.errors}" if has_errors else _no_rows_hint(job)
        raise BatchRejectedError(f"input {job.input} {failure}; no output written; {why}")


def _no_rows_hint(job: BatchJob) -> str:
    if job.input_format == "csv":
        return (
            "a CSV file needs a header line naming the columns, then a row per line; for another format "
            "pass --input-format jsonl or parquet"
        )
    return f"is it {job.input_format}? pass --input-format to read it as another format"


class Progress:
    """Rows done, rows/s and time left: a rich progress bar on a terminal, else a line every few seconds."""

    def __init__(self, stream: TextIO | None = None, *, every: float = 5.0, live: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self._rows, self._started, self._last = 0, time.perf_counter(), 0.0
        self._every = every
        self._bar = None
        if live if live is not None else self._stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("scoring"),
                BarColumn(),
                TextColumn(
                    "{task.percentage:>3.0f}%  {task.fields[rows]:>12,} rows  {task.fields[rate]:>9,.0f} rows/s"
                ),
                TimeRemainingColumn(),
                console=Console(file=self._stream),
                transient=False,
            )
            self._task = self._bar.add_task("scoring", total=1.0, rows=0, rate=0.0)
            self._bar.start()

    def advance(self, rows: int, fraction: float) -> None:
        self._rows += rows
        elapsed = time.perf_counter() - self._started
        rate = self._rows / elapsed if elapsed else 0.0
        if self._bar is not None:
            self._bar.update(self._task, completed=fraction, rows=self._rows, rate=rate)
        elif elapsed - self._last >= self._every:
            self._last = elapsed
            left = elapsed * (1 - fraction) / fraction if fraction else float("nan")
            self._stream.write(
                f"batch: {self._rows:,} rows ({fraction:.0%}), {rate:,.0f} rows/s, about {left:,.0f} s left\n"
            )
            self._stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=1.0)
            self._bar.stop()


def executor_for(workers: int, processes: bool, initializer: Callable[..., None] | None, initargs: tuple) -> Executor:
    """Threads (the URL scorer, which waits on the network) or processes (the model, which needs a CPU each)."""
    if processes and workers > 1:
        # spawn, not fork: a forked copy of a process whose model library started OpenMP threads
        # (libgomp, as xgboost's) can hang in its first parallel region.
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)
    return ThreadPoolExecutor(workers)


def summary_dict(summary: Summary) -> dict[str, Any]:
    return asdict(summary) | {"rows_per_second": round(summary.rows_per_second, 1)}
