"""The model's metrics (its own EMF records, Lambda's, and two log metric filters) and its dashboard.

The function writes one EMF record per request (namespace ``LambdaMLServe``; dimensions ``model``,
``model`` + ``version`` and ``function``): ``latency_ms`` and ``rows``. The alarms and widgets read
the ``function`` ones, so two stacks serving the same model keep their metrics apart. The answer's
status is a field of the same record, so 4xx and 5xx counts are metric filters on the function's log
group (published per function too) rather than more metrics in every record.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from lambda_ml_serve.runtime.telemetry import NAMESPACE

PERIOD = Duration.minutes(1)


class ModelMetrics:
    """The metrics of one model function, for alarms and dashboard widgets."""

    def __init__(
        self, scope: Construct, *, model: str, function_name: str, log_group: logs.ILogGroup, alias: lambda_.Alias
    ) -> None:
        self.model = model
        self.alias = alias
        self.log_group = log_group
        #: The function's own metrics: the records name it (Lambda's AWS_LAMBDA_FUNCTION_NAME).
        self.dimensions = {"function": function_name}
        # Counted from the request records' status: the records' "status" is the answer's HTTP status.
        for name, pattern in {
            "client_errors": "{ $.status >= 400 && $.status < 500 && $.function = * }",
            "server_errors": "{ $.status >= 500 && $.function = * }",
        }.items():
            logs.MetricFilter(
                scope,
                f"{''.join(part.title() for part in name.split('_'))}Filter",
                log_group=log_group,
                filter_pattern=logs.FilterPattern.literal(pattern),
                metric_namespace=NAMESPACE,
                metric_name=name,
                metric_value="1",
                dimensions={"function": "$.function"},
                unit=cloudwatch.Unit.COUNT,
            )

    def _own(self, name: str, statistic: str, label: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map=self.dimensions,
            statistic=statistic,
            period=PERIOD,
            label=label,
        )

    def requests(self) -> cloudwatch.Metric:
        """Requests answered (one EMF record each, whatever the status)."""
        return self._own("latency_ms", "SampleCount", "requests")

    def rows(self) -> cloudwatch.Metric:
        return self._own("rows", "Sum", "rows")

    def latency(self, statistic: str = "p99") -> cloudwatch.Metric:
        return self._own("latency_ms", statistic, f"latency {statistic} (ms)")

    def client_errors(self) -> cloudwatch.Metric:
        return self._own("client_errors", "Sum", "4xx")

    def server_errors(self) -> cloudwatch.Metric:
        return self._own("server_errors", "Sum", "5xx")


#: Logs Insights reads the init duration from the REPORT line Lambda writes after a cold start.
INIT_QUERY = [
    'filter @type = "REPORT" and ispresent(@initDuration)',
    "stats count() as cold_starts, avg(@initDuration) as avg_init_ms, max(@initDuration) as max_init_ms by bin(5m)",
]


def model_dashboard(
    scope: Construct, metrics: ModelMetrics, alarms: Mapping[str, cloudwatch.IAlarm]
) -> cloudwatch.Dashboard:
    """One dashboard per model: traffic, latency, errors, cold starts, capacity and the alarms."""
    alias = metrics.alias
    width = 8
    dashboard = cloudwatch.Dashboard(scope, "Dashboard", default_interval=Duration.hours(3))
    dashboard.add_widgets(
        cloudwatch.TextWidget(
            markdown=f"# lambda-ml-serve: {metrics.model}\nTraffic of the alias `{alias.alias_name}`; "
            "request figures from the function's own EMF records.",
            width=24,
            height=2,
        )
    )
    dashboard.add_widgets(
        cloudwatch.GraphWidget(title="Requests", left=[metrics.requests()], width=width),
        cloudwatch.GraphWidget(title="Rows", left=[metrics.rows()], width=width),
        cloudwatch.GraphWidget(
            title="Latency (ms)", left=[metrics.latency("p50"), metrics.latency("p99")], width=width
        ),
    )
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="4xx / 5xx answers", left=[metrics.client_errors(), metrics.server_errors()], width=width
        ),
        cloudwatch.LogQueryWidget(
            title="Cold starts: init duration (ms)",
            log_group_names=[metrics.log_group.log_group_name],
            query_lines=INIT_QUERY,
            view=cloudwatch.LogQueryVisualizationType.LINE,
            width=width,
        ),
        cloudwatch.GraphWidget(
            title="Errors and throttles (alias)",
            left=[
                alias.metric_errors(period=PERIOD, statistic="Sum", label="errors"),
                alias.metric_throttles(period=PERIOD, statistic="Sum", label="throttles"),
            ],
            width=width,
        ),
    )
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="Concurrent executions",
            left=[alias.metric("ConcurrentExecutions", period=PERIOD, statistic="Maximum", label="concurrency")],
            width=width,
        ),
        cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms.values()), width=16),
    )
    return dashboard
