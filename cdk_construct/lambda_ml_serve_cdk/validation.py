"""Checks on ModelFunction's props, run at synth before anything is rendered or deployed.

CloudFormation would reject most of these values too, but only minutes into a deployment and in
words about resources rather than props; here each message names the prop and what it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_

from lambda_ml_serve.bundling.context import PYTHONS
from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.plugins import ALLOW_ENV, RegisteredModel, Registry
from lambda_ml_serve.runtime.settings import ARTIFACT_ENV, DOCS_ENV, MAX_ROWS_ENV, MODEL_ENV, RESPONSE_ENV
from lambda_ml_serve.spec import RESPONSES
from lambda_ml_serve_cdk.errors import ModelFunctionError

#: Lambda's limits (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
MIN_MEMORY_MB, MAX_MEMORY_MB = 128, 10_240
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 1, 900
#: Set by the Lambda service; a function that sets one of them fails to deploy.
LAMBDA_RESERVED_ENV = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})  # fmt: skip
#: The construct's own variables, each set from a prop.
MANAGED_ENV = {MODEL_ENV: "model", MAX_ROWS_ENV: "max_rows", RESPONSE_ENV: "response", DOCS_ENV: "docs"}
#: Set by the image to match what it contains (the prepared artifact, the one plugin it loads).
IMAGE_ENV = frozenset({ARTIFACT_ENV, ALLOW_ENV})
#: Lambda architecture name -> the framework's name for it (``render_build_context(arch=...)``).
ARCHES = {lambda_.Architecture.X86_64.name: "x86_64", lambda_.Architecture.ARM_64.name: "arm64"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model(model: str, registry: Registry) -> RegisteredModel:
    """The installed model named ``model``; the error lists the installed ones."""
    try:
        return registry.model(model)
    except LambdaMLServeError as exc:
        raise ModelFunctionError(f"prop 'model': {exc}") from None


def check_backend(backend: str | None, model: RegisteredModel, registry: Registry) -> str:
    """The backend to serve with: ``backend`` if installed (checked as ``build --backend`` does), else the model's."""
    if backend is None:
        return model.spec.backend
    if not isinstance(backend, str) or backend not in registry.backends:
        known = ", ".join(sorted(registry.backends))
        raise ModelFunctionError(f"prop 'backend': unknown backend {backend!r}; installed backends: {known}")
    return backend


def arch_of(architecture: lambda_.Architecture) -> str:
    """The framework's arch name for a Lambda architecture (only the two Lambda offers)."""
    name = getattr(architecture, "name", None)
    if name not in ARCHES:
        raise ModelFunctionError(
            f"prop 'architecture' must be Architecture.X86_64 or Architecture.ARM_64; got {architecture!r}"
        )
    return ARCHES[name]


def check_memory_size(memory_size: int) -> None:
    if not _is_int(memory_size) or not MIN_MEMORY_MB <= memory_size <= MAX_MEMORY_MB:
        raise ModelFunctionError(
            f"prop 'memory_size' must be a whole number of MB from {MIN_MEMORY_MB} to {MAX_MEMORY_MB} "
            f"(Lambda's range; 1769 MB buys one full vCPU); got {memory_size!r}"
        )


def check_timeout(timeout: Duration) -> None:
    seconds = timeout.to_seconds(integral=False)
    if not (MIN_TIMEOUT_S <= seconds <= MAX_TIMEOUT_S and seconds == int(seconds)):
        raise ModelFunctionError(
            f"prop 'timeout' must be a whole number of seconds from {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S} "
            f"(Lambda's maximum is 15 minutes); got {seconds:g} s"
        )


def check_concurrency(reserved: int | None, provisioned: int | None) -> None:
    """Provisioned concurrency needs at least 1; reserved concurrency must leave room for it."""
    if provisioned is not None and (not _is_int(provisioned) or provisioned < 1):
        raise ModelFunctionError(
            f"prop 'provisioned_concurrency' must be a whole number >= 1 (or None for on-demand "
            f"only); got {provisioned!r}"
        )
    if reserved is None:
        return
    if not _is_int(reserved) or reserved < 0:
        raise ModelFunctionError(
            f"prop 'reserved_concurrent_executions' must be a whole number >= 0 (or None for no "
            f"reservation); got {reserved!r}"
        )
    if provisioned is not None and reserved < provisioned:
        raise ModelFunctionError(
            f"prop 'reserved_concurrent_executions' ({reserved}) must be >= 'provisioned_concurrency' "
            f"({provisioned}): Lambda cannot keep more environments warm than the function may run"
        )


