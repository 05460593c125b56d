"""Safe rollout: CodeDeploy shifts traffic between versions of the alias ``live``, checked and watched.

Every deployment publishes a version; with ``deployment=`` CodeDeploy moves the alias to it by the
named configuration, after the pre-traffic hook (:mod:`lambda_ml_serve_cdk.pretraffic`) has checked
the version's answers, and rolls back when one of the rollout alarms fires.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from lambda_ml_serve_cdk import pretraffic
from lambda_ml_serve_cdk.errors import ModelFunctionError

#: CodeDeploy's predefined Lambda configurations, by the names the ``deployment`` prop takes.
DEPLOYMENTS: Mapping[str, codedeploy.ILambdaDeploymentConfig] = {
    "all_at_once": codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE,
    "canary10_percent_5_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "canary10_percent_10_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_10_MINUTES,
    "canary10_percent_15_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_15_MINUTES,
    "canary10_percent_30_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_30_MINUTES,
    "linear10_percent_every_1_minute": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE,
    "linear10_percent_every_2_minutes": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_2_MINUTES,
    "linear10_percent_every_3_minutes": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_3_MINUTES,
    "linear10_percent_every_10_minutes": codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_10_MINUTES,
}
#: The hook's runtime: the newest Python Lambda offers (it needs the standard library and boto3 only).
HOOK_RUNTIME = lambda_.Runtime.PYTHON_3_14
#: Where the hook's code comes from: this package's own module, copied as the asset's one file.
HOOK_MODULE = Path(pretraffic.__file__)


@dataclass(frozen=True)
class AlarmThresholds:
    """When the rollout alarms fire (each over one-minute periods), the props' defaults.

    :param errors: invocations of the alias that failed (the function crashed or timed out; an error
        answer is not one) per minute.
    :param throttles: invocations of the alias that Lambda throttled per minute.
    :param server_errors: 5xx answers per minute, from the function's request log.
    :param latency_p99_ms: p99 of the request log's ``latency_ms`` (model time, not cold starts).
    :param evaluation_periods: consecutive breaching minutes before an alarm fires.
    """

    errors: float = 1
    throttles: float = 5
    server_errors: float = 5
    latency_p99_ms: float = 1000
    evaluation_periods: int = 2


def deployment_config(deployment: str | codedeploy.ILambdaDeploymentConfig) -> codedeploy.ILambdaDeploymentConfig:
    """The CodeDeploy configuration the ``deployment`` prop names (or is)."""
    if isinstance(deployment, str):
        if deployment not in DEPLOYMENTS:
            raise ModelFunctionError(
                f"prop 'deployment' must be one of {', '.join(DEPLOYMENTS)} (or a LambdaDeploymentConfig); "
                f"got {deployment!r}"
            )
        return DEPLOYMENTS[deployment]
    if hasattr(deployment, "deployment_config_name"):
        return deployment
    raise ModelFunctionError(
        f"prop 'deployment' must be a configuration name such as 'canary10_percent_5_minutes' or a "
        f"LambdaDeploymentConfig; got {type(deployment).__name__}"
    )


def check_thresholds(thresholds: AlarmThresholds) -> None:
    for name in ("errors", "throttles", "server_errors", "latency_p99_ms"):
        value = getattr(thresholds, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ModelFunctionError(f"prop 'alarm_thresholds': {name} must be a number > 0; got {value!r}")
    periods = thresholds.evaluation_periods
    if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= 10:
        raise ModelFunctionError(f"prop 'alarm_thresholds': evaluation_periods must be 1 to 10; got {periods!r}")


def rollout_alarms(
    scope: Construct, alias: lambda_.Alias, metrics: Any, thresholds: AlarmThresholds
) -> dict[str, cloudwatch.Alarm]:
    """The alarms a deployment rolls back on: the alias' errors and throttles, 5xx answers, p99 latency."""
    minute = Duration.minutes(1)
    specs = {
        "errors": (alias.metric_errors(period=minute, statistic="Sum"), thresholds.errors, "failed invocations"),
        "throttles": (
            alias.metric_throttles(period=minute, statistic="Sum"),
            thresholds.throttles,
            "throttled invocations",
        ),
        "server_errors": (metrics.server_errors(), thresholds.server_errors, "5xx answers"),
        "latency_p99": (metrics.latency("p99"), thresholds.latency_p99_ms, "p99 latency_ms"),
    }
    alarms = {}
    for name, (metric, threshold, what) in specs.items():
        alarms[name] = cloudwatch.Alarm(
            scope,
            f"{''.join(part.title() for part in name.split('_'))}Alarm",
            metric=metric,
            threshold=threshold,
            evaluation_periods=thresholds.evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            # No traffic is no evidence against a version: only breaching data fires.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"lambda-ml-serve {metrics.model}: {what} >= {threshold:g} per minute "
            f"for {thresholds.evaluation_periods} minute(s)",
        )
    return alarms


