"""The ``lambda-ml-serve`` command. Each command imports what it needs when it runs, so --help is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lambda_ml_serve.errors import LambdaMLServeError


class _Group(click.Group):
    """Turns the framework's own errors into one line and exit code 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LambdaMLServeError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lambda-ml-serve")
def main() -> None:
    """Serve trained models from AWS Lambda container images behind Function URLs."""


def _registry():
    from lambda_ml_serve.plugins import get_registry

    return get_registry()


def _read_data(data: str) -> bytes:
    if data == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(data).read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read --data {data}: {exc.strerror}") from None


def _existing_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise click.ClickException(f"--{param.name} {value}: no such file; give the path of a model file")
    return value


def _artifact_option(command: Any) -> Any:
    return click.option(
        "--artifact",
        type=click.Path(dir_okay=False, path_type=Path),
        callback=_existing_file,
        help="Serve this model file instead of the plugin's own (the same format and features).",
    )(command)


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


def _echo_table(rows: list[dict[str, str]]) -> None:
    """Rows of strings as aligned columns under upper-case headers; the last column is not padded."""
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    click.echo("  ".join(c.upper().ljust(widths.get(c, 0)) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(row[c].ljust(widths.get(c, 0)) for c in columns).rstrip())


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_models(as_json: bool) -> None:
    """List installed models, their plugins, and broken plugins."""
    from lambda_ml_serve.plugins import describe_models

    rows = describe_models(_registry())
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No models installed. Install a model plugin, e.g. pip install ./models/wine_quality")
        return
    _echo_table(rows)


@main.command()
@click.argument("model")
@_artifact_option
def info(model: str, artifact: Path | None) -> None:
    """Load MODEL and show its metadata, metrics and requirements."""
    from lambda_ml_serve.local.run import model_info

    _echo_json(model_info(_registry(), model, artifact))


@main.command()
@click.argument("model")
def schema(model: str) -> None:
    """Print MODEL's input JSON Schema (one row)."""
    spec = _registry().model(model).spec
    _echo_json(spec.schema.model_json_schema(by_alias=True))


@main.command()
@click.argument("model")
def openapi(model: str) -> None:
    """Print MODEL's OpenAPI 3.1 document (what GET /openapi.json answers)."""
    from lambda_ml_serve.local.run import openapi_document

    _echo_json(openapi_document(_registry(), model))


@main.command()
@click.argument("model")
@click.option("--data", required=True, help="JSON request body: a file, or - for stdin.")
@click.option("--path", default="/", show_default=True, help="Request path.")
@click.option("--full", is_flag=True, help="Print the whole Lambda response, not only its body.")
@_artifact_option
def invoke(model: str, data: str, path: str, full: bool, artifact: Path | None) -> None:
    """Call MODEL's real handler in-process with a Function URL event built from --data."""
    from lambda_ml_serve.local.run import error_line
    from lambda_ml_serve.local.run import invoke as invoke_model

    response = invoke_model(_registry(), model, _read_data(data), path, artifact)
    _echo_json(response if full else json.loads(response["body"]))
    if error := error_line(response):
        raise click.ClickException(error)


@main.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one)."
)
@click.option("--image", metavar="TAG", help="Run this built image with the Lambda RIE instead of in-process.")
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Execution environments side by side, each loading the model and serving one request at a time.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "text", "json"]),
    default="auto",
    show_default=True,
    help="text: one line per request (method, path, status, rows, latency); json: the function's JSON log "
    "lines (CloudWatch EMF); auto: text on a terminal, json otherwise.",
)
@_artifact_option
@click.option(
    "--cors",
    "cors_origins",
    metavar="ORIGIN",
    multiple=True,
    help="Allow web pages from ORIGIN (e.g. http://localhost:3000, or *) to call the server; repeatable.",
)
@click.option(
    "--capture",
    "capture_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write sampled requests' rows and predictions to capture-YYYY-MM-DD.jsonl files in this folder.",
)
@click.option(
    "--capture-rate",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="The share of answered prediction requests captured (with --capture).",
)
def serve(
    model: str,
    host: str,
    port: int,
    image: str | None,
    concurrency: int,
    log_format: str,
    artifact: Path | None,
    cors_origins: tuple[str, ...],
    capture_dir: Path | None,
    capture_rate: float,
) -> None:
    """Serve MODEL on a local Function URL (payload format 2.0), with its docs page at /docs.

    The handler runs in-process, or with --image inside the built container through the Lambda
    Runtime Interface Emulator, so the HTTP contract can be checked against the real image. The
    function's log lines go to the console. With --capture, sampled requests are written as capture
    records (the format ModelFunction's capture= ships to S3), for `lambda-ml-serve monitor`.
    """
    from lambda_ml_serve.local.run import serve as serve_model

    if image and artifact:
        raise click.UsageError("--artifact and --image exclude each other: the image serves the file it was built with")
    if image and capture_dir:
        raise click.UsageError("--capture serves in-process: drop --image (the image's capture records go to its log)")
    registry = _registry()
    serve_model(
        registry,
        model,
        host=host,
        port=port,
        image=image,
        concurrency=concurrency,
        artifact=artifact,
        log_format=log_format,
        cors_origins=cors_origins,
        announce=_echo_err,
        capture_dir=capture_dir,
        capture_rate=capture_rate,
    )


