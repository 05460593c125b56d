"""``BatchScoring``: score a CSV or JSON Lines object in S3 with a Step Functions Distributed Map.

The Distributed Map reads the object with an ItemReader, groups rows with an ItemBatcher (at most
the model's ``max_rows`` and 256 KiB of rows a batch, Step Functions' limit for a state's input),
invokes the model function directly (no URL) for each batch with bounded concurrency, and writes
every batch's answer to the output bucket with a ResultWriter. The function answers a batch
(``{"Items": [...], "BatchInput": {...}}``) with one prediction or one error per item, so a bad row
fails only itself; a batch whose invocation fails after its retries counts against the tolerated
failure percentage.
"""

from __future__ import annotations

import json
from typing import Any

import jsii
from aws_cdk import Acknowledgment, Aspects, Duration, IAspect, RemovalPolicy, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from lambda_ml_serve_cdk.construct import ModelFunction
from lambda_ml_serve_cdk.errors import ModelFunctionError

#: Step Functions caps a batch's input (a state's input) at 256 KiB.
MAX_BATCH_BYTES = 256 * 1024
RESULT_WRITER_V2_FLAG = "@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2"
ACCESS_LOGS_POLICY_FLAG = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"
#: Distributed Map runs at most 10,000 child executions at once.
MAX_CONCURRENCY = 10_000
INPUT_FORMATS = ("csv", "jsonl")
#: Lambda errors worth another try: throttling and the service's own transient faults.
RETRIED_ERRORS = (
    "Lambda.TooManyRequestsException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
)


#: Why the state machine's policies name resources with wildcards (cdk-nag's AwsSolutions-IAM5).
WILDCARD_REASON = (
    "The object to read is named per execution, so reading covers the input bucket's objects and "
    "writing results the output bucket's; invoking covers the function's versions; the Distributed "
    "Map describes and stops its own child executions; CloudWatch Logs delivery and X-Ray accept "
    "no narrower resource. Every statement names the one bucket, function or state machine."
)


