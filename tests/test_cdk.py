"""The CDK construct and its example app, synthesised offline: no AWS account, no Docker.

The build context is rendered for real (pip, once per session per architecture); every synth then
reuses it, as repeated ``cdk synth`` runs do. The CDK libraries come from ``pip install -e
cdk_construct`` and the CLI from ``npm ci --prefix cdk_construct``: without them these tests skip,
except in CI (``CI`` set), which installs both and where a missing install must fail.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import LEGACY_MODELS
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lambda_ml_serve.bundling.context import PLATFORMS, BuildContext
from lambda_ml_serve.bundling.vendor import VendorError

# jsii starts Node on the first CDK import and would print a banner about Node 20's end of life.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def _require(name: str) -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason="needs the CDK construct: pip install -e cdk_construct")


cdk = _require("aws_cdk")
assertions = _require("aws_cdk.assertions")
ec2 = _require("aws_cdk.aws_ec2")
iam = _require("aws_cdk.aws_iam")
kms = _require("aws_cdk.aws_kms")
sqs = _require("aws_cdk.aws_sqs")
cdk_nag = _require("cdk_nag")
cfnlint_api = _require("cfnlint.api")
lambda_ = _require("aws_cdk.aws_lambda")
logs = _require("aws_cdk.aws_logs")
lms_cdk = _require("lambda_ml_serve_cdk")
rendering = _require("lambda_ml_serve_cdk.rendering")

CDK_DIR = Path(__file__).resolve().parents[1] / "cdk_construct"
CDK_CLI = CDK_DIR / "node_modules" / ".bin" / "cdk"
EXAMPLE_STACK = "lambda-ml-serve-wine-quality"
#: Unit tests read the asset from where it was rendered instead of copying ~170 MB into every
#: cdk.out; the CLI test below stages it as a real synth does.
NO_STAGING = {"aws:cdk:disable-asset-staging": True}
ModelFunction = lms_cdk.ModelFunction
ModelFunctionError = lms_cdk.ModelFunctionError


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="session")
def context_root(tmp_path_factory) -> Path:
    """The CDK context value ``lambda-ml-serve:contextRoot`` shared by every synth in this module."""
    return tmp_path_factory.mktemp("lambda-ml-serve-contexts")


@pytest.fixture(scope="session")
def wine_x86(context_root):
    return lms_cdk.ensure_build_context("wine_quality", context_root / "wine_quality-xgboost-x86_64", arch="x86_64")


@pytest.fixture(scope="session")
def wine_arm(context_root):
    return lms_cdk.ensure_build_context("wine_quality", context_root / "wine_quality-xgboost-arm64", arch="arm64")


@pytest.fixture
def new_app(tmp_path, context_root, monkeypatch):
    """``new_app(**context)``: an app writing to tmp_path that finds the session's rendered contexts."""
    # The example app reads these; a developer's shell must not change what is synthesised.
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)

    apps = []

    def make(**context):
        context = {lms_cdk.CONTEXT_ROOT_KEY: str(context_root), **NO_STAGING, **context}
        apps.append(cdk.App(outdir=str(tmp_path / "cdk.out"), context=context))
        return apps[-1]

    yield make
    # Every template a test synthesised passes cfn-lint, whatever else the test checked.
    for app in apps:
        with contextlib.suppress(RuntimeError):  # a cdk-nag finding the test provoked on purpose
            app.synth()
    for template in sorted((tmp_path / "cdk.out").glob("*.template.json")):
        assert cfn_lint(json.loads(template.read_text(encoding="utf-8"))) == [], template.name


@pytest.fixture
def new_stack(new_app):
    return lambda: cdk.Stack(new_app(), "Test")


def cfn_lint(template: dict) -> list[str]:
    """cfn-lint's findings (errors, warnings and informational) on a synthesised template."""
    matches = cfnlint_api.lint(json.dumps(template), config=cfnlint_api.ManualArgs(regions=["eu-west-1"]))
    return [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches]