@main.command()
@click.argument("model")
@click.argument("captured", nargs=-1, required=True)
@click.option(
    "--threshold",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="PSI at or above which a feature (or the predictions) counts as drifted.",
)
@click.option("--report", "report_html", type=click.Path(dir_okay=False, path_type=Path), help="Write the HTML report.")
@click.option("--json", "report_json", type=click.Path(dir_okay=False, path_type=Path), help="Write the figures.")
def monitor(
    model: str, captured: tuple[str, ...], threshold: float, report_html: Path | None, report_json: Path | None
):
    """Compare MODEL's CAPTURED traffic (files, folders, s3://BUCKET/PREFIX) with its training profile.

    Exits 3 when a feature or the predictions drifted at or above --threshold, so it can gate CI
    or a schedule.
    """
    from lambda_ml_serve.monitor.command import DRIFT_EXIT, run, summary

    spec = _registry().model(model).spec
    drift = run(
        model, captured, card=spec.load_card(), threshold=threshold, report_html=report_html, report_json=report_json
    )
    click.echo(summary(drift))
    if drift.drifted:
        sys.exit(DRIFT_EXIT)


@main.command()
@click.argument("model")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Build context folder, or the .zip (default: .lambda-ml-serve/MODEL-BACKEND-ARCH[.zip]).",
)
@click.option(
    "--package",
    type=click.Choice(["image", "zip"]),
    default="image",
    show_default=True,
    help="A container image, or a deployment zip for the managed pythonX.Y runtime.",
)
@click.option("--arch", default="x86_64", show_default=True, help="Lambda architecture: x86_64 or arm64.")
@click.option("--python", "python_version", default="3.12", show_default=True, help="Python version: 3.10 to 3.14.")
@click.option("--base-image", help="Base image (default: public.ecr.aws/lambda/python:PYTHON).")
@click.option("--build-base-image", help="Image of the build platform for the bytecode stage (default: --base-image).")
@click.option("--tag", help="Image tag (default: lambda-ml-serve/MODEL:VERSION).")
@click.option("--no-docker", is_flag=True, help="Only render the context and print the docker build command.")
@click.option("--force", is_flag=True, help="Replace the output folder even if this command did not create it.")
@click.option("--backend", help="Serve with this backend instead of the model's own (e.g. compiled, onnx).")
@_artifact_option
@click.option(
    "--response",
    type=click.Choice(["object", "predictions"]),
    help="Answer shape: the default object, or the bare array of predictions.",
)
@click.option("--docs", is_flag=True, help="Serve the docs page at GET /docs in the function.")
def build(
    model: str,
    output: Path | None,
    package: str,
    arch: str,
    python_version: str,
    base_image: str | None,
    build_base_image: str | None,
    tag: str | None,
    no_docker: bool,
    force: bool,
    backend: str | None,
    response: str | None,
    docs: bool,
    artifact: Path | None,
) -> None:
    """Render MODEL's Docker build context and build the image when a Docker engine answers, or write a zip.

    On a terminal each step (checking, preparing or compiling the artifact, the parity gate, pip,
    writing, docker build) shows with a spinner and its time; otherwise only the result is printed.
    """
    from lambda_ml_serve.bundling.build import build as build_model

    build_model(
        _registry(),
        model,
        output,
        package=package,
        arch=arch,
        python=python_version,
        base_image=base_image,
        build_base_image=build_base_image,
        tag=tag,
        no_docker=no_docker,
        force=force,
        backend=backend,
        response=response,
        docs=docs,
        artifact=artifact,
        say=click.echo,
        progress=_echo_err,
    )