class BatchScoring(Construct):
    """A state machine that scores one S3 object of rows with a :class:`ModelFunction`.

    Start an execution with ``{"key": "path/to/rows.csv"}`` (a key in the input bucket); the
    results land under ``results_prefix`` in the output bucket, one JSON file per batch of child
    executions plus a ``manifest.json`` (Step Functions' ResultWriter).

    :param model_function: the model to score with; it is invoked directly, never through its URL.
    :param input_bucket: where the rows are read from (default: a new encrypted bucket).
    :param output_bucket: where results are written (default: a new encrypted bucket).
    :param input_format: ``"csv"`` (the first line names the columns) or ``"jsonl"``.
    :param id_column: an input column copied into each result (and not sent to the model as a feature).
    :param max_items_per_batch: rows per invocation (default and maximum: the model's ``max_rows``).
    :param max_concurrency: invocations at once, 1 to 10,000 (default 100: mind the account's
        Lambda concurrency, and the function's reserved concurrency if any).
    :param tolerated_failure_percentage: batches that may fail (after retries) before the run fails.
    :param timeout: the whole run's time limit (default 24 hours).
    :param log_retention: how long the state machine's log group keeps its logs.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model_function: ModelFunction,
        input_bucket: s3.IBucket | None = None,
        output_bucket: s3.IBucket | None = None,
        input_format: str = "csv",
        id_column: str | None = None,
        max_items_per_batch: int | None = None,
        max_concurrency: int = 100,
        tolerated_failure_percentage: float = 0,
        results_prefix: str = "results",
        timeout: Duration | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, construct_id)
        # The Distributed Map renders its ResultWriter (V2) only under this feature flag; set for this
        # construct's subtree alone, so the app's own flags stay as they are.
        self.node.set_context(RESULT_WRITER_V2_FLAG, True)
        # Grant the log delivery service through the access-log bucket's policy, not the legacy ACL
        # (cfn-lint W3045), likewise for this subtree only.
        self.node.set_context(ACCESS_LOGS_POLICY_FLAG, True)
        max_rows = model_function.max_rows
        if input_format not in INPUT_FORMATS:
            raise ModelFunctionError(
                f"prop 'input_format' must be one of {', '.join(INPUT_FORMATS)}; got {input_format!r}"
            )
        batch_rows = max_items_per_batch or max_rows
        if not 1 <= batch_rows <= max_rows:
            raise ModelFunctionError(
                f"prop 'max_items_per_batch' must be 1 to {max_rows} (the model's max_rows); got {batch_rows}"
            )
        if not 1 <= max_concurrency <= MAX_CONCURRENCY:
            raise ModelFunctionError(f"prop 'max_concurrency' must be 1 to {MAX_CONCURRENCY}; got {max_concurrency}")
        if not 0 <= tolerated_failure_percentage <= 100:
            raise ModelFunctionError(
                f"prop 'tolerated_failure_percentage' must be 0 to 100; got {tolerated_failure_percentage}"
            )

        self.access_logs: s3.Bucket | None = None
        self.input_bucket = input_bucket or self._bucket("Input")
        self.output_bucket = output_bucket or self._bucket("Output")

        reader_props = {"bucket": self.input_bucket, "key": sfn.JsonPath.string_at("$.key")}
        reader: sfn.IItemReader = (
            sfn.S3CsvItemReader(csv_headers=sfn.CsvHeaders.use_first_row(), **reader_props)
            if input_format == "csv"
            else sfn.S3JsonLItemReader(**reader_props)
        )
        target: lambda_.IFunction = getattr(model_function, "alias", None) or model_function.function
        score = tasks.LambdaInvoke(
            self,
            "Score",
            lambda_function=target,
            payload_response_only=True,
            retry_on_service_exceptions=False,  # the retry below covers them, with jitter
        )
        score.add_retry(
            errors=list(RETRIED_ERRORS),
            interval=Duration.seconds(1),
            backoff_rate=2,
            max_attempts=8,
            max_delay=Duration.seconds(60),
            jitter_strategy=sfn.JitterType.FULL,
        )
        scoring = sfn.DistributedMap(
            self,
            "ScoreRows",
            item_reader=reader,
            item_batcher=sfn.ItemBatcher(
                max_items_per_batch=batch_rows,
                max_input_bytes_per_batch=MAX_BATCH_BYTES,
                batch_input={"id_column": id_column} if id_column else {},
            ),
            max_concurrency=max_concurrency,
            tolerated_failure_percentage=tolerated_failure_percentage,
            # Express child executions: billed by duration, not per state transition; a batch takes seconds.
            map_execution_type=sfn.StateMachineType.EXPRESS,
            result_writer_v2=sfn.ResultWriterV2(bucket=self.output_bucket, prefix=results_prefix),
        )
        scoring.item_processor(score)

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(scoring),
            timeout=timeout or Duration.hours(24),
            tracing_enabled=True,
            # Every event, but not the rows themselves: execution data would copy them into the logs.
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            comment=f"lambda-ml-serve: score rows of s3://<input>/<key> with {model_function.model}",
        )
        # The RoleArn's GetAtt already orders the role first (cfn-lint W3005): depend on its policy only.
        policy = self.state_machine.role.node.find_child("DefaultPolicy").node.default_child
        self.state_machine.node.default_child.add_override("DependsOn", [policy.logical_id])
        self._acknowledge_wildcards()

    def _bucket(self, name: str) -> s3.Bucket:
        if self.access_logs is None:
            self.access_logs = s3.Bucket(
                self,
                "AccessLogs",
                encryption=s3.BucketEncryption.S3_MANAGED,
                enforce_ssl=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                removal_policy=RemovalPolicy.RETAIN,
            )
            Validations.of(self.access_logs).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-S1",
                    reason="This bucket receives the server access logs of the data buckets; logging its own "
                    "access would need yet another bucket.",
                )
            )
        return s3.Bucket(
            self,
            name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{name.lower()}/",
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _acknowledge_wildcards(self) -> None:
        Aspects.of(self.state_machine).add(_AcknowledgeWildcardResources(WILDCARD_REASON))

    def grant_start(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` to start scoring runs."""
        return self.state_machine.grant_start_execution(grantee)


def flatten_reference(node: Any) -> str:
    """A CloudFormation value as cdk-nag spells it in a finding (``<Logical.Arn>``, ``<Ref>``, joins)."""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(flatten_reference(i) for i in items)
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten_reference(resource)}.{flatten_reference(attribute)}>"
        if "Ref" in node:
            return f"<{flatten_reference(node['Ref'])}>"
        if "Fn::Sub" in node:
            return flatten_reference(node["Fn::Sub"])
    return json.dumps(node, separators=(",", ":"))


def wildcard_resources(document: dict[str, Any]) -> list[str]:
    """The wildcard resources of a policy document's Allow statements, as cdk-nag's IAM5 names them."""
    found: dict[str, None] = {}
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        resources = statement.get("Resource", [])
        for resource in resources if isinstance(resources, list) else [resources]:
            flat = flatten_reference(resource)
            if "*" in flat:
                found[f"Resource::{flat}"] = None
    return list(found)


@jsii.implements(IAspect)
class _AcknowledgeWildcardResources:
    """Acknowledges, with one written reason, each wildcard resource of the policies below a construct.

    Only resources: a wildcard *action* would still be reported. The findings are computed from the
    synthesised policies, so a statement added later is acknowledged only if it too is a resource
    wildcard of the same construct's own policies.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def visit(self, node: Any) -> None:
        if not isinstance(node, iam.CfnPolicy):
            return
        document = Stack.of(node).resolve(node.policy_document)
        acknowledgments = [
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[{finding}]", reason=self.reason)
            for finding in wildcard_resources(document)
        ]
        if acknowledgments:
            Validations.of(node).acknowledge(*acknowledgments)
