"""ModelFunction's rollout, alarms and dashboard, synthesised offline (no AWS account, no Docker).

Uses test_cdk's fixtures: the build context is rendered once per session and reused by every synth.
"""

from __future__ import annotations

import json

import pytest
import test_cdk
from test_cdk import ModelFunction, ModelFunctionError, assertions, cdk, load_example_app, only

# test_cdk's fixtures, found by pytest under these names: the session's rendered build context.
context_root = test_cdk.context_root
wine_x86 = test_cdk.wine_x86
new_app = test_cdk.new_app
new_stack = test_cdk.new_stack

cloudwatch = pytest.importorskip("aws_cdk.aws_cloudwatch")
rollout = pytest.importorskip("lambda_ml_serve_cdk.rollout")
pretraffic = pytest.importorskip("lambda_ml_serve_cdk.pretraffic")


def joined(value) -> str:
    """A ``Fn::Join`` of strings and tokens as text, each token shown as ``<token>``."""
    if isinstance(value, str):
        return value
    delimiter, parts = value["Fn::Join"]
    return delimiter.join(p if isinstance(p, str) else "<token>" for p in parts)


def metric_of(alarm: dict) -> tuple:
    """(namespace, metric, statistic, dimensions) of an alarm in either of its CloudFormation forms."""
    if "Metrics" in alarm:
        (stat,) = [m["MetricStat"] for m in alarm["Metrics"]]
        metric = stat["Metric"]
        return metric["Namespace"], metric["MetricName"], stat["Stat"], metric.get("Dimensions", [])
    statistic = alarm.get("ExtendedStatistic") or alarm.get("Statistic")
    return alarm["Namespace"], alarm["MetricName"], statistic, alarm.get("Dimensions", [])


def logical_id(stack, construct) -> str:
    return stack.get_logical_id(construct.node.default_child)


