"""Batch scoring: a table of any size through a model, in this process or through a Function URL.

:func:`score_file` is what ``lambda-ml-serve batch`` runs; :mod:`.run` holds the chunk, part and
resume logic, :mod:`.files` the readers and writers, :mod:`.scorers` the two ways to score a chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambda_ml_serve.batch.files import BatchFileError, format_of
from lambda_ml_serve.batch.run import (
    BatchJob,
    BatchRejectedError,
    BatchRunError,
    Progress,
    RejectLimit,
    Summary,
    executor_for,
    run_batch,
)
from lambda_ml_serve.batch.scorers import LocalModel, Retry, UrlScorer, init_worker, score_in_worker

__all__ = ["BatchFileError", "BatchRejectedError", "BatchRunError", "RejectLimit", "Summary", "score_file"]


def default_errors_path(output: Path, fmt: str) -> Path:
    """``scores.csv`` -> ``scores.errors.csv``: beside the output, in the output's format."""
    suffix = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}[fmt]
    return output.with_name(f"{output.name.removesuffix(output.suffix)}.errors{suffix}")


def score_file(
    input_path: Path,
    output: Path,
    *,
    model: str | None = None,
    url: str | None = None,
    errors: Path | None = None,
    output_format: str | None = None,
    input_format: str | None = None,
    chunk_rows: int = 1_000,
    workers: int = 1,
    id_column: str | None = None,
    ignore_columns: tuple[str, ...] = (),
    resume: bool = False,
    artifact: Path | None = None,
    backend: str | None = None,
    retry: Retry | None = None,
    client_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    max_rejected: str | int | float | None = None,
) -> Summary:
    """Score ``input_path`` with the installed ``model`` (in-process) or a deployed ``url``.

    The run fails (:class:`BatchRejectedError`, no output written) when the input has no rows, when
    every row is rejected, or when more rows are rejected than ``max_rejected`` allows (a count, or a
    share of the rows: ``0.05`` or ``5%``).
    """
    if (model is None) == (url is None):
        raise BatchFileError("name a model to score in this process, or --url for a deployed one (not both)")
    if chunk_rows < 1 or workers < 1:
        raise BatchFileError("--chunk-rows and --workers must be at least 1")
    if input_path.is_dir():
        raise BatchFileError(f"input {input_path} is a folder; give one file (.csv, .jsonl or .parquet) to score")
    if not input_path.is_file():
        raise BatchFileError(f"cannot read input {input_path}: no such file")
    limit = RejectLimit.parse(max_rejected)
    in_fmt = format_of(input_path, input_format, "input")
    out_fmt = format_of(output, output_format, "output")
    errors = errors or default_errors_path(output, out_fmt)
    err_fmt = format_of(errors, None, "errors file") if errors.suffix else out_fmt
    if len({input_path.resolve(), output.resolve(), errors.resolve()}) < 3:
        raise BatchFileError("the input, the output and the errors file must be three different files")
    for path in (output, errors):
        if not path.parent.is_dir():
            raise BatchFileError(f"cannot write {path}: folder {path.parent} does not exist")
    job = BatchJob(
        input=input_path,
        input_format=in_fmt,
        output=output,
        output_format=out_fmt,
        errors=errors,
        errors_format=err_fmt,
        scored_by=url or str(model),
        chunk_rows=chunk_rows,
        id_column=id_column,
        ignore_columns=tuple(ignore_columns),
    )
    unused = None
    if url is not None:
        score = UrlScorer(url, retry=retry, **(client_options or {}))
        executor = executor_for(workers, False, None, ())
    else:
        local = _local_model(model, artifact, backend, chunk_rows)
        unused = _unused_columns(local.model)
        # One worker scores in this process; more are processes, each loading the model once.
        score = local.load() if workers == 1 else score_in_worker
        executor = executor_for(workers, True, init_worker, (local,))
    with executor:
        return run_batch(
            job,
            executor,
            score,
            in_flight=2 * workers,
            resume=resume,
            unused_columns=unused,
            progress=progress,
            limit=limit,
        )


def _local_model(model: str, artifact: Path | None, backend: str | None, chunk_rows: int) -> LocalModel:
    from lambda_ml_serve.plugins import get_registry

    spec = get_registry().model(model).spec  # an unknown model fails here, naming the installed ones
    return LocalModel(model, artifact, backend, max_rows=max(chunk_rows, spec.max_rows))


def _unused_columns(model: str) -> Any:
    """The keys of a row that the model's schema refuses as unknown (pydantic's ``extra_forbidden``)."""
    from pydantic import ValidationError

    from lambda_ml_serve.plugins import get_registry

    schema = get_registry().model(model).spec.schema

    def unused(row: dict[str, Any]) -> list[str]:
        try:
            schema.model_validate(row)
        except ValidationError as exc:
            return [str(e["loc"][-1]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
        return []

    return unused
