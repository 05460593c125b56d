"""``ModelFunction``: one lambda-ml-serve model as a Lambda function (image or zip) behind a Function URL."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Acknowledgment, Annotations, Duration, Stack, Stage, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from lambda_ml_serve.bundling.context import PLATFORMS as DOCKER_PLATFORMS
from lambda_ml_serve.bundling.vendor import VendorError
from lambda_ml_serve.errors import LambdaMLServeError
from lambda_ml_serve.plugins import get_registry
from lambda_ml_serve_cdk import rollout, validation
from lambda_ml_serve_cdk.capture import Capture, CapturePipeline, check_capture
from lambda_ml_serve_cdk.cors import ModelCors
from lambda_ml_serve_cdk.errors import ModelFunctionError
from lambda_ml_serve_cdk.observability import ModelMetrics, model_dashboard
from lambda_ml_serve_cdk.rendering import RenderedContext, RenderedZip, ensure_build_context, ensure_deployment_zip
from lambda_ml_serve_cdk.tuning import tuned_memory_size

#: CDK context key naming the folder that holds rendered build contexts (one subfolder per model
#: and architecture); e.g. ``cdk synth -c lambda-ml-serve:contextRoot=/var/cache/lms``.
CONTEXT_ROOT_KEY = "lambda-ml-serve:contextRoot"
#: The alias every deployment moves to its new version, and the one the Function URL serves.
LIVE_ALIAS = "live"
#: 1769 MB is where Lambda gives a function one full vCPU; less slows inference down in proportion.
DEFAULT_MEMORY_MB = 1769
ASSET_PLATFORMS = {"x86_64": ecr_assets.Platform.LINUX_AMD64, "arm64": ecr_assets.Platform.LINUX_ARM64}
RUNTIMES = {
    "3.10": lambda_.Runtime.PYTHON_3_10,
    "3.11": lambda_.Runtime.PYTHON_3_11,
    "3.12": lambda_.Runtime.PYTHON_3_12,
    "3.13": lambda_.Runtime.PYTHON_3_13,
    "3.14": lambda_.Runtime.PYTHON_3_14,
}


def default_context_dir(scope: Construct, model: str, arch: str, backend: str) -> Path:
    """``<context root>/<model>-<backend>-<arch>``; the root is the CDK context value, else next to ``cdk.out``."""
    name = f"{model}-{backend}-{arch}"
    root = scope.node.try_get_context(CONTEXT_ROOT_KEY)
    if root:
        return Path(root).resolve() / name
    app = scope.node.root
    outdir = Path(app.outdir) if Stage.is_stage(app) else Path.cwd() / "cdk.out"
    # Beside cdk.out, not in it: the CLI may clean cdk.out, and the render must survive that.
    return outdir.resolve().parent / ".lambda-ml-serve" / name


class ModelFunction(Construct):
    """A model served by lambda-ml-serve: Lambda function (container image or zip), log group, Function URL.

    The image is built from the same build context ``lambda-ml-serve build`` renders, and the zip is
    the one ``lambda-ml-serve build --package zip`` writes, so what runs in Lambda is what the
    framework tests locally. By default the URL requires SigV4-signed requests
    (``AWS_IAM``); give callers access with :meth:`grant_invoke_url`.

    :param model: the name of an installed model (``lambda-ml-serve list``).
    :param backend: serve with this installed backend instead of the model's own (as ``build
        --backend``), e.g. ``compiled`` for an XGBoost model.
    :param architecture: ``Architecture.X86_64`` (default) or ``Architecture.ARM_64``; the image's
        packages are vendored for it, so the model's wheels must exist for it.
    :param auth_type: ``FunctionUrlAuthType.AWS_IAM`` (default) or ``NONE`` for a public URL (the
        synth then warns).
    :param cors: CORS settings of the Function URL, for calls from browsers: a :class:`ModelCors`
        (origins, methods, headers, max age, with defaults that suit the model's routes) or CDK's own
        ``FunctionUrlCorsOptions``.
    :param memory_size: MB, 128-10240; the default 1769 buys one full vCPU. ``ModelFunction.tuned("tune.json")``
        gives the size ``lambda-ml-serve tune`` recommends.
    :param timeout: at most 15 minutes; default 30 seconds.
    :param reserved_concurrent_executions: cap (and reservation) of concurrent executions.
    :param provisioned_concurrency: environments kept initialised on the alias ``live``, removing cold starts.
    :param log_retention: how long the function's log group keeps logs (default one month).
    :param environment: extra environment variables; those the construct sets from props (the model,
        ``max_rows``) or the image sets, and the names Lambda reserves, are refused.
    :param max_rows: the most rows one request may carry (default: the model's own limit).
    :param response: ``"predictions"`` answers the bare array of predictions (as handlers returning
        ``json.dumps(list)`` did), ``"object"`` the default object; default: the model's own.
    :param docs: serve the docs page at ``GET /docs`` (default off; a browser cannot sign ``AWS_IAM``
        requests, so it suits ``NONE`` URLs, or a signing proxy).
    :param context_dir: where to render the Docker build context; default
        ``<context root>/<model>-<backend>-<arch>`` (see :func:`default_context_dir`).
    :param python_version: CPython version of the Lambda base image (or managed runtime) and the wheels.
    :param base_image: a different base image (default: the framework's choice for ``python_version``).
    :param package: ``"image"`` (default): a container image; ``"zip"``: a deployment zip for the
        managed ``pythonX.Y`` runtime (at most 250 MB unzipped, refused at synth otherwise).
    :param snap_start: with ``package="zip"`` and Python 3.12+: SnapStart on published versions (the
        alias ``live`` serves one); the model is loaded during init, so the snapshot holds it.
    :param force_render: render the build context even when an up-to-date one exists.
    :param artifact: a model file to serve instead of the plugin's own (same format and features), as
        ``lambda-ml-serve build --artifact``; its sha256 is what every answer's ``x-model-sha256`` names.
    :param encryption_key: a KMS key that encrypts the log group and the environment variables; the
        construct lets CloudWatch Logs (this region's, for this account's log groups) and the
        function's role use it.
    :param dead_letter_queue: an SQS queue that receives asynchronous invocations that failed every
        attempt; the role may send to it.
    :param vpc: run the function in this VPC (it then reaches the internet only through a NAT
        gateway, and AWS services through endpoints); the role gets the network-interface permissions.
    :param vpc_subnets: which of the VPC's subnets (default: its private subnets).
    :param security_groups: the function's security groups (default: one that allows all outbound).
    :param deployment: how CodeDeploy moves the alias ``live`` to a new version: ``"all_at_once"``,
        ``"canary10_percent_5_minutes"`` (also 10, 15, 30), ``"linear10_percent_every_1_minute"`` (also
        every 2, 3, 10 minutes), or a ``LambdaDeploymentConfig``. A pre-traffic check first invokes the
        new version with the model's example rows and fails the deployment unless it answers as
        ``build`` recorded; a rollout alarm (or one of ``alarms``) in alarm rolls it back. Default
        None: CloudFormation moves the alias at once, unchecked.
    :param alarm_thresholds: when the rollout alarms fire (:class:`~lambda_ml_serve_cdk.rollout.AlarmThresholds`).
    :param alarms: more alarms a deployment rolls back on (with ``deployment``).
    :param check_max_latency_ms: the pre-traffic check's bound on the fastest of its invocations.
    :param dashboard: create the model's CloudWatch dashboard (default True).
    :param capture: data capture, off by default: a share of requests (``0.05``) or a
        :class:`~lambda_ml_serve_cdk.capture.Capture` (rate, bucket, prefix, retention, key). The
        function writes each sampled request's rows and predictions as a capture record to its log;
        a subscription filter and Kinesis Data Firehose ship them to S3 (date-partitioned JSON Lines,
        KMS-encrypted, expiring), for ``lambda-ml-serve monitor``.
    :raises ModelFunctionError: at synth, for a prop that cannot work; the message names it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: str = "wine_quality",
        architecture: lambda_.Architecture | None = None,
        auth_type: lambda_.FunctionUrlAuthType = lambda_.FunctionUrlAuthType.AWS_IAM,
        cors: ModelCors | lambda_.FunctionUrlCorsOptions | None = None,
        memory_size: int = DEFAULT_MEMORY_MB,
        timeout: Duration | None = None,
        reserved_concurrent_executions: int | None = None,
        provisioned_concurrency: int | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        environment: Mapping[str, str] | None = None,
        max_rows: int | None = None,
        response: str | None = None,
        docs: bool = False,
        context_dir: str | Path | None = None,
        python_version: str = "3.12",
        base_image: str | None = None,
        force_render: bool = False,
        artifact: str | Path | None = None,
        encryption_key: kms.IKey | None = None,
        dead_letter_queue: sqs.IQueue | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        backend: str | None = None,
        package: str = "image",
        snap_start: bool = False,
        deployment: str | codedeploy.ILambdaDeploymentConfig | None = None,
        alarm_thresholds: rollout.AlarmThresholds | None = None,
        alarms: Sequence[cloudwatch.IAlarm] | None = None,
        check_max_latency_ms: float = 2000,
        dashboard: bool = True,
        capture: float | Capture | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        architecture = architecture or lambda_.Architecture.X86_64
        timeout = timeout or Duration.seconds(30)
        # Every cheap check first: a bad prop should not wait for a pip install to be reported.
        registry = get_registry()
        registered = validation.check_model(model, registry)
        spec = registered.spec
        backend = validation.check_backend(backend, registered, registry)
        arch = validation.arch_of(architecture)
        validation.check_memory_size(memory_size)
        validation.check_timeout(timeout)
        validation.check_concurrency(reserved_concurrent_executions, provisioned_concurrency)
        validation.check_max_rows(max_rows)
        validation.check_python_version(python_version)
        validation.check_network(vpc, vpc_subnets, security_groups)
        validation.check_response(response)
        validation.check_package(package)
        validation.check_image_only(package, base_image)
        validation.check_snap_start(snap_start, package, python_version, provisioned_concurrency)
        config = rollout.deployment_config(deployment) if deployment is not None else None
        thresholds = alarm_thresholds or rollout.AlarmThresholds()
        rollout.check_thresholds(thresholds)
        if alarms and config is None:
            raise ModelFunctionError("prop 'alarms' needs prop 'deployment': alarms roll back a CodeDeploy deployment")
        if isinstance(check_max_latency_ms, bool) or not isinstance(check_max_latency_ms, (int, float)):
            raise ModelFunctionError(f"prop 'check_max_latency_ms' must be a number; got {check_max_latency_ms!r}")
        if check_max_latency_ms <= 0:
            raise ModelFunctionError(f"prop 'check_max_latency_ms' must be a number > 0; got {check_max_latency_ms!r}")
        capture_config = check_capture(capture)
        env = validation.function_environment(
            model,
            environment,
            max_rows,
            response=response,
            docs=docs,
            capture=capture_config.rate if capture_config else None,
        )
        #: The model served, and the most rows one invocation may carry (what batch scoring sends at most).
        self.model = model
        self.max_rows: int = max_rows or spec.max_rows
        if artifact is not None and not Path(artifact).is_file():
            raise ModelFunctionError(f"prop 'artifact': {artifact} is not a file; give the path of a model file")
        artifact_path = Path(artifact).resolve() if artifact is not None else None

        location = Path(context_dir) if context_dir else default_context_dir(self, model, arch, backend)
        #: The rendered build context (``package="image"``) or deployment zip (``package="zip"``).
        self.build_context: RenderedContext | None = None
        self.deployment_zip: RenderedZip | None = None
        if package == "zip":
            self.deployment_zip = self._render_zip(
                model,
                location.with_name(location.name + ".zip"),
                arch=arch,
                backend=backend,
                python_version=python_version,
                force=force_render,
                artifact=artifact_path,
            )
        else:
            self.build_context = self._render(
                model,
                location,
                arch=arch,
                backend=backend,
                python_version=python_version,
                base_image=base_image,
                force=force_render,
                artifact=artifact_path,
            )

        self.log_group = logs.LogGroup(self, "LogGroup", retention=log_retention, encryption_key=encryption_key)
        # An own role rather than CDK's default, which attaches the managed AWSLambdaBasicExecutionRole
        # (writes to any log group; cdk-nag's AwsSolutions-IAM4): this one writes to its own group only.
        self.role = iam.Role(
            self,
            "ServiceRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of the lambda-ml-serve function serving {model}",
        )
        self.log_group.grant_write(self.role)
        if encryption_key is not None:
            self._allow_encryption(encryption_key)
        if vpc is not None:
            self._allow_network_interfaces()

        common = {
            "architecture": architecture,
            "description": f"lambda-ml-serve: model {model} {spec.version} ({backend})"[:256],
            "memory_size": memory_size,
            "timeout": timeout,
            "environment": env,
            "role": self.role,
            "log_group": self.log_group,
            "reserved_concurrent_executions": reserved_concurrent_executions,
            "environment_encryption": encryption_key,
            "dead_letter_queue": dead_letter_queue,
            "vpc": vpc,
            "vpc_subnets": vpc_subnets,
            "security_groups": list(security_groups) if security_groups else None,
        }
        self.function: lambda_.Function
        if self.deployment_zip is not None:
            self.function = lambda_.Function(
                self,
                "Function",
                runtime=RUNTIMES[python_version],
                handler=self.deployment_zip.handler,
                code=lambda_.Code.from_asset(str(self.deployment_zip.path)),
                snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if snap_start else None,
                **common,
            )
        else:
            assert self.build_context is not None
            self.function = lambda_.DockerImageFunction(
                self,
                "Function",
                code=lambda_.DockerImageCode.from_image_asset(
                    str(self.build_context.path),
                    file=self.build_context.dockerfile.relative_to(self.build_context.path).as_posix(),
                    platform=ASSET_PLATFORMS[arch],
                ),
                **common,
            )
        self._drop_redundant_role_dependency()

        # Every deployment publishes a version (current_version changes with the code and the
        # configuration) and the alias moves to it: at once, or by CodeDeploy with ``deployment``.
        self.alias: lambda_.Alias = lambda_.Alias(
            self,
            "LiveAlias",
            alias_name=LIVE_ALIAS,
            version=self.function.current_version,
            provisioned_concurrent_executions=provisioned_concurrency,
        )
        target: lambda_.IFunction = self.alias
        if isinstance(cors, ModelCors):
            cors = cors.to_options()
        self.function_url: lambda_.FunctionUrl = target.add_function_url(auth_type=auth_type, cors=cors)
        #: The Function URL (a token until deployment), ``https://<id>.lambda-url.<region>.on.aws/``.
        self.url: str = self.function_url.url

        #: The model's metrics (EMF, Lambda's, the 4xx/5xx filters), for more alarms and widgets.
        self.metrics = ModelMetrics(
            self, model=model, function_name=self.function.function_name, log_group=self.log_group, alias=self.alias
        )
        #: The rollout alarms by name (errors, throttles, server_errors, latency_p99): add actions to them.
        self.alarms: dict[str, cloudwatch.Alarm] = rollout.rollout_alarms(self, self.alias, self.metrics, thresholds)
        #: The pre-traffic check and CodeDeploy's deployment group, with ``deployment``.
        self.pre_traffic_check: lambda_.Function | None = None
        self.deployment_group: codedeploy.LambdaDeploymentGroup | None = None
        if config is not None:
            expected = self._expected_answers(spec, artifact_path)
            if expected is None:
                Annotations.of(self).add_warning_v2(
                    "lambda-ml-serve:noPreTrafficCheck",
                    f"Model {model!r} declares no example rows: new versions receive traffic without a check "
                    "of their answers; give the model spec an example.",
                )
            else:
                self.pre_traffic_check = rollout.pretraffic_hook(
                    self,
                    asset=rollout.write_hook_asset(location.with_name(location.name + ".pretraffic"), expected),
                    version=self.function.current_version,
                    model=model,
                    max_latency_ms=check_max_latency_ms,
                    log_retention=log_retention,
                )
            self.deployment_group = rollout.deployment_group(
                self,
                alias=self.alias,
                config=config,
                alarms=[*self.alarms.values(), *(alarms or ())],
                pre_hook=self.pre_traffic_check,
            )
        #: The capture pipeline (bucket, stream, subscription), with ``capture``.
        self.capture: CapturePipeline | None = None
        if capture_config is not None:
            self.capture = CapturePipeline(
                self, "Capture", model=model, log_group=self.log_group, capture=capture_config
            )
        #: The model's CloudWatch dashboard (None with ``dashboard=False``): ``add_widgets`` adds yours.
        self.dashboard: cloudwatch.Dashboard | None = (
            model_dashboard(self, self.metrics, self.alarms) if dashboard else None
        )

        if auth_type == lambda_.FunctionUrlAuthType.NONE:
            Annotations.of(self).add_warning_v2(
                "lambda-ml-serve:publicFunctionUrl",
                f"The Function URL of model {model!r} has auth type NONE: anyone who finds the URL can "
                "call it and you pay for every call. Prefer AWS_IAM (the default) and grant_invoke_url().",
            )

    def _expected_answers(self, spec, artifact: Path | None) -> dict | None:
        """What the pre-traffic check expects: the example rows and answers ``build`` recorded."""
        if self.build_context is not None:
            info = self.build_context.build_info
            example, sha256 = info.get("example"), info["artifact"]["source_sha256"]
        else:
            assert self.deployment_zip is not None
            example = self.deployment_zip.example
            sha256 = hashlib.sha256((artifact or spec.artifact_path).read_bytes()).hexdigest()
        if not example:
            return None
        return {**example, "model": spec.name, "version": spec.version, "model_sha256": sha256}

    def _allow_encryption(self, key: kms.IKey) -> None:
        """Let CloudWatch Logs encrypt this account's log groups with ``key``, and the role decrypt."""
        stack = Stack.of(self)
        key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                resources=["*"],  # in a key policy, "*" is the key itself
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                        )
                    }
                },
            )
        )
        key.grant_decrypt(self.role)

    def _allow_network_interfaces(self) -> None:
        """What AWSLambdaVPCAccessExecutionRole grants, on the construct's own role."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                resources=["*"],
            )
        )
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="Lambda creates and deletes the function's network interfaces itself; the EC2 "
                "network-interface actions support no resource-level permissions, so Resource must be *.",
            )
        )

    def _drop_redundant_role_dependency(self) -> None:
        # Lambda's construct makes the function depend on its role, which the Role property's GetAtt
        # already implies (cfn-lint W3005); the dependency on the role's policy is the one that matters.
        function = self.function.node.default_child
        policy = self.role.node.try_find_child("DefaultPolicy")
        depends_on = [policy.node.default_child.logical_id] if policy is not None else []
        function.add_override("DependsOn", depends_on)

    @staticmethod
    def _render(
        model: str,
        context_dir: Path,
        *,
        arch: str,
        backend: str,
        python_version: str,
        base_image: str | None,
        force: bool,
        artifact: Path | None = None,
    ) -> RenderedContext:
        try:
            rendered = ensure_build_context(
                model,
                context_dir,
                arch=arch,
                python=python_version,
                base_image=base_image,
                force=force,
                artifact=artifact,
                backend=backend,
            )
        except (LambdaMLServeError, VendorError) as exc:
            # pip's --platform install is what fails when a package has no wheel for the target;
            # the framework reports it as a BuildError raised while handling pip's VendorError.
            if isinstance(exc, VendorError) or isinstance(exc.__context__, VendorError):
                other = "Architecture.X86_64" if arch == "arm64" else "Architecture.ARM_64"
                raise ModelFunctionError(
                    f"prop 'architecture': the packages of model {model!r} cannot be installed for "
                    f"{DOCKER_PLATFORMS[arch]} (CPython {python_version}), most often because one of them "
                    f"has no {arch} wheel; use {other}, or require versions that ship {arch} wheels. {exc}"
                ) from exc
            raise ModelFunctionError(
                f"model {model!r}: could not render its build context into {context_dir}: {exc}"
            ) from exc
        if rendered.platform != DOCKER_PLATFORMS[arch]:
            raise ModelFunctionError(
                f"the build context in {rendered.path} targets {rendered.platform}, not "
                f"{DOCKER_PLATFORMS[arch]} as prop 'architecture' asks; re-render it with force_render=True"
            )
        return rendered

    @staticmethod
    def _render_zip(
        model: str,
        zip_path: Path,
        *,
        arch: str,
        backend: str,
        python_version: str,
        force: bool,
        artifact: Path | None = None,
    ) -> RenderedZip:
        try:
            return ensure_deployment_zip(
                model, zip_path, arch=arch, python=python_version, backend=backend, force=force, artifact=artifact
            )
        except (LambdaMLServeError, VendorError) as exc:
            raise ModelFunctionError(f"model {model!r}: could not build its deployment zip {zip_path}: {exc}") from exc

    @staticmethod
    def tuned(path: str | Path, *, model: str | None = None, backend: str | None = None) -> int:
        """The memory size (MB) a ``lambda-ml-serve tune`` report recommends: ``memory_size=ModelFunction.tuned(...)``.

        Give ``model`` (and ``backend``) to check the report measured what this function serves.
        :raises ModelFunctionError: the file is not a tune report with a recommendation, or measured another model.
        """
        return tuned_memory_size(path, model=model, backend=backend)

    def grant_invoke_url(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``grantee`` (a role, user, ...) to call the Function URL with signed requests."""
        return self.function_url.grant_invoke_url(grantee)
