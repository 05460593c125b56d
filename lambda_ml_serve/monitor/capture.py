"""Read capture records back: JSON Lines files (plain or gzip), folders of them, or an S3 prefix.

Accepted lines: capture records (``"type": "capture"``), and CloudWatch Logs subscription envelopes
holding them (what Firehose writes without its message extraction); any other line (a request
record, a line of a function's log) is skipped, so a downloaded log works as input too.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.runtime.telemetry import CAPTURE_TYPE

SUFFIXES = (".jsonl", ".json", ".gz", ".log", ".txt")


class CaptureReadError(LambdaMLServeError):
    """A source cannot be read."""


@dataclass
class Source:
    """One file to read: its name (path or s3 URL), size, and how to open it as bytes."""

    name: str
    size: int
    open: Callable[[], io.BufferedIOBase]


@dataclass
class Captured:
    """What was read: the rows and predictions of the model's records, and what was skipped."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    records: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    other_models: int = 0
    unreadable_lines: int = 0
    sources: list[str] = field(default_factory=list)


def local_sources(path: Path) -> list[Source]:
    """A file, or every capture-looking file under a folder (sorted)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
    else:
        raise CaptureReadError(
            f"{path}: no such file or folder; give capture files, a folder of them or s3://BUCKET/PREFIX"
        )
    return [Source(str(f), f.stat().st_size, lambda f=f: f.open("rb")) for f in files]


def s3_sources(url: str, client: Any = None) -> list[Source]:
    """Every object under ``s3://bucket/prefix``, through boto3."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise CaptureReadError(f"{url}: not an S3 URL; write s3://BUCKET/PREFIX")
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise CaptureReadError("reading s3:// needs boto3: pip install 'lambda-ml-serve[cli]'") from None
    client = client or boto3.client("s3")
    sources = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue
                sources.append(
                    Source(
                        f"s3://{bucket}/{key}",
                        item["Size"],
                        lambda key=key: client.get_object(Bucket=bucket, Key=key)["Body"],
                    )
                )
    except (BotoCoreError, ClientError) as exc:
        raise CaptureReadError(f"{url}: cannot list it: {exc}") from None
    return sources


def sources_of(inputs: Iterable[str], s3_client: Any = None) -> list[Source]:
    found: list[Source] = []
    for item in inputs:
        found += s3_sources(item, s3_client) if item.startswith("s3://") else local_sources(Path(item))
    return found


def _lines(raw: bytes) -> Iterator[bytes]:
    if raw[:2] == b"\x1f\x8b":  # gzip, possibly several members (Firehose, CloudWatch Logs)
        raw = gzip.decompress(raw)
    yield from raw.splitlines()


def _records(line: bytes) -> Iterator[Any]:
    line = line.strip()
    if not line.startswith(b"{"):
        # A Lambda log line may carry the JSON after a timestamp and request id.
        start = line.find(b'{"type":"capture"')
        if start < 0:
            return
        line = line[start:]
    try:
        value = json.loads(line)
    except ValueError:
        # Firehose without a delimiter joins envelopes: }{ between them.
        if b"}{" in line:
            for part in line.replace(b"}{", b"}\n{").splitlines():
                yield from _records(part)
            return
        yield None
        return
    if isinstance(value, dict) and "logEvents" in value:
        for event in value.get("logEvents") or []:
            yield from _records(str(event.get("message", "")).encode())
    else:
        yield value


def read_captured(
    sources: list[Source], model: str, *, progress: Callable[[int], None] | None = None, max_rows: int | None = None
) -> Captured:
    """The rows and predictions of ``model``'s capture records in ``sources``; ``progress`` gets bytes read."""
    captured = Captured(sources=[s.name for s in sources])
    for source in sources:
        try:
            with source.open() as handle:
                raw = handle.read()
        except OSError as exc:
            raise CaptureReadError(f"{source.name}: cannot read it ({exc})") from None
        except Exception as exc:  # botocore's errors on get_object
            raise CaptureReadError(f"{source.name}: cannot read it ({type(exc).__name__})") from None
        try:
            lines = list(_lines(raw))
        except (OSError, EOFError):
            raise CaptureReadError(f"{source.name}: not a gzip file, though it starts like one") from None
        for line in lines:
            for record in _records(line):
                if record is None:
                    captured.unreadable_lines += 1
                    continue
                if not isinstance(record, dict) or record.get("type") != CAPTURE_TYPE:
                    continue
                if record.get("model") != model:
                    captured.other_models += 1
                    continue
                rows, predictions = record.get("rows"), record.get("predictions")
                if not isinstance(rows, list) or not isinstance(predictions, list) or len(rows) != len(predictions):
                    captured.unreadable_lines += 1
                    continue
                captured.records += 1
                version = str(record.get("version"))
                captured.versions[version] = captured.versions.get(version, 0) + 1
                captured.rows += [r if isinstance(r, dict) else {} for r in rows]
                captured.predictions += predictions
        if progress is not None:
            progress(source.size)
        if max_rows is not None and len(captured.rows) >= max_rows:
            break
    return captured