def write_hook_asset(folder: Path, expected: dict[str, Any]) -> Path:
    """The hook's asset: ``pretraffic.py`` and ``expected.json``, rewritten only when they change."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "pretraffic.py": HOOK_MODULE.read_bytes(),
        pretraffic.EXPECTED_FILE: (json.dumps(expected, indent=2, sort_keys=True) + "\n").encode(),
    }
    for name, content in files.items():
        target = folder / name
        if not target.is_file() or target.read_bytes() != content:
            target.write_bytes(content)
    for extra in folder.iterdir():
        if extra.name not in files:
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    return folder


def pretraffic_hook(
    scope: Construct,
    *,
    asset: Path,
    version: lambda_.IVersion,
    model: str,
    max_latency_ms: float,
    log_retention: logs.RetentionDays,
) -> lambda_.Function:
    """The BeforeAllowTraffic function: invokes ``version`` with the example rows and reports to CodeDeploy."""
    log_group = logs.LogGroup(scope, "PreTrafficLogGroup", retention=log_retention)
    role = iam.Role(
        scope,
        "PreTrafficRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Pre-traffic check of new versions of the lambda-ml-serve function serving {model}",
    )
    log_group.grant_write(role)
    hook = lambda_.Function(
        scope,
        "PreTrafficCheck",
        runtime=HOOK_RUNTIME,
        handler="pretraffic.handler",
        code=lambda_.Code.from_asset(str(asset)),
        description=f"lambda-ml-serve: checks a new version of model {model} before it receives traffic"[:256],
        memory_size=256,
        timeout=Duration.minutes(2),
        role=role,
        log_group=log_group,
        environment={
            pretraffic.TARGET_ENV: version.function_arn,
            pretraffic.MAX_LATENCY_ENV: f"{max_latency_ms:g}",
        },
    )
    function = hook.node.default_child
    policy = role.node.try_find_child("DefaultPolicy")
    function.add_override("DependsOn", [policy.node.default_child.logical_id] if policy is not None else [])
    version.grant_invoke(role)
    reason = (
        "CodeDeploy invokes the pre-traffic check once per deployment and waits for its report; a failed "
        "check fails the deployment, so neither a dead-letter queue nor tracing would add anything."
    )
    Validations.of(hook).acknowledge(
        Acknowledgment(id="Serverless::Serverless-LambdaDLQ", reason=reason),
        Acknowledgment(id="Serverless::Serverless-LambdaTracing", reason=reason),
    )
    return hook


def deployment_group(
    scope: Construct,
    *,
    alias: lambda_.Alias,
    config: codedeploy.ILambdaDeploymentConfig,
    alarms: Sequence[cloudwatch.IAlarm],
    pre_hook: lambda_.IFunction | None,
) -> codedeploy.LambdaDeploymentGroup:
    """CodeDeploy's deployment group for ``alias``: traffic shifts by ``config``, rolls back on ``alarms``."""
    group = codedeploy.LambdaDeploymentGroup(
        scope,
        "Deployment",
        alias=alias,
        deployment_config=config,
        alarms=list(alarms),
        pre_hook=pre_hook,
        auto_rollback=codedeploy.AutoRollbackConfig(
            failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
        ),
    )
    hook_arn = f"<{Stack.of(scope).get_logical_id(pre_hook.node.default_child)}.Arn>" if pre_hook else None
    Validations.of(group.role).acknowledge(
        *(
            [
                Acknowledgment(
                    id=f"AwsSolutions-IAM5[Resource::{hook_arn}:*]",
                    reason="CDK lets CodeDeploy invoke the pre-traffic check in any of its versions; the "
                    "check is one function the construct owns.",
                )
            ]
            if hook_arn
            else []
        ),
        Acknowledgment(
            id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited]",
            reason="CodeDeploy's own managed policy for Lambda deployments, the limited one: it may update "
            "aliases, read alarms and invoke only hooks it is given (the construct grants the one hook).",
        ),
    )
    return group
