"""Reading a table in chunks and writing predictions and errors: CSV, JSON Lines, Parquet.

Readers stream: a chunk of rows is read, scored and written before the next is read, so memory stays
constant whatever the file size. Parquet goes through pyarrow (the ``batch`` extra); CSV and JSON
Lines need only the standard library.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lambda_ml_serve.errors import LambdaMLServeError

FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class BatchFileError(LambdaMLServeError):
    """An input or output file cannot be used as asked; the message names the file and the fix."""


#: The option that sets each file's format, named in the error when a suffix says nothing.
_FORMAT_OPTIONS = {"input": "--input-format", "output": "--format"}


def format_of(path: Path, given: str | None, role: str) -> str:
    """The file format: ``given`` (``--input-format``, ``--format``), else from the file's suffix."""
    if given:
        if given not in FORMATS:
            raise BatchFileError(f"unknown format {given!r}; use one of {', '.join(FORMATS)}")
        return given
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        option = _FORMAT_OPTIONS.get(role)
        raise BatchFileError(
            f"cannot tell the format of {role} {path} from its suffix; name it .csv, .jsonl or .parquet"
            + (f", or pass {option} csv|jsonl|parquet" if option else "")
        )
    return found


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchFileError(
            "Parquet needs pyarrow: pip install 'lambda-ml-serve[batch]' (in a checkout: '.[batch]')"
        ) from None
    return pq


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based position in the file's data rows, and its values (or why not)."""

    number: int
    values: Any
    #: Set when the row could not even be read (a CSV line with too many cells, a line that is not JSON).
    unreadable: str | None = None


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it, for a progress bar over a text reader."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        self.count += n or 0
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


class TableReader:
    """Rows of ``path`` in chunks of ``chunk_rows``; ``progress`` is the share of the file read (0-1)."""

    def __init__(self, path: Path, fmt: str, chunk_rows: int) -> None:
        self.path, self.format, self.chunk_rows = path, fmt, chunk_rows
        try:
            self.size = path.stat().st_size
        except OSError as exc:
            raise BatchFileError(f"cannot read input {path}: {exc.strerror}") from None
        self._counter: _CountingReader | None = None
        self._rows_read = 0
        self._total_rows: int | None = None

    @property
    def progress(self) -> float:
        if self._total_rows is not None:
            return self._rows_read / self._total_rows if self._total_rows else 1.0
        if self._counter is None or not self.size:
            return 0.0
        return min(self._counter.count / self.size, 1.0)

    def chunks(self) -> Iterator[list[Row]]:
        rows = {"csv": self._csv_rows, "jsonl": self._jsonl_rows, "parquet": self._parquet_rows}[self.format]()
        chunk: list[Row] = []
        for row in rows:
            chunk.append(row)
            self._rows_read += 1
            if len(chunk) == self.chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _open_text(self) -> io.TextIOWrapper:
        self._counter = _CountingReader(self.path.open("rb"))
        # utf-8-sig: spreadsheet programs write a byte-order mark that would otherwise join the first header.
        return io.TextIOWrapper(io.BufferedReader(self._counter), encoding="utf-8-sig", newline="")

    def _csv_rows(self) -> Iterator[Row]:
        with self._open_text() as text:
            reader = csv.reader(text)
            try:
                header = next(reader, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise BatchFileError(f"input {self.path}: cannot read the CSV header: {_reason(exc)}") from None
            if not header:
                raise BatchFileError(f"input {self.path} is empty: it needs a header line naming the columns")
            number = 0
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except (csv.Error, UnicodeDecodeError) as exc:
                    number += 1
                    yield Row(number, None, f"not readable as CSV ({_reason(exc)})")
                    continue
                if not cells:
                    continue  # a blank line is no row
                number += 1
                if len(cells) != len(header):
                    yield Row(number, None, f"has {len(cells)} cells but the header has {len(header)} columns")
                else:
                    yield Row(number, dict(zip(header, cells, strict=True)))

    def _jsonl_rows(self) -> Iterator[Row]:
        with self._open_text() as text:
            number = 0
            while True:
                try:
                    line = text.readline()
                except UnicodeDecodeError:
                    number += 1
                    yield Row(number, None, "is not UTF-8 text")
                    continue
                if not line:
                    return
                if not line.strip():
                    continue
                number += 1
                try:
                    yield Row(number, json.loads(line))
                except ValueError:
                    yield Row(number, None, "is not valid JSON")
                except RecursionError:
                    yield Row(number, None, "is nested too deeply")

    def _parquet_rows(self) -> Iterator[Row]:
        pq = _pyarrow_parquet()
        try:
            parquet = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise BatchFileError(f"input {self.path} is not a readable Parquet file: {_reason(exc)}") from None
        self._total_rows = parquet.metadata.num_rows
        number = 0
        for record_batch in parquet.iter_batches(batch_size=self.chunk_rows):
            for values in record_batch.to_pylist():
                number += 1
                yield Row(number, values)


def _reason(exc: Exception) -> str:
    # The first line of the library's message, never the offending bytes themselves.
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def write_table(path: Path, fmt: str, columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> None:
    """Write ``rows`` (one value per column) to ``path`` in ``fmt``, streaming."""
    if fmt == "parquet":
        _write_parquet(path, columns, rows)
        return
    with path.open("w", encoding="utf-8", newline="") as out:
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(v) for v in row])
        else:
            for row in rows:
                out.write(json.dumps(dict(zip(columns, row, strict=True)), separators=(",", ":")) + "\n")


def _cell(value: Any) -> Any:
    # A list (class probabilities) or a dict is written as JSON text: one cell, readable back.
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else value


def _write_parquet(path: Path, columns: Sequence[str], rows: Iterator[Sequence[Any]], batch: int = 65_536) -> None:
    import pyarrow as pa

    pq = _pyarrow_parquet()
    writer = None
    try:
        while True:
            block = [row for _, row in zip(range(batch), rows, strict=False)]
            if not block:
                break
            table = pa.Table.from_pylist([dict(zip(columns, row, strict=True)) for row in block])
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            pa_schema = pa.schema([(c, pa.string()) for c in columns])
            pq.write_table(pa.Table.from_pylist([], schema=pa_schema), path)
    finally:
        if writer is not None:
            writer.close()