def check_max_rows(max_rows: int | None) -> None:
    if max_rows is not None and (not _is_int(max_rows) or max_rows < 1):
        raise ModelFunctionError(
            f"prop 'max_rows' must be a whole number >= 1 (or None for the model's own limit); got {max_rows!r}"
        )


def check_python_version(python_version: str) -> None:
    if python_version not in PYTHONS:
        raise ModelFunctionError(
            f"prop 'python_version' must be a Python version with a Lambda base image "
            f"({', '.join(PYTHONS)}); got {python_version!r}"
        )


#: How the function's code is packaged: a container image, or a zip for the managed runtime.
PACKAGES = ("image", "zip")
#: SnapStart serves Python from 3.12 on, with zip packages on the managed runtime only.
SNAP_START_PYTHONS = ("3.12", "3.13", "3.14")


def check_package(package: str) -> None:
    if package not in PACKAGES:
        raise ModelFunctionError(f"prop 'package' must be 'image' or 'zip'; got {package!r}")


def check_snap_start(snap_start: bool, package: str, python_version: str, provisioned: int | None) -> None:
    """SnapStart needs a zip on Python 3.12+ and cannot be combined with provisioned concurrency."""
    if not isinstance(snap_start, bool):
        raise ModelFunctionError(f"prop 'snap_start' must be True or False; got {snap_start!r}")
    if not snap_start:
        return
    if package != "zip":
        raise ModelFunctionError(
            "prop 'snap_start' needs package='zip': Lambda's SnapStart for Python serves managed runtimes only"
        )
    if python_version not in SNAP_START_PYTHONS:
        raise ModelFunctionError(
            f"prop 'snap_start' needs python_version {', '.join(SNAP_START_PYTHONS)}; got {python_version!r}"
        )
    if provisioned is not None:
        raise ModelFunctionError(
            "props 'snap_start' and 'provisioned_concurrency' exclude each other (Lambda refuses both on one version)"
        )


def check_image_only(package: str, base_image: str | None) -> None:
    if package == "zip" and base_image is not None:
        raise ModelFunctionError("prop 'base_image' applies to package='image' only; a zip runs on the managed runtime")


def check_response(response: str | None) -> None:
    if response is not None and response not in RESPONSES:
        raise ModelFunctionError(
            f"prop 'response' must be one of {', '.join(RESPONSES)} (or None for the model's own); got {response!r}"
        )


def function_environment(
    model: str,
    environment: Mapping[str, str] | None,
    max_rows: int | None,
    *,
    response: str | None = None,
    docs: bool = False,
) -> dict[str, str]:
    """The user's extra variables plus the construct's own, which the user may not override."""
    extra = dict(environment or {})
    for name in extra:
        if name in MANAGED_ENV:
            raise ModelFunctionError(
                f"prop 'environment' may not set {name}: it is set from the prop '{MANAGED_ENV[name]}'"
            )
        if name in IMAGE_ENV:
            raise ModelFunctionError(
                f"prop 'environment' may not set {name}: the image sets it to match the files it contains"
            )
        if name in LAMBDA_RESERVED_ENV:
            raise ModelFunctionError(
                f"prop 'environment' may not set {name}: Lambda reserves it and would reject the function"
            )
    env = {**extra, MODEL_ENV: model}
    if max_rows is not None:
        env[MAX_ROWS_ENV] = str(max_rows)
    if response is not None:
        env[RESPONSE_ENV] = response
    if docs:
        env[DOCS_ENV] = "1"
    return env


def check_network(
    vpc: ec2.IVpc | None, subnets: ec2.SubnetSelection | None, security_groups: Sequence[ec2.ISecurityGroup] | None
) -> None:
    """Subnets and security groups only mean something inside a VPC."""
    if vpc is None:
        for prop, value in (("vpc_subnets", subnets), ("security_groups", security_groups)):
            if value:
                raise ModelFunctionError(f"prop {prop!r} needs prop 'vpc': without one the function runs in no VPC")