@main.command()
@click.argument("model")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Training data file.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the artifact and model card (default: the plugin package).",
)
def train(model: str, data: Path, output: Path | None) -> None:
    """Train MODEL with its plugin's trainer (needs the plugin's training extras)."""
    from lambda_ml_serve.training import train as train_model

    card = train_model(_registry(), model, data, output)
    _echo_json(card.get("metrics", card))


@main.command()
@click.argument("url")
@click.option("--data", required=True, help="JSON request body: a file, or - for stdin.")
@click.option("--region", help="AWS region (default: from the URL, then your AWS config).")
@click.option("--assume-role", "assume_role", metavar="ARN", help="Assume this IAM role (STS) before calling.")
@click.option("--no-sign", is_flag=True, help="Send unsigned, for a Function URL with auth type NONE.")
def predict(url: str, data: str, region: str | None, assume_role: str | None, no_sign: bool) -> None:
    """Call a deployed Function URL, signing with SigV4 from your AWS credentials."""
    from lambda_ml_serve.client import predict_command_impl

    _echo_json(predict_command_impl(url, _read_data(data), region, assume_role, sign=not no_sign))


@main.command()
@click.argument("args", nargs=-1, metavar="[MODEL] INPUT")
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Predictions file (.csv, .jsonl or .parquet).",
)
@click.option(
    "--errors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rejected rows with row, field and message (default: OUTPUT's name + .errors).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "jsonl", "parquet"]),
    help="Output format (default: from OUTPUT's suffix).",
)
@click.option(
    "--input-format",
    type=click.Choice(["csv", "jsonl", "parquet"]),
    help="Input format (default: from INPUT's suffix).",
)
@click.option(
    "--chunk-rows", default=1000, show_default=True, type=click.IntRange(min=1), help="Rows scored (or sent) at a time."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Processes scoring in parallel (with --url: requests in flight).",
)
@click.option("--id-column", help="Input column copied beside each prediction (default: the row number).")
@click.option("--ignore-columns", default="", help="Comma-separated input columns not sent to the model.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last complete chunk.")
@click.option(
    "--max-rejected",
    metavar="N|SHARE",
    help="Fail the run when more rows are rejected: a number of rows (10), or a share (0.05 or 5%). "
    "Default: rejections are reported; only a run with no rows, or all rows rejected, fails.",
)
@click.option("--backend", help="Score with this backend instead of the model's own.")
@click.option("--url", help="Score through this deployed Function URL instead of in-process.")
@click.option("--region", help="With --url: AWS region (default: from the URL).")
@click.option("--assume-role", "assume_role", metavar="ARN", help="With --url: assume this IAM role first.")
@click.option("--no-sign", is_flag=True, help="With --url: send unsigned (auth type NONE).")
@click.option(
    "--retries",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --url: tries per request on throttling (429), 5xx and timeouts.",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Add each row's exact SHAP contributions as columns (shap:<field>, shap:expected_value, shap:margin).",
)
def batch(
    args: tuple[str, ...],
    output: Path,
    errors: Path | None,
    output_format: str | None,
    input_format: str | None,
    chunk_rows: int,
    workers: int,
    id_column: str | None,
    ignore_columns: str,
    resume: bool,
    max_rejected: str | None,
    backend: str | None,
    url: str | None,
    region: str | None,
    assume_role: str | None,
    no_sign: bool,
    retries: int,
    explain: bool,
) -> None:
    """Score a CSV, JSON Lines or Parquet file of any size with MODEL (or --url), chunk by chunk.

    Every row ends in OUTPUT (its prediction beside its id) or in the errors file (row, field,
    message), never in neither; an interrupted run leaves no half file and --resume continues it.
    The errors file is written only when rows are rejected. A run with no rows, all rows rejected,
    or more than --max-rejected exits 1 and writes no OUTPUT.
    """
    from lambda_ml_serve.batch import Progress, Retry, score_file

    if len(args) != (1 if url else 2):
        raise click.UsageError("give MODEL and INPUT, or --url URL and INPUT")
    model, input_path = (None, args[0]) if url else args
    client_options: dict[str, Any] = {"region": region, "assume_role": assume_role}
    if no_sign:
        client_options = {"auth": "NONE"}
    summary = score_file(
        Path(input_path),
        output,
        model=model,
        url=url,
        errors=errors,
        output_format=output_format,
        input_format=input_format,
        chunk_rows=chunk_rows,
        workers=workers,
        id_column=id_column,
        ignore_columns=tuple(c.strip() for c in ignore_columns.split(",") if c.strip()),
        resume=resume,
        backend=backend,
        retry=Retry(attempts=retries),
        client_options=client_options,
        progress=Progress(),
        explain=explain,
        max_rejected=max_rejected,
    )
    click.echo(f"Scored {input_path}: {summary.line()}", err=True)
    click.echo(summary.where(), err=True)