def only(template, resource_type: str) -> dict:
    """The one resource of ``resource_type`` in the template."""
    found = template.find_resources(resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return next(iter(found.values()))


def image_asset(stack) -> tuple[str, dict]:
    """The stack's one Docker image asset (hash, source) from its synthesised asset manifest."""
    outdir = Path(cdk.Stage.of(stack).outdir)
    manifest = json.loads((outdir / f"{stack.artifact_id}.assets.json").read_text(encoding="utf-8"))
    ((asset_hash, image),) = manifest["dockerImages"].items()
    return asset_hash, image["source"]


def load_example_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lambda_ml_serve_cdk_example_app", CDK_DIR / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def warnings_of(stack) -> list[str]:
    found = assertions.Annotations.from_stack(stack).find_warning("*", assertions.Match.any_value())
    return [str(w["entry"]["data"]) for w in found]


# ---------------------------------------------------------------------------------------------
# The construct's resources


@pytest.mark.slow
def test_defaults_image_function_behind_an_iam_url(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model")
    template = assertions.Template.from_stack(stack)

    function = only(template, "AWS::Lambda::Function")["Properties"]
    assert function["PackageType"] == "Image"
    asset_hash, source = image_asset(stack)
    assert asset_hash in json.dumps(function["Code"]["ImageUri"])
    assert source["platform"] == "linux/amd64"
    assert Path(source["directory"]) == wine_x86.path
    assert function["Architectures"] == ["x86_64"]
    assert function["MemorySize"] == 1769
    assert function["Timeout"] == 30
    assert function["Environment"]["Variables"] == {"LAMBDA_ML_SERVE_MODEL": "wine_quality"}
    assert "ReservedConcurrentExecutions" not in function

    url = only(template, "AWS::Lambda::Url")["Properties"]
    assert url["AuthType"] == "AWS_IAM"
    # Every deployment publishes a version behind the alias the URL serves.
    assert url["Qualifier"] == "live"
    assert "Cors" not in url
    template.resource_count_is("AWS::Lambda::Alias", 1)
    template.resource_count_is("AWS::Lambda::Version", 1)
    template.resource_count_is("AWS::CodeDeploy::DeploymentGroup", 0)  # no deployment= : the alias moves at once
    # AWS_IAM with no grant: no resource policy opens the function to anyone.
    template.resource_count_is("AWS::Lambda::Permission", 0)
    assert model.alias is not None
    assert cdk.Token.is_unresolved(model.url)

    log_group_id, log_group = next(iter(template.find_resources("AWS::Logs::LogGroup").items()))
    assert log_group["Properties"] == {"RetentionInDays": 30}
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": log_group_id}}
    # The execution role writes to its own log group and nothing else: no managed policy.
    role = only(template, "AWS::IAM::Role")["Properties"]
    assert "ManagedPolicyArns" not in role
    statements = only(template, "AWS::IAM::Policy")["Properties"]["PolicyDocument"]["Statement"]
    assert statements == [
        {
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [log_group_id, "Arn"]},
        }
    ]
    assert warnings_of(stack) == []


@pytest.mark.slow
def test_props_reach_the_template(new_stack, wine_x86):
    stack = new_stack()
    ModelFunction(
        stack,
        "Model",
        memory_size=3008,
        timeout=cdk.Duration.minutes(2),
        reserved_concurrent_executions=10,
        log_retention=logs.RetentionDays.ONE_WEEK,
        environment={"LOG_LEVEL": "debug"},
        max_rows=250,
        cors=lambda_.FunctionUrlCorsOptions(allowed_origins=["https://example.org"]),
    )
    template = assertions.Template.from_stack(stack)
    function = only(template, "AWS::Lambda::Function")["Properties"]
    assert function["MemorySize"] == 3008
    assert function["Timeout"] == 120
    assert function["ReservedConcurrentExecutions"] == 10
    assert function["Environment"]["Variables"] == {
        "LOG_LEVEL": "debug",
        "LAMBDA_ML_SERVE_MODEL": "wine_quality",
        "LAMBDA_ML_SERVE_MAX_ROWS": "250",
    }
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 7})
    url = only(template, "AWS::Lambda::Url")["Properties"]
    assert url["Cors"]["AllowOrigins"] == ["https://example.org"]


def test_cors_prop_maps_to_the_function_urls_cors(new_stack, wine_x86):
    stack = new_stack()
    cors = lms_cdk.ModelCors(
        allowed_origins=["https://app.example.org", "http://localhost:3000"],
        allowed_methods=["GET", "POST"],
        allowed_headers=["content-type", "content-encoding"],
        max_age=600,
    )
    ModelFunction(stack, "Model", auth_type=lambda_.FunctionUrlAuthType.NONE, cors=cors)
    template = assertions.Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Lambda::Url",
        {
            "Cors": {
                "AllowOrigins": ["https://app.example.org", "http://localhost:3000"],
                "AllowMethods": ["GET", "POST"],
                "AllowHeaders": ["content-type", "content-encoding"],
                "ExposeHeaders": assertions.Match.array_with(["x-request-id", "x-model-sha256"]),
                "MaxAge": 600,
            }
        },
    )
    defaults = only_url_cors(new_stack, lms_cdk.ModelCors(allowed_origins=["*"]))
    assert defaults["AllowMethods"] == ["GET", "HEAD", "POST"] and defaults["MaxAge"] == 300
    assert "inference-header-content-length" in defaults["AllowHeaders"]


def only_url_cors(new_stack, cors) -> dict:
    stack = new_stack()
    ModelFunction(stack, "Model", cors=cors)
    return only(assertions.Template.from_stack(stack), "AWS::Lambda::Url")["Properties"]["Cors"]


@pytest.mark.parametrize(
    ("cors", "says"),
    [
        ({"allowed_origins": []}, "cors.allowed_origins"),
        ({"allowed_origins": ["https://a.example"], "allowed_methods": ["FETCH"]}, "cors.allowed_methods"),
        ({"allowed_origins": ["https://a.example"], "max_age": 90000}, "cors.max_age"),
        ({"allowed_origins": ["*"], "allow_credentials": True}, "cors.allow_credentials"),
    ],
)
def test_cors_props_that_cannot_work_are_refused(new_stack, wine_x86, cors, says):
    with pytest.raises(lms_cdk.ModelFunctionError, match=says):
        ModelFunction(new_stack(), "Model", cors=lms_cdk.ModelCors(**cors))


@pytest.mark.slow
def test_response_and_docs_props_set_the_function_environment(new_stack, wine_x86, tmp_path):
    stack = new_stack()
    ModelFunction(stack, "Model", response="predictions", docs=True)
    variables = only(assertions.Template.from_stack(stack), "AWS::Lambda::Function")["Properties"]["Environment"]
    assert variables["Variables"] == {
        "LAMBDA_ML_SERVE_MODEL": "wine_quality",
        "LAMBDA_ML_SERVE_RESPONSE": "predictions",
        "LAMBDA_ML_SERVE_DOCS": "1",
    }
    bad = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Bad")
    with pytest.raises(ModelFunctionError, match=r"prop 'response' must be one of object, predictions.*'bare'"):
        ModelFunction(bad, "Model", response="bare", context_dir=tmp_path / "context")
    with pytest.raises(ModelFunctionError, match=r"may not set LAMBDA_ML_SERVE_DOCS: it is set from the prop 'docs'"):
        ModelFunction(bad, "Other", environment={"LAMBDA_ML_SERVE_DOCS": "1"}, context_dir=tmp_path / "context")


