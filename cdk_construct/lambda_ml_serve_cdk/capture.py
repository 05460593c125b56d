"""Data capture: sampled requests' rows and predictions, from the function's log to S3.

The function writes each sampled request as a capture record (a log line with ``"type": "capture"``,
see :class:`lambda_ml_serve.runtime.telemetry.Capture`). A subscription filter sends those lines, and
only those, to a Kinesis Data Firehose stream, which unpacks CloudWatch Logs' envelopes and writes
the records as JSON Lines to an S3 bucket under a date-partitioned prefix, KMS-encrypted, expiring
after a retention. ``lambda-ml-serve monitor MODEL s3://bucket/prefix`` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Size, Stack, Validations
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as destinations
from aws_cdk import aws_s3 as s3
from constructs import Construct

from lambda_ml_serve.runtime.telemetry import CAPTURE_TYPE
from lambda_ml_serve_cdk.errors import ModelFunctionError

#: The id of the mapping Firehose's construct adds to the stack.
FIREHOSE_CIDR_MAPPING = "@aws-cdk--aws-kinesisfirehose.CidrBlocks"
#: Picks capture records, and nothing else, out of the function's log.
FILTER_PATTERN = f'{{ $.type = "{CAPTURE_TYPE}" }}'


@dataclass(frozen=True)
class Capture:
    """The ``capture`` prop: which share of requests to capture, and where to keep them.

    :param rate: the share of answered prediction requests captured, 0 to 1 (``0.05``: one in twenty).
    :param bucket: an existing bucket to write to (default: a new KMS-encrypted one).
    :param prefix: the key prefix; the date follows it (``<prefix>year=YYYY/month=MM/day=DD/``).
    :param retention_days: how long captured objects are kept in a new bucket (default 90).
    :param encryption_key: the KMS key of a new bucket and of the stream (default: a new one, rotated).
    """

    rate: float
    bucket: s3.IBucket | None = None
    prefix: str = "capture/"
    retention_days: int = 90
    encryption_key: kms.IKey | None = None


def check_capture(capture: float | Capture | None) -> Capture | None:
    """The ``capture`` prop as a :class:`Capture` (a bare number is the rate), or None when off."""
    if capture is None:
        return None
    if not isinstance(capture, Capture):
        capture = Capture(rate=capture)  # type: ignore[arg-type]
    rate = capture.rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise ModelFunctionError(
            f"prop 'capture' must be a share of requests above 0 and at most 1 (e.g. 0.05), or None for no "
            f"capture; got {rate!r}"
        )
    if not isinstance(capture.retention_days, int) or capture.retention_days < 1:
        raise ModelFunctionError(
            f"prop 'capture': retention_days must be a whole number >= 1; got {capture.retention_days!r}"
        )
    if not capture.prefix or capture.prefix.startswith("/") or not capture.prefix.endswith("/"):
        raise ModelFunctionError(
            f"prop 'capture': prefix must be a relative key prefix ending in '/'; got {capture.prefix!r}"
        )
    return capture


class CapturePipeline(Construct):
    """Subscription filter -> Firehose -> S3 for one model function's capture records."""

    def __init__(self, scope: Construct, construct_id: str, *, model: str, log_group: logs.ILogGroup, capture: Capture):
        super().__init__(scope, construct_id)
        # Server access logs granted by a bucket policy rather than the LogDeliveryWrite ACL (which
        # needs object ACLs on, and cfn-lint flags): the feature flag, for this construct's buckets.
        self.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
        self.key: kms.IKey = capture.encryption_key or kms.Key(
            self, "Key", enable_key_rotation=True, description=f"Captured requests of model {model}"
        )
        self.bucket: s3.IBucket
        if capture.bucket is not None:
            self.bucket = capture.bucket
        else:
            self.access_logs = s3.Bucket(
                self,
                "AccessLogs",
                encryption=s3.BucketEncryption.S3_MANAGED,  # server access logs cannot be written with SSE-KMS
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(capture.retention_days))],
                removal_policy=RemovalPolicy.RETAIN,
            )
            Validations.of(self.access_logs).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-S1",
                    reason="It is the access-log bucket of the capture bucket: logging it would log the logs.",
                )
            )
            self.bucket = s3.Bucket(
                self,
                "Bucket",
                encryption=s3.BucketEncryption.KMS,
                encryption_key=self.key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix="capture-bucket/",
                lifecycle_rules=[
                    s3.LifecycleRule(
                        prefix=capture.prefix,
                        expiration=Duration.days(capture.retention_days),
                        abort_incomplete_multipart_upload_after=Duration.days(1),
                    )
                ],
                # Captured requests are data the owner decides about: a stack deletion keeps them.
                removal_policy=RemovalPolicy.RETAIN,
            )
        # Firehose decompresses CloudWatch Logs' batches, takes each log event's message (one capture
        # record) and ends it with a newline: S3 receives plain JSON Lines, gzip-compressed.
        destination = firehose.S3Bucket(
            self.bucket,
            data_output_prefix=f"{capture.prefix}model={model}/"
            "year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/",
            error_output_prefix=f"{capture.prefix}errors/model={model}/"
            "!{firehose:error-output-type}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/",
            compression=firehose.Compression.GZIP,
            file_extension=".jsonl.gz",
            encryption_key=self.key,
            buffering_interval=Duration.minutes(5),
            buffering_size=Size.mebibytes(64),
            processors=[
                firehose.DecompressionProcessor(),
                firehose.CloudWatchLogProcessor(data_message_extraction=True),
                firehose.AppendDelimiterToRecordProcessor(),
            ],
        )
        stack = Stack.of(self)
        had_mapping = stack.node.try_find_child(FIREHOSE_CIDR_MAPPING) is not None
        self.stream = firehose.DeliveryStream(
            self,
            "Stream",
            destination=destination,
            encryption=firehose.StreamEncryption.customer_managed_key(self.key),
        )
        self.subscription = logs.SubscriptionFilter(
            self,
            "Subscription",
            log_group=log_group,
            destination=destinations.FirehoseDestination(self.stream),
            filter_pattern=logs.FilterPattern.literal(FILTER_PATTERN),
        )
        bucket_arn = f"<{Stack.of(self).get_logical_id(self.bucket.node.default_child)}.Arn>"
        reason = (
            "CDK's grants for Firehose: object keys under the capture bucket (the date in a key is known only "
            "at write time), multipart-upload cleanup, and the capture key's data-key actions."
        )
        granular = [
            "Action::kms:ReEncrypt*",
            "Action::kms:GenerateDataKey*",
            "Action::s3:GetObject*",
            "Action::s3:GetBucket*",
            "Action::s3:List*",
            "Action::s3:DeleteObject*",
            "Action::s3:Abort*",
            f"Resource::{bucket_arn}/*",
        ]
        Validations.of(self.stream).acknowledge(
            *(Acknowledgment(id=f"AwsSolutions-IAM5[{finding}]", reason=reason) for finding in granular)
        )
        # Firehose's construct adds a mapping of its service's CIDR blocks per region (for the
        # stream's ``connections``, which this pipeline never uses); unreferenced, it is a cfn-lint
        # finding (W7001). Removed only when this stream added it: another stream's stays.
        if not had_mapping:
            stack.node.try_remove_child(FIREHOSE_CIDR_MAPPING)