@main.command()
@click.option("--model-name", help="Model name: lowercase letters, digits, underscores (e.g. iris_species).")
@click.option(
    "--from-model",
    "from_model",
    type=click.Path(path_type=Path),
    help="Generate the whole plugin from this model file (XGBoost JSON/UBJ, LightGBM text, scikit-learn joblib, ONNX).",
)
@click.option("--data", type=click.Path(path_type=Path), help="With --from-model: a CSV file for examples and ranges.")
@click.option("--target", help="With --data: the column to score the model against, for the model card.")
@click.option(
    "--classes",
    help="With --from-model: a classifier's labels in class order, comma-separated (default: --target's values).",
)
@click.option("--backend", help="xgboost or sklearn.")
@click.option("--task", help="regression or classification.")
@click.option("--description", help="One-line description of the model.")
@click.option("--author", help="Author name for the package metadata.")
@click.option("--model-version", help="Model version (default: 0.1.0).")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create the project folder (warns when that is inside a lambda-ml-serve checkout).",
)
@click.option("--no-input", is_flag=True, help="Do not prompt: use the flags, then the template's defaults.")
@click.option("--force", is_flag=True, help="Write into an existing project folder, replacing generated files.")
def new(
    model_name: str | None,
    from_model: Path | None,
    data: Path | None,
    target: str | None,
    classes: str | None,
    backend: str | None,
    task: str | None,
    description: str | None,
    author: str | None,
    model_version: str | None,
    output_dir: Path,
    no_input: bool,
    force: bool,
) -> None:
    """Create a model plugin project: around a model file you have (--from-model), or trained on synthetic rows."""
    from lambda_ml_serve.scaffold import checkout_warning

    source = click.get_current_context().get_parameter_source("output_dir")
    warning = checkout_warning(output_dir) if source is click.core.ParameterSource.DEFAULT else None
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    if from_model is not None:
        labels = [c.strip() for c in classes.split(",")] if classes is not None else None
        _new_from_model(
            from_model, data, target, labels, model_name, description, model_version, output_dir, no_input, force
        )
        return
    if data is not None or target is not None or classes is not None:
        raise click.ClickException("--data, --target and --classes go with --from-model MODEL_FILE")
    from lambda_ml_serve.scaffold import create_plugin

    given = {
        "model_name": model_name,
        "backend": backend,
        "task": task,
        "description": description,
        "author": author,
        "version": model_version,
    }
    project = create_plugin(
        {k: v for k, v in given.items() if v is not None}, output_dir=output_dir, no_input=no_input, force=force
    )
    click.echo(f"Created {project}\nNext:\n  pip install -e '{project}[train,test]'\n  lambda-ml-serve list")