def test_function_depends_on_its_policy_not_redundantly_on_its_role(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model")
    template = assertions.Template.from_stack(stack)
    function = only(template, "AWS::Lambda::Function")
    policy_id = stack.get_logical_id(model.role.node.find_child("DefaultPolicy").node.default_child)
    # The Role property's GetAtt already orders the role first (cfn-lint W3005 otherwise).
    assert function["DependsOn"] == [policy_id]
    assert cfn_lint(template.to_json()) == []


def secured_stack(new_app):
    """A stack with a ModelFunction using every hardening prop, checked by both cdk-nag packs."""
    app = new_app()
    cdk.Validations.of(app).add_plugins(cdk_nag.AwsSolutionsChecks(app), cdk_nag.ServerlessChecks(app))
    stack = cdk.Stack(app, "Secured", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    queue = sqs.Queue(stack, "Failed", encryption_master_key=key, enforce_ssl=True)
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id="vpc-0123456789abcdef0",
        availability_zones=["eu-west-1a", "eu-west-1b"],
        private_subnet_ids=["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
    )
    group = ec2.SecurityGroup(stack, "Egress", vpc=vpc, description="Outbound traffic of the model function")
    model = ModelFunction(
        stack,
        "Model",
        encryption_key=key,
        dead_letter_queue=queue,
        vpc=vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        security_groups=[group],
        reserved_concurrent_executions=20,
    )
    dlq_reason = "It is the function's dead-letter queue: a DLQ of its own would only move the same messages."
    cdk.Validations.of(queue).acknowledge(
        cdk.Acknowledgment(id="AwsSolutions-SQS3[]", reason=dlq_reason),
        cdk.Acknowledgment(id="Serverless::Serverless-SQSRedrivePolicy", reason=dlq_reason),
    )
    cdk.Validations.of(model.function).acknowledge(
        cdk.Acknowledgment(id="Serverless::Serverless-LambdaTracing", reason="The request log's EMF records suffice.")
    )
    return app, stack, key, queue, group


@pytest.mark.slow
def test_kms_dead_letter_queue_vpc_and_concurrency_props(new_app, tmp_path, wine_x86):
    app, stack, key, queue, group = secured_stack(new_app)
    template = assertions.Template.from_stack(stack)
    key_arn = {"Fn::GetAtt": [stack.get_logical_id(key.node.default_child), "Arn"]}
    queue_arn = {"Fn::GetAtt": [stack.get_logical_id(queue.node.default_child), "Arn"]}

    function = only(template, "AWS::Lambda::Function")["Properties"]
    assert function["KmsKeyArn"] == key_arn
    assert function["DeadLetterConfig"] == {"TargetArn": queue_arn}
    assert function["VpcConfig"]["SubnetIds"] == ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    assert function["VpcConfig"]["SecurityGroupIds"] == [
        {"Fn::GetAtt": [stack.get_logical_id(group.node.default_child), "GroupId"]}
    ]
    assert function["ReservedConcurrentExecutions"] == 20
    assert only(template, "AWS::Logs::LogGroup")["Properties"]["KmsKeyId"] == key_arn

    statements = only(template, "AWS::IAM::Policy")["Properties"]["PolicyDocument"]["Statement"]
    actions = {json.dumps(s["Action"]) for s in statements}
    assert json.dumps("kms:Decrypt") in actions
    assert any("sqs:SendMessage" in a for a in actions)
    assert any("ec2:CreateNetworkInterface" in a for a in actions)
    key_policy = only(template, "AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    (logs_statement,) = [s for s in key_policy if "kms:EncryptionContext:aws:logs:arn" in json.dumps(s)]
    assert logs_statement["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}

    app.synth()  # both cdk-nag packs: any finding not acknowledged with a reason fails here
    report = json.loads((tmp_path / "cdk.out" / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


@pytest.mark.parametrize("prop", ["vpc_subnets", "security_groups"])
def test_network_props_need_a_vpc(prop, tmp_path):
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Test")
    value = (
        ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        if prop == "vpc_subnets"
        else [ec2.SecurityGroup.from_security_group_id(stack, "Group", "sg-0123456789abcdef0")]
    )
    with pytest.raises(ModelFunctionError, match=rf"prop '{prop}' needs prop 'vpc'"):
        ModelFunction(stack, "Model", context_dir=tmp_path / "context", **{prop: value})
    assert not (tmp_path / "context").exists()


@pytest.mark.slow
def test_public_url_only_when_asked_and_with_a_warning(new_stack, wine_x86):
    stack = new_stack()
    ModelFunction(stack, "Model", auth_type=lambda_.FunctionUrlAuthType.NONE)
    template = assertions.Template.from_stack(stack)

    assert only(template, "AWS::Lambda::Url")["Properties"]["AuthType"] == "NONE"
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {"Action": "lambda:InvokeFunctionUrl", "Principal": "*", "FunctionUrlAuthType": "NONE"},
    )
    assertions.Annotations.from_stack(stack).has_warning(
        "/Test/Model", assertions.Match.string_like_regexp("auth type NONE: anyone")
    )


@pytest.mark.slow
def test_provisioned_concurrency_puts_the_url_on_a_live_alias(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model", provisioned_concurrency=2, reserved_concurrent_executions=5)
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())
    model.grant_invoke_url(caller)
    template = assertions.Template.from_stack(stack)

    alias_id, alias = next(iter(template.find_resources("AWS::Lambda::Alias").items()))
    assert alias["Properties"]["Name"] == lms_cdk.LIVE_ALIAS == "live"
    assert alias["Properties"]["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 2}
    template.resource_count_is("AWS::Lambda::Version", 1)
    url = only(template, "AWS::Lambda::Url")
    assert url["Properties"]["Qualifier"] == "live"
    assert alias_id in url["DependsOn"]
    assert model.alias is not None
    # The grant is for the alias the URL serves, not the unqualified function.
    caller_ref = {"Ref": stack.get_logical_id(caller.node.default_child)}
    (policy,) = [
        p for p in template.find_resources("AWS::IAM::Policy").values() if p["Properties"]["Roles"] == [caller_ref]
    ]
    resources = {json.dumps(s["Resource"]) for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert resources == {json.dumps({"Ref": alias_id})}


@pytest.mark.slow
def test_grant_invoke_url_allows_signed_calls_through_the_url_only(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model")
    caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())
    model.grant_invoke_url(caller)
    template = assertions.Template.from_stack(stack)

    # The URL serves the alias, so the grant is on the alias.
    function_arn = {"Ref": next(iter(template.find_resources("AWS::Lambda::Alias")))}
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": stack.get_logical_id(caller.node.default_child)}],
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": "lambda:InvokeFunctionUrl",
                        "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}},
                        "Effect": "Allow",
                        "Resource": function_arn,
                    },
                    {
                        "Action": "lambda:InvokeFunction",
                        "Condition": {"Bool": {"lambda:InvokedViaFunctionUrl": True}},
                        "Effect": "Allow",
                        "Resource": function_arn,
                    },
                ]
            },
        },
    )


@pytest.mark.slow
def test_arm64_function_gets_an_arm64_image(new_stack, wine_arm):
    stack = new_stack()
    model = ModelFunction(stack, "Model", architecture=lambda_.Architecture.ARM_64)
    template = assertions.Template.from_stack(stack)

    assert only(template, "AWS::Lambda::Function")["Properties"]["Architectures"] == ["arm64"]
    _, source = image_asset(stack)
    assert source["platform"] == "linux/arm64"
    assert Path(source["directory"]) == wine_arm.path == model.build_context.path
    assert json.loads((wine_arm.path / "build-info.json").read_text())["platform"] == "linux/arm64"


@pytest.mark.slow
def test_repeated_synths_reuse_the_render_and_keep_the_image_hash(new_app, wine_x86):
    image_uris, contexts = [], []
    # The first synth renders again only if the framework's or plugin's files changed since the
    # session's render; the ones after it must reuse whatever it left.
    for _ in range(3):
        stack = cdk.Stack(new_app(), "Test")
        model = ModelFunction(stack, "Model")
        function = only(assertions.Template.from_stack(stack), "AWS::Lambda::Function")
        image_uris.append(function["Properties"]["Code"]["ImageUri"])
        contexts.append(model.build_context)
    assert image_uris[1] == image_uris[2]
    assert contexts[1].reused and contexts[2].reused
    assert all(c.path == wine_x86.path for c in contexts)


# ---------------------------------------------------------------------------------------------
# The memory size `lambda-ml-serve tune` recommends


def tune_report(path: Path, *, recommended: int | None = 512, model: str = "wine_quality") -> Path:
    """A tune report as `lambda-ml-serve tune` writes it, from measured figures given as data."""
    from lambda_ml_serve.tune.measure import SizeResult
    from lambda_ml_serve.tune.report import Settings, build_report, write_json

    sizes = (128, 512) if recommended is None else (recommended,)
    results = [
        SizeResult(128, "x86_64", status="oom", detail="killed for exceeding 128 MB"),
        *(SizeResult(m, "x86_64", cold_ms=[300.0], warm_ms={1: [2.0, 2.5]}) for m in sizes if m != 128),
    ]
    if recommended is None:
        results = results[:1]
    report = build_report(
        model=model,
        backend="xgboost",
        label=f"{model} (xgboost)",
        target={"kind": "process", "image": None, "context": None},
        settings=Settings(sizes, ("x86_64",), (1,), 2, 1, 0.01),
        results=results,
        limiter="cgroup v1",
        host_info={"cpu": "Test CPU", "cpus": 2, "arch": "x86_64", "kernel": "6", "python": "3.11"},
    )
    return write_json(report, path)


@pytest.mark.slow
def test_the_function_gets_the_tuned_memory_size(new_stack, wine_x86, tmp_path):
    report = tune_report(tmp_path / "tune.json", recommended=640)
    stack = new_stack()
    ModelFunction(stack, "Model", memory_size=ModelFunction.tuned(report, model="wine_quality", backend="xgboost"))
    function = only(assertions.Template.from_stack(stack), "AWS::Lambda::Function")["Properties"]
    assert function["MemorySize"] == 640


@pytest.mark.slow
def test_example_app_deploys_the_tuned_size(new_app, wine_x86, tmp_path):
    report = tune_report(tmp_path / "tune.json", recommended=896)
    stack = load_example_app().build(new_app(tune=str(report)))
    function = only(assertions.Template.from_stack(stack), "AWS::Lambda::Function")["Properties"]
    assert function["MemorySize"] == 896
    other = tune_report(tmp_path / "compiled.json", recommended=896)
    other.write_text(other.read_text().replace('"backend": "xgboost"', '"backend": "compiled"'))
    with pytest.raises(ModelFunctionError, match=r"tuned backend 'compiled', not 'xgboost'"):
        load_example_app().build(new_app(tune=str(other)))


def test_tuned_reads_the_recommendation(tmp_path):
    assert ModelFunction.tuned(tune_report(tmp_path / "tune.json", recommended=1024)) == 1024
    assert ModelFunction.tuned(str(tune_report(tmp_path / "t.json", recommended=512)), model="wine_quality") == 512


@pytest.mark.parametrize(
    ("write", "check", "message"),
    [
        (None, {}, r"prop 'memory_size': tune report .*missing.json does not exist; run `lambda-ml-serve tune"),
        ("not json", {}, r"cannot read tune report .* \(not JSON\)"),
        ('{"kind": "something else"}', {}, r"is not a lambda-ml-serve tune report"),
        (
            '{"kind": "lambda-ml-serve-tune", "schema_version": 9}',
            {},
            r"tune schema version 9, this construct reads version 1",
        ),
        ("REPORT", {"model": "iris"}, r"tuned model 'wine_quality', not 'iris'"),
        ("REPORT", {"backend": "compiled"}, r"tuned backend 'xgboost', not 'compiled'"),
        ("NONE", {}, r"recommends no size \(none fitted, or none met the p99 target\); give memory_size"),
    ],
)
def test_tuned_refuses_what_is_not_a_recommendation(tmp_path, write, check, message):
    path = tmp_path / ("missing.json" if write is None else "tune.json")
    if write == "REPORT":
        tune_report(path)
    elif write == "NONE":
        tune_report(path, recommended=None)
    elif write is not None:
        path.write_text(write)
    with pytest.raises(ModelFunctionError, match=message):
        ModelFunction.tuned(path, **check)


# ---------------------------------------------------------------------------------------------
# Props that cannot work fail at synth, before anything is rendered


BAD_PROPS = [
    ({"model": "no_such_model"}, r"prop 'model'.*no_such_model.*installed models: .*wine_quality"),
    ({"memory_size": 64}, r"prop 'memory_size'.*128 to 10240.*got 64"),
    ({"memory_size": 10_241}, r"prop 'memory_size'.*got 10241"),
    ({"timeout": "minutes:16"}, r"prop 'timeout'.*1 to 900.*got 960 s"),
    ({"timeout": "millis:1500"}, r"prop 'timeout' must be a whole number of seconds.*got 1.5 s"),
    ({"architecture": "arm64"}, r"prop 'architecture' must be Architecture.X86_64 or Architecture.ARM_64"),
    ({"provisioned_concurrency": 0}, r"prop 'provisioned_concurrency' must be a whole number >= 1"),
    (
        {"provisioned_concurrency": 3, "reserved_concurrent_executions": 2},
        r"'reserved_concurrent_executions' \(2\) must be >= 'provisioned_concurrency' \(3\)",
    ),
    ({"reserved_concurrent_executions": -1}, r"prop 'reserved_concurrent_executions' must be a whole number >= 0"),
    ({"environment": {"LAMBDA_ML_SERVE_MODEL": "x"}}, r"may not set LAMBDA_ML_SERVE_MODEL: it is set from .*'model'"),
    ({"environment": {"LAMBDA_ML_SERVE_MAX_ROWS": "9"}}, r"may not set LAMBDA_ML_SERVE_MAX_ROWS.*'max_rows'"),
    ({"environment": {"LAMBDA_ML_SERVE_ARTIFACT": "/tmp/m"}}, r"may not set LAMBDA_ML_SERVE_ARTIFACT: the image"),
    ({"environment": {"AWS_REGION": "eu-west-1"}}, r"may not set AWS_REGION: Lambda reserves it"),
    ({"max_rows": 0}, r"prop 'max_rows' must be a whole number >= 1"),
    ({"python_version": "3.9"}, r"prop 'python_version'.*3\.12.*got '3.9'"),
    ({"artifact": "/no/such/model.json"}, r"prop 'artifact': /no/such/model.json is not a file"),
]


@pytest.mark.parametrize(("props", "message"), BAD_PROPS, ids=[str(p) for p, _ in BAD_PROPS])
def test_bad_props_fail_at_synth_naming_the_prop(props, message, tmp_path):
    if isinstance(props.get("timeout"), str):  # Durations are built here: ids must not hold jsii objects
        unit, amount = props["timeout"].split(":")
        props = {**props, "timeout": getattr(cdk.Duration, unit)(int(amount))}
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Test")
    with pytest.raises(ModelFunctionError, match=message) as raised:
        ModelFunction(stack, "Model", context_dir=tmp_path / "context", **props)
    assert isinstance(raised.value, ValueError)
    assert not (tmp_path / "context").exists()  # failed before the (slow) render


@pytest.mark.slow
def test_architecture_without_wheels_is_named_in_the_error(tmp_path, monkeypatch):
    # What pip answers for a package without wheels for the platform; everything around pip
    # (the framework's render and its error, the construct's wrapping) runs for real.
    def pip_install(target, requirements, **options):
        raise VendorError(
            "pip install failed:\nERROR: Could not find a version that satisfies the requirement "
            "xgboost-cpu>=2.0 (from versions: none)\nERROR: No matching distribution found for xgboost-cpu>=2.0"
        )

    monkeypatch.setattr("lambda_ml_serve.bundling.serving.install_target", pip_install)
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Test")
    context_dir = tmp_path / "context"
    with pytest.raises(ModelFunctionError) as raised:
        ModelFunction(stack, "Model", architecture=lambda_.Architecture.ARM_64, context_dir=context_dir)
    message = str(raised.value)
    assert message.startswith("prop 'architecture': the packages of model 'wine_quality' cannot be installed")
    assert "linux/arm64" in message
    assert "use Architecture.X86_64" in message
    assert "No matching distribution found for xgboost-cpu>=2.0" in message
    assert not context_dir.exists()
    assert not rendering.stamp_path(context_dir).exists()


@pytest.mark.slow
def test_context_dir_holding_other_files_is_never_wiped(tmp_path):
    context_dir = tmp_path / "mine"
    context_dir.mkdir()
    (context_dir / "notes.txt").write_text("keep me", encoding="utf-8")
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Test")
    with pytest.raises(ModelFunctionError, match=r"could not render its build context into .*mine: .*not empty"):
        ModelFunction(stack, "Model", context_dir=context_dir)
    assert [p.name for p in context_dir.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------------------------------------
# When a rendered context is reused and when it is rendered again


class CountingRender:
    """Stands in for the framework's render (pip takes seconds) to count when it is called."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.fail = False

    def __call__(
        self, model, output, *, arch, python, base_image, force, registry, artifact=None, backend=None
    ) -> BuildContext:
        self.calls.append(
            {"output": output, "base_image": base_image, "force": force, "artifact": artifact, "backend": backend}
        )
        if self.fail:
            raise VendorError("pip install failed:\nERROR: network unreachable")
        output.mkdir(parents=True, exist_ok=True)
        (output / "Dockerfile").write_text(f"FROM {base_image or 'base'}\n", encoding="utf-8")
        return BuildContext(
            path=output,
            dockerfile=output / "Dockerfile",
            model=model,
            version="1.0.0",
            plugin=model,
            arch=arch,
            backend=backend or "xgboost",
            platform=PLATFORMS[arch],
            python=python,
            base_image=base_image or "base",
            default_tag=f"lambda-ml-serve/{model}:1.0.0",
            artifact=output / "artifacts" / "model.ubj",
            requirements=(),
        )


@pytest.fixture
def counting_render(monkeypatch) -> CountingRender:
    render = CountingRender()
    monkeypatch.setattr(rendering, "render_build_context", render)
    return render


def test_render_is_reused_until_its_inputs_change(tmp_path, counting_render):
    context_dir = tmp_path / "wine_quality-x86_64"
    first = lms_cdk.ensure_build_context("wine_quality", context_dir)
    again = lms_cdk.ensure_build_context("wine_quality", context_dir)
    assert (first.reused, again.reused) == (False, True)
    assert again.dockerfile == first.dockerfile == context_dir / "Dockerfile"
    assert again.platform == "linux/amd64"
    assert len(counting_render.calls) == 1
    # The stamp lives beside the context, so it never becomes part of the image.
    stamp = json.loads(rendering.stamp_path(context_dir).read_text())
    assert stamp["inputs"]["arch"] == "x86_64"
    assert rendering.stamp_path(context_dir).parent == context_dir.parent

    assert not lms_cdk.ensure_build_context("wine_quality", context_dir, base_image="example.org/py:3.12").reused
    assert not lms_cdk.ensure_build_context("wine_quality", context_dir, force=True).reused
    assert len(counting_render.calls) == 3
    assert all(call["force"] is False for call in counting_render.calls)  # never wipes a foreign folder

    (context_dir / "Dockerfile").unlink()  # emptied by hand: the stamp alone does not count
    assert not lms_cdk.ensure_build_context("wine_quality", context_dir).reused
    assert len(counting_render.calls) == 4


def test_an_artifact_goes_to_the_render_and_a_changed_one_renders_again(tmp_path, counting_render):
    context_dir = tmp_path / "wine_quality-x86_64"
    artifact = tmp_path / "retrained.json"
    artifact.write_bytes(LEGACY_MODELS["1.6.2"].read_bytes())
    assert not lms_cdk.ensure_build_context("wine_quality", context_dir, artifact=artifact).reused
    assert counting_render.calls[-1]["artifact"] == artifact
    assert lms_cdk.ensure_build_context("wine_quality", context_dir, artifact=artifact).reused
    artifact.write_bytes(LEGACY_MODELS["1.5.2"].read_bytes())  # the same path, another model
    assert not lms_cdk.ensure_build_context("wine_quality", context_dir, artifact=artifact).reused
    assert not lms_cdk.ensure_build_context("wine_quality", context_dir).reused  # the plugin's own again


def test_failed_render_leaves_nothing_marked_up_to_date(tmp_path, counting_render):
    context_dir = tmp_path / "wine_quality-x86_64"
    lms_cdk.ensure_build_context("wine_quality", context_dir)
    counting_render.fail = True
    with pytest.raises(VendorError):
        lms_cdk.ensure_build_context("wine_quality", context_dir, force=True)
    assert not rendering.stamp_path(context_dir).exists()
    counting_render.fail = False
    assert not lms_cdk.ensure_build_context("wine_quality", context_dir).reused


def test_render_inputs_cover_what_the_image_is_built_from():
    from lambda_ml_serve.plugins import get_registry

    registry = get_registry()
    model = registry.model("wine_quality")
    inputs = rendering.render_inputs(model, registry, arch="arm64", python="3.12", base_image=None)
    assert inputs["model_version"] == model.spec.version
    assert any(r.startswith("xgboost") for r in inputs["requirements"])
    assert len(inputs["framework_files"]) == len(inputs["plugin_files"]) == 64  # sha256 hex digests
    other = rendering.render_inputs(model, registry, arch="x86_64", python="3.12", base_image=None)
    assert rendering.fingerprint(inputs) != rendering.fingerprint(other)


def test_default_context_dir_is_beside_cdk_out_or_under_the_context_root(tmp_path):
    app = cdk.App(outdir=str(tmp_path / "cdk.out"))
    assert lms_cdk.default_context_dir(app, "wine_quality", "arm64", "xgboost") == (
        tmp_path / ".lambda-ml-serve" / "wine_quality-xgboost-arm64"
    )
    rooted = cdk.App(outdir=str(tmp_path / "cdk.out"), context={lms_cdk.CONTEXT_ROOT_KEY: str(tmp_path / "r")})
    assert lms_cdk.default_context_dir(rooted, "wine_quality", "x86_64", "compiled") == (
        tmp_path / "r" / "wine_quality-compiled-x86_64"
    )


# ---------------------------------------------------------------------------------------------
# The example app


@pytest.mark.slow
def test_example_app_role_url_and_outputs(new_app, wine_x86):
    app = new_app()
    stack = load_example_app().build(app)
    template = assertions.Template.from_stack(stack)

    assert only(template, "AWS::Lambda::Url")["Properties"]["AuthType"] == "AWS_IAM"
    assert only(template, "AWS::Lambda::Function")["Properties"]["PackageType"] == "Image"
    role_id = stack.get_logical_id(stack.invoker_role.node.default_child)
    url_id = stack.get_logical_id(stack.model.function_url.node.default_child)
    template.has_output("FunctionUrl", {"Value": {"Fn::GetAtt": [url_id, "FunctionUrl"]}})
    template.has_output("InvokerRoleArn", {"Value": {"Fn::GetAtt": [role_id, "Arn"]}})
    # Assumable by the account's own principals (who still need sts:AssumeRole on it), for an hour.
    role = template.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRole"
    assert json.dumps(trust["Principal"]).endswith(':root"]]}}')
    assert role["MaxSessionDuration"] == 3600
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": role_id}],
            "PolicyDocument": {
                "Statement": assertions.Match.array_with(
                    [assertions.Match.object_like({"Action": "lambda:InvokeFunctionUrl"})]
                )
            },
        },
    )


@pytest.mark.slow
def test_example_app_passes_cdk_nag_aws_solutions_and_serverless(new_app, tmp_path, wine_x86):
    app = new_app()
    load_example_app().build(app)
    app.synth()  # raises when a cdk-nag rule reports a finding that nobody acknowledged
    report = json.loads((tmp_path / "cdk.out" / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


@pytest.mark.slow
def test_cdk_nag_gate_catches_a_finding(new_app, tmp_path, wine_x86):
    # The negative control for the test above: the checks run, and a finding fails the synth.
    app = new_app()
    stack = load_example_app().build(app)
    stack.invoker_role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name("AdministratorAccess"))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "cdk.out" / "validation-report.json").read_text())
    reports = {r["pluginName"]: r for r in report["pluginReports"]}
    assert reports["Serverless"]["conclusion"] == "success"
    nag = reports["AwsSolutions"]
    assert [v["ruleName"] for v in nag["violations"]] == [
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AdministratorAccess]"
    ]


@pytest.mark.slow
def test_example_app_synthesises_with_the_cdk_cli(tmp_path, context_root, wine_x86):
    if not CDK_CLI.exists():
        message = f"{CDK_CLI} is missing: run `npm ci --prefix cdk_construct`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "cdk.out"
    env = {
        **os.environ,
        "CDK_DISABLE_VERSION_CHECK": "1",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        # A made-up account and region, and no AWS configuration or credentials at all.
        "CDK_DEFAULT_ACCOUNT": "123456789012",
        "CDK_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        # cdk.json runs `python3 app.py`: make that this interpreter, with its packages.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    command = [
        str(CDK_CLI),
        "synth",
        "--no-notices",
        "--no-version-reporting",
        "--quiet",
        "--output",
        str(out),
        "--context",
        f"{lms_cdk.CONTEXT_ROOT_KEY}={context_root}",
    ]
    result = subprocess.run(command, cwd=CDK_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"cdk synth failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    template = json.loads((out / f"{EXAMPLE_STACK}.template.json").read_text())
    assert cfn_lint(template) == []
    resources = template["Resources"].values()
    (function,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::Function"]
    assert function["PackageType"] == "Image"
    assert "123456789012.dkr.ecr.eu-west-1." in json.dumps(function["Code"]["ImageUri"])
    (url,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::Url"]
    assert url["AuthType"] == "AWS_IAM"
    assert set(template["Outputs"]) == {"FunctionUrl", "InvokerRoleArn"}
    # The image asset is staged into cdk.out as the Dockerfile and what .dockerignore lets through.
    (asset,) = json.loads((out / f"{EXAMPLE_STACK}.assets.json").read_text())["dockerImages"].values()
    assert asset["source"]["platform"] == "linux/amd64"
    staged = out / asset["source"]["directory"]
    assert {p.name for p in staged.iterdir()} >= {"Dockerfile", "site-packages", "artifacts"}
    assert not (staged / "build-info.json").exists()
    report = json.loads((out / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


# ---------------------------------------------------------------------------------------------
# BatchScoring: a Distributed Map over an S3 object, invoking the model function directly

sfn_tasks = _require("aws_cdk.aws_stepfunctions_tasks")


def batch_definition(template) -> dict:
    machine = only(template, "AWS::StepFunctions::StateMachine")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]

    # The definition is JSON text joined with tokens (ARNs, names) inside its strings: mark each token.
    def text(part) -> str:
        if isinstance(part, str):
            return part
        return "aws" if part == {"Ref": "AWS::Partition"} else "<token>"

    return json.loads("".join(text(p) for p in parts))


@pytest.mark.slow
def test_batch_scoring_distributed_map(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model", max_rows=5000)
    scoring = lms_cdk.BatchScoring(
        stack, "Scoring", model_function=model, id_column="wine_id", max_concurrency=50, tolerated_failure_percentage=5
    )
    starter = iam.Role(stack, "Starter", assumed_by=iam.AccountRootPrincipal())
    scoring.grant_start(starter)
    template = assertions.Template.from_stack(stack)
    definition = batch_definition(template)
    (state,) = definition["States"].values()
    assert state["Type"] == "Map"
    assert state["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert state["ItemReader"]["ReaderConfig"] == {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    assert state["ItemReader"]["Parameters"]["Key.$"] == "$.key"
    assert state["ItemBatcher"] == {
        "MaxItemsPerBatch": 5000,
        "MaxInputBytesPerBatch": 262144,
        "BatchInput": {"id_column": "wine_id"},
    }
    assert state["MaxConcurrency"] == 50 and state["ToleratedFailurePercentage"] == 5
    assert state["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert state["ResultWriter"]["Parameters"]["Prefix"] == "results"
    processor = state["ItemProcessor"]
    assert processor["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"}
    (task,) = processor["States"].values()
    assert task["Type"] == "Task" and task["Resource"] == "<token>"  # the function's ARN: a direct invoke
    (retry,) = task["Retry"]
    assert "Lambda.TooManyRequestsException" in retry["ErrorEquals"]
    assert retry["JitterStrategy"] == "FULL" and retry["MaxAttempts"] == 8

    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 3  # input, output and their access logs
    for bucket in buckets.values():
        encryption = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert encryption[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        assert bucket["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    machine = only(template, "AWS::StepFunctions::StateMachine")["Properties"]
    assert machine["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert machine["TracingConfiguration"] == {"Enabled": True}

    # Least privilege: the machine may invoke this function only, and read/write only its buckets.
    policies = template.find_resources("AWS::IAM::Policy")
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    invoke = [s for s in statements if s["Action"] == "lambda:InvokeFunction" or "lambda:InvokeFunction" in s["Action"]]
    assert invoke and all(
        r != "*" for s in invoke for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    )
    assert not any(s["Resource"] == "*" for s in statements if s["Effect"] == "Allow" and "s3:" in str(s["Action"]))

    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": assertions.Match.string_like_regexp("Starter")}],
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": "states:StartExecution",
                        "Effect": "Allow",
                        "Resource": {"Ref": assertions.Match.any_value()},
                    }
                ]
            },
        },
    )


@pytest.mark.slow
def test_batch_scoring_passes_cdk_nag(new_app, tmp_path, wine_x86):
    nag = _require("cdk_nag")
    app = new_app()
    stack = cdk.Stack(app, "Scoring")
    model = ModelFunction(stack, "Model")
    cdk.Validations.of(model.function).acknowledge(
        cdk.Acknowledgment(
            id="Serverless::Serverless-LambdaDLQ",
            reason="Invoked synchronously by the state machine, which retries and counts failed batches.",
        ),
        cdk.Acknowledgment(
            id="Serverless::Serverless-LambdaTracing", reason="The state machine traces the runs with X-Ray."
        ),
    )
    lms_cdk.BatchScoring(stack, "Scoring", model_function=model, input_format="jsonl")
    cdk.Validations.of(app).add_plugins(
        nag.AwsSolutionsChecks(app, verbose=True), nag.ServerlessChecks(app, verbose=True)
    )
    app.synth()
    report = json.loads((tmp_path / "cdk.out" / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"input_format": "parquet"}, "prop 'input_format' must be one of csv, jsonl"),
        ({"max_items_per_batch": 20_000}, "prop 'max_items_per_batch' must be 1 to 10000"),
        ({"max_concurrency": 0}, "prop 'max_concurrency' must be 1 to 10000"),
        ({"tolerated_failure_percentage": 101}, "prop 'tolerated_failure_percentage' must be 0 to 100"),
    ],
)
def test_batch_scoring_bad_props_are_named(new_stack, wine_x86, props, message):
    stack = new_stack()
    model = ModelFunction(stack, "Model")
    with pytest.raises(ModelFunctionError, match=message):
        lms_cdk.BatchScoring(stack, "Scoring", model_function=model, **props)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=20,
    ),
    st.sampled_from(["report", "recommended", "memory"]),
)
@example(value="\n", where="memory")  # a size written as a line break: the error stays one line
@example(value=10**400, where="memory")
@settings(max_examples=200, deadline=None)
def test_tuned_reads_any_json_to_a_size_or_one_error(value, where):
    import tempfile

    from lambda_ml_serve_cdk.tuning import tuned_memory_size

    # Hostile values at every level: the whole file, the recommendation, its memory size.
    report = {"kind": "lambda-ml-serve-tune", "schema_version": 1, "model": "m", "backend": "b"}
    document = {
        "report": value,
        "recommended": {**report, "recommended": value},
        "memory": {**report, "recommended": {"memory_mb": value}},
    }[where]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tune.json"
        path.write_text(json.dumps(document))
        try:
            size = tuned_memory_size(path)
        except ModelFunctionError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 500
            return
    assert isinstance(size, int) and not isinstance(size, bool) and 128 <= size <= 10_240