@pytest.mark.slow
def test_canary_deployment_checks_then_shifts_and_rolls_back_on_alarms(new_stack, wine_x86):
    stack = new_stack()
    extra = cloudwatch.Alarm(
        stack,
        "Business",
        metric=cloudwatch.Metric(namespace="Shop", metric_name="Refunds"),
        threshold=10,
        evaluation_periods=1,
    )
    model = ModelFunction(stack, "Model", deployment="canary10_percent_5_minutes", alarms=[extra])
    template = assertions.Template.from_stack(stack)

    alias = only(template, "AWS::Lambda::Alias")
    assert alias["Properties"]["Name"] == "live"
    assert only(template, "AWS::Lambda::Url")["Properties"]["Qualifier"] == "live"
    version_id = next(iter(template.find_resources("AWS::Lambda::Version")))
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}

    group_id, group = next(iter(template.find_resources("AWS::CodeDeploy::DeploymentGroup").items()))
    props = group["Properties"]
    assert props["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent5Minutes"
    assert props["AutoRollbackConfiguration"] == {
        "Enabled": True,
        "Events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST", "DEPLOYMENT_STOP_ON_ALARM"],
    }
    alarm_refs = [a["Name"] for a in props["AlarmConfiguration"]["Alarms"]]
    own = [
        {"Ref": logical_id(stack, model.alarms[name])}
        for name in ("errors", "throttles", "server_errors", "latency_p99")
    ]
    assert alarm_refs == [*own, {"Ref": logical_id(stack, extra)}]
    assert props["AlarmConfiguration"]["Enabled"] is True

    # CloudFormation hands the alias update to CodeDeploy, with the check as BeforeAllowTraffic.
    hook_id = logical_id(stack, model.pre_traffic_check)
    update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert update["DeploymentGroupName"] == {"Ref": group_id}
    assert update["BeforeAllowTrafficHook"] == {"Ref": hook_id}
    assert "AfterAllowTrafficHook" not in update

    hook = template.find_resources("AWS::Lambda::Function")[hook_id]["Properties"]
    assert hook["Handler"] == "pretraffic.handler"
    assert hook["Runtime"].startswith("python3.")
    assert hook["Environment"]["Variables"][pretraffic.TARGET_ENV] == {"Ref": version_id}
    assert hook["Environment"]["Variables"][pretraffic.MAX_LATENCY_ENV] == "2000"
    # The hook may invoke the new version and report to its deployment group, nothing more.
    hook_role = {"Ref": logical_id(stack, model.pre_traffic_check.role)}
    statements = [
        s
        for p in template.find_resources("AWS::IAM::Policy").values()
        if hook_role in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_action = {json.dumps(s["Action"]): s["Resource"] for s in statements}
    assert by_action[json.dumps("lambda:InvokeFunction")] == {"Ref": version_id}
    assert "codedeploy:PutLifecycleEventHookExecutionStatus" in json.dumps(by_action)

    # The hook's asset: its one module and the answers build recorded.
    folder = model.build_context.path.with_name(model.build_context.path.name + ".pretraffic")
    assert sorted(p.name for p in folder.iterdir()) == ["expected.json", "pretraffic.py"]
    expected = json.loads((folder / "expected.json").read_text())
    info = model.build_context.build_info
    assert expected["predictions"] == info["example"]["predictions"]
    assert expected["rows"] == info["example"]["rows"]
    assert expected["model_sha256"] == info["artifact"]["source_sha256"]
    assert (expected["model"], expected["version"]) == ("wine_quality", info["version"])


@pytest.mark.slow
def test_rollout_alarms_watch_the_alias_and_the_models_own_metrics(new_stack, wine_x86):
    stack = new_stack()
    thresholds = rollout.AlarmThresholds(
        errors=2, throttles=10, server_errors=3, latency_p99_ms=250, evaluation_periods=3
    )
    model = ModelFunction(stack, "Model", deployment="linear10_percent_every_1_minute", alarm_thresholds=thresholds)
    template = assertions.Template.from_stack(stack)
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    by_name = {name: alarms[logical_id(stack, alarm)]["Properties"] for name, alarm in model.alarms.items()}

    latency = by_name["latency_p99"]
    # The function's own records (dimension "function", its name), not every stack's serving the model.
    function_name = {"Ref": logical_id(stack, model.function)}
    assert metric_of(latency) == ("LambdaMLServe", "latency_ms", "p99", [{"Name": "function", "Value": function_name}])
    assert latency["Threshold"] == 250 and latency["EvaluationPeriods"] == 3
    assert latency["Metrics"][0]["MetricStat"]["Period"] == 60
    errors = by_name["errors"]
    namespace, name, statistic, dimensions = metric_of(errors)
    assert (namespace, name, statistic, errors["Threshold"]) == ("AWS/Lambda", "Errors", "Sum", 2)
    # The alias' own metrics: the Resource dimension is function:alias.
    assert "Resource" in {d["Name"] for d in dimensions}
    assert metric_of(by_name["throttles"])[1] == "Throttles" and by_name["throttles"]["Threshold"] == 10
    server = by_name["server_errors"]
    assert metric_of(server)[:3] == ("LambdaMLServe", "server_errors", "Sum") and server["Threshold"] == 3
    for alarm in by_name.values():
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"

    # The 5xx count comes from the request records' status, by a metric filter on the function's log group.
    filters = template.find_resources("AWS::Logs::MetricFilter")
    patterns = {
        f["Properties"]["MetricTransformations"][0]["MetricName"]: f["Properties"]["FilterPattern"]
        for f in filters.values()
    }
    assert patterns == {
        "server_errors": "{ $.status >= 500 && $.function = * }",
        "client_errors": "{ $.status >= 400 && $.status < 500 && $.function = * }",
    }
    for f in filters.values():
        assert f["Properties"]["MetricTransformations"][0]["Dimensions"] == [{"Key": "function", "Value": "$.function"}]
    group = only(template, "AWS::CodeDeploy::DeploymentGroup")["Properties"]
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaLinear10PercentEvery1Minute"


@pytest.mark.slow
def test_dashboard_shows_traffic_latency_errors_cold_starts_and_alarms(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model")
    model.dashboard.add_widgets(cloudwatch.TextWidget(markdown="added by the app", width=24))
    template = assertions.Template.from_stack(stack)
    body = json.loads(joined(only(template, "AWS::CloudWatch::Dashboard")["Properties"]["DashboardBody"]))
    titles = [w["properties"].get("title") for w in body["widgets"]]
    assert titles[1:] == [
        "Requests",
        "Rows",
        "Latency (ms)",
        "4xx / 5xx answers",
        "Cold starts: init duration (ms)",
        "Errors and throttles (alias)",
        "Concurrent executions",
        "Alarms",
        None,  # the app's own text widget
    ]
    widgets = {w["properties"].get("title"): w["properties"] for w in body["widgets"]}
    latency = json.dumps(widgets["Latency (ms)"]["metrics"])
    assert '"stat": "p50"' in latency and '"stat": "p99"' in latency and "latency_ms" in latency
    assert "@initDuration" in widgets["Cold starts: init duration (ms)"]["query"]
    assert len(widgets["Alarms"]["alarms"]) == len(model.alarms) == 4
    assert "added by the app" in json.dumps(body)
    # No deployment: no CodeDeploy, yet the alarms exist for the app to add actions to.
    template.resource_count_is("AWS::CodeDeploy::DeploymentGroup", 0)
    template.resource_count_is("AWS::CloudWatch::Alarm", 4)
    assert model.pre_traffic_check is None and model.deployment_group is None

    quiet = new_stack()
    assert ModelFunction(quiet, "Model", dashboard=False).dashboard is None
    assertions.Template.from_stack(quiet).resource_count_is("AWS::CloudWatch::Dashboard", 0)


@pytest.mark.slow
def test_capture_ships_capture_records_to_an_encrypted_bucket(new_stack, wine_x86):
    stack = new_stack()
    model = ModelFunction(stack, "Model", capture=0.05)
    template = assertions.Template.from_stack(stack)
    function_id = logical_id(stack, model.function)
    function = template.find_resources("AWS::Lambda::Function")[function_id]["Properties"]
    assert function["Environment"]["Variables"]["LAMBDA_ML_SERVE_CAPTURE"] == "0.05"

    subscription = only(template, "AWS::Logs::SubscriptionFilter")["Properties"]
    assert subscription["FilterPattern"] == '{ $.type = "capture" }'
    assert subscription["LogGroupName"] == {"Ref": logical_id(stack, model.log_group)}
    stream_id = logical_id(stack, model.capture.stream)
    assert subscription["DestinationArn"] == {"Fn::GetAtt": [stream_id, "Arn"]}

    stream = only(template, "AWS::KinesisFirehose::DeliveryStream")["Properties"]
    key_arn = {"Fn::GetAtt": [logical_id(stack, model.capture.key), "Arn"]}
    assert stream["DeliveryStreamEncryptionConfigurationInput"] == {
        "KeyARN": key_arn,
        "KeyType": "CUSTOMER_MANAGED_CMK",
    }
    destination = stream["ExtendedS3DestinationConfiguration"]
    bucket_id = logical_id(stack, model.capture.bucket)
    assert destination["BucketARN"] == {"Fn::GetAtt": [bucket_id, "Arn"]}
    assert destination["Prefix"] == (
        "capture/model=wine_quality/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/"
    )
    assert destination["ErrorOutputPrefix"].startswith("capture/errors/model=wine_quality/")
    assert destination["CompressionFormat"] == "GZIP"
    assert destination["EncryptionConfiguration"] == {"KMSEncryptionConfig": {"AWSKMSKeyARN": key_arn}}
    processors = [p["Type"] for p in destination["ProcessingConfiguration"]["Processors"]]
    assert processors == ["Decompression", "CloudWatchLogProcessing", "AppendDelimiterToRecord"]

    bucket = template.find_resources("AWS::S3::Bucket")[bucket_id]
    encryption = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    (rule,) = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 90 and rule["Prefix"] == "capture/" and rule["Status"] == "Enabled"
    assert bucket["Properties"]["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
    assert bucket["DeletionPolicy"] == "Retain"
    assert only(template, "AWS::KMS::Key")["Properties"]["EnableKeyRotation"] is True


@pytest.mark.slow
def test_example_app_with_a_canary_and_capture_passes_cdk_nag(new_app, tmp_path, wine_x86):
    app = new_app(deployment="canary10_percent_10_minutes", capture="0.05")
    stack = load_example_app().build(app)
    template = assertions.Template.from_stack(stack)
    group = only(template, "AWS::CodeDeploy::DeploymentGroup")["Properties"]
    assert group["DeploymentConfigName"] == "CodeDeployDefault.LambdaCanary10Percent10Minutes"
    template.resource_count_is("AWS::KinesisFirehose::DeliveryStream", 1)
    app.synth()  # both cdk-nag packs; cfn-lint runs on every template in new_app's teardown
    report = json.loads((tmp_path / "cdk.out" / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []


def test_every_codedeploy_lambda_configuration_by_name():
    names = {name: rollout.deployment_config(name).deployment_config_name for name in rollout.DEPLOYMENTS}
    assert names == {
        "all_at_once": "CodeDeployDefault.LambdaAllAtOnce",
        "canary10_percent_5_minutes": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
        "canary10_percent_10_minutes": "CodeDeployDefault.LambdaCanary10Percent10Minutes",
        "canary10_percent_15_minutes": "CodeDeployDefault.LambdaCanary10Percent15Minutes",
        "canary10_percent_30_minutes": "CodeDeployDefault.LambdaCanary10Percent30Minutes",
        "linear10_percent_every_1_minute": "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
        "linear10_percent_every_2_minutes": "CodeDeployDefault.LambdaLinear10PercentEvery2Minutes",
        "linear10_percent_every_3_minutes": "CodeDeployDefault.LambdaLinear10PercentEvery3Minutes",
        "linear10_percent_every_10_minutes": "CodeDeployDefault.LambdaLinear10PercentEvery10Minutes",
    }


BAD = [
    ({"deployment": "canary"}, r"prop 'deployment' must be one of all_at_once, canary10_percent_5_minutes"),
    ({"deployment": 5}, r"prop 'deployment' must be a configuration name .* got int"),
    ({"alarms": ["x"]}, r"prop 'alarms' needs prop 'deployment'"),
    ({"alarm_thresholds": "latency:0"}, r"prop 'alarm_thresholds': latency_p99_ms must be a number > 0; got 0"),
    ({"check_max_latency_ms": -1}, r"prop 'check_max_latency_ms' must be a number > 0; got -1"),
    ({"capture": 1.5}, r"prop 'capture' must be a share of requests above 0 and at most 1 .*got 1.5"),
    ({"capture": 0}, r"prop 'capture' must be a share of requests above 0"),
    (
        {"environment": {"LAMBDA_ML_SERVE_CAPTURE": "1"}},
        r"may not set LAMBDA_ML_SERVE_CAPTURE: it is set from .*'capture'",
    ),
]


@pytest.mark.parametrize(("props", "message"), BAD, ids=[str(p) for p, _ in BAD])
def test_bad_rollout_props_fail_at_synth(props, message, tmp_path):
    if props.get("alarm_thresholds") == "latency:0":
        props = {"alarm_thresholds": rollout.AlarmThresholds(latency_p99_ms=0)}
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Test")
    with pytest.raises(ModelFunctionError, match=message):
        ModelFunction(stack, "Model", context_dir=tmp_path / "context", **props)
    assert not (tmp_path / "context").exists()  # refused before the render


def test_pretraffic_compare_names_the_first_difference():
    assert pretraffic.compare([1.0, 2.0], [1.0, 2.0 + 1e-9]) is None
    assert pretraffic.compare([1.0, 2.0], [1.0, 2.5]) == "row 1 is 2.0, build recorded 2.5"
    assert pretraffic.compare([1.0], [1.0, 2.0]) == "answer has 1 items, build recorded 2"
    assert pretraffic.compare([1.0, 2.05], [1.0, 2.0], tolerance=0.1) is None
    assert pretraffic.compare([{"label": "red", "p": [0.2, 0.8]}], [{"label": "red", "p": [0.2, 0.7]}]) == (
        "row 0.p[1] is 0.8, build recorded 0.7"
    )
    assert pretraffic.compare(["red"], ["white"]) == "row 0 differs from what build recorded"
    assert pretraffic.compare([True], [1]) == "row 0 differs"  # a label true is not the number 1
    assert pretraffic.compare([True], [True]) is None