def _new_from_model(
    model_file: Path,
    data: Path | None,
    target: str | None,
    classes: list[str] | None,
    model_name: str | None,
    description: str | None,
    model_version: str | None,
    output_dir: Path,
    no_input: bool,
    force: bool,
) -> None:
    from lambda_ml_serve.from_model.generate import create_from_model, suggested_name

    if model_name is None and not no_input:
        model_name = click.prompt("Model name (a-z, 0-9, _)", default=suggested_name(model_file))
    project, warnings = create_from_model(
        model_file,
        data=data,
        target=target,
        classes=classes,
        model_name=model_name,
        description=description,
        version=model_version or "0.1.0",
        output_dir=output_dir,
        force=force,
    )
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"Created {project}\nNext:\n  pip install '{project}'\n  lambda-ml-serve list")


@main.command()
@click.argument("model")
@click.option("--backend", help="Serve with this backend instead of the model's own (e.g. compiled).")
@click.option("--memory", default="128,256,512,1024,1769,3008", show_default=True, help="Memory sizes (MB).")
@click.option("--arch", help="x86_64, arm64 or both (default: this host's; another is only measured emulated).")
@click.option("--rows", default="1,100,10000", show_default=True, help="Rows per request; the first one decides.")
@click.option("--image", metavar="TAG", help="Measure this built image behind RIE (Docker's --cpus and --memory).")
@click.option("--target-p99", "target_p99", type=click.FloatRange(min=0, min_open=True), help="p99 target (ms).")
@click.option("--cold-starts", default=3, show_default=True, type=int, help="Cold starts measured per size.")
@click.option("--requests", default=30, show_default=True, type=int, help="Timed requests per size and batch size.")
@click.option(
    "--cold-start-rate", default=0.01, show_default=True, type=float, help="Share of requests that start cold."
)
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder (default: tune-MODEL-BACKEND)."
)
@click.option("--rerender", is_flag=True, help="Render the build context again instead of reusing it.")
def tune(
    model: str,
    backend: str | None,
    memory: str,
    arch: str | None,
    rows: str,
    image: str | None,
    target_p99: float | None,
    cold_starts: int,
    requests: int,
    cold_start_rate: float,
    output: Path | None,
    rerender: bool,
) -> None:
    """Measure MODEL under each memory size's CPU share and memory limit; price a million predictions.

    Writes tune.json (use it with ModelFunction.tuned), tune.png and tune.svg.
    """
    try:
        from lambda_ml_serve.tune.session import run
    except ImportError as exc:
        raise click.ClickException(f"tune needs {exc.name}: pip install 'lambda-ml-serve[tune]'") from None
    run(
        model,
        backend=backend,
        memory=memory,
        arch=arch,
        rows=rows,
        image=image,
        target_p99_ms=target_p99,
        cold_starts=cold_starts,
        requests=requests,
        cold_start_rate=cold_start_rate,
        output=output,
        rerender=rerender,
    )


if __name__ == "__main__":
    main()
