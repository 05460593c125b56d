#!/usr/bin/env python3
"""Example CDK app: a model behind a Function URL that only signed requests from one role may call.

``cdk deploy`` (run in this folder) creates the function, its URL (auth type AWS_IAM), and an IAM
role that principals of the same account may assume to call it; the outputs are the URL and the
role's ARN, which is what ``lambda-ml-serve predict URL --data FILE --assume-role ARN`` needs.

Context values (``cdk deploy -c name=value``):
  model         the installed model to deploy (default ``wine_quality``)
  architecture  ``x86_64`` (default) or ``arm64`` (Graviton)
  backend       serve with another installed backend, e.g. ``compiled`` (default: the model's own)
  package       ``image`` (default) or ``zip`` (the managed pythonX.Y runtime)
  snap_start    ``true`` for SnapStart (needs ``package=zip`` and Python 3.12+)
  python        the Python version (default 3.12)
  tune          a ``lambda-ml-serve tune`` report (tune.json): deploy the memory size it recommends
                (it must have measured this model and backend; default: 1,769 MB)

cdk-nag's AWS Solutions and Serverless checks run on every synth; a finding that is not acknowledged
with a written reason (``Validations.of(construct).acknowledge(...)``) fails ``cdk synth`` and ``cdk
deploy``. AWS Solutions finds nothing: the function's role may only write to its own log group, and the
invoker role may only call this one function through its URL. Serverless's two findings (no dead-letter
queue, no X-Ray tracing) are acknowledged below, each with its reason.
"""

from __future__ import annotations

import os

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from cdk_nag import AwsSolutionsChecks, ServerlessChecks
from constructs import Construct
from lambda_ml_serve_cdk import ModelFunction

ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}


class ModelServingStack(cdk.Stack):
    """The model's function and Function URL, plus the role that callers assume to invoke it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: str = "wine_quality",
        architecture: lambda_.Architecture = lambda_.Architecture.X86_64,
        function_props: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.model = ModelFunction(self, "Model", model=model, architecture=architecture, **(function_props or {}))
        cdk.Validations.of(self.model.function).acknowledge(
            cdk.Acknowledgment(
                id="Serverless::Serverless-LambdaDLQ",
                reason="Called synchronously through its Function URL only: failures go back to the caller. "
                "A dead-letter queue holds failed asynchronous invocations, which this stack never makes; "
                "ModelFunction(dead_letter_queue=...) adds one where an app invokes asynchronously.",
            ),
            cdk.Acknowledgment(
                id="Serverless::Serverless-LambdaTracing",
                reason="Every request is logged as one CloudWatch EMF record (request id, status, rows, latency); "
                "X-Ray tracing would add a cost per request and an IAM wildcard for trace segments.",
            ),
        )

        self.invoker_role = iam.Role(
            self,
            "InvokerRole",
            assumed_by=iam.AccountRootPrincipal(),
            description=f"Assumed by clients to call the Function URL of model {model}",
            max_session_duration=cdk.Duration.hours(1),
        )
        self.model.grant_invoke_url(self.invoker_role)

        cdk.CfnOutput(self, "FunctionUrl", value=self.model.url, description="POST JSON rows here (SigV4-signed)")
        cdk.CfnOutput(
            self,
            "InvokerRoleArn",
            value=self.invoker_role.role_arn,
            description="Assume this role to call the Function URL (lambda-ml-serve predict --assume-role)",
        )


def build(app: cdk.App) -> ModelServingStack:
    """Add the example stack to ``app``, configured from its context, and check it with cdk-nag."""
    model = app.node.try_get_context("model") or "wine_quality"
    arch = app.node.try_get_context("architecture") or "x86_64"
    if arch not in ARCHITECTURES:
        raise ValueError(f"context 'architecture' must be one of {', '.join(ARCHITECTURES)}; got {arch!r}")
    function_props = {
        "backend": app.node.try_get_context("backend"),
        "package": app.node.try_get_context("package") or "image",
        "snap_start": str(app.node.try_get_context("snap_start")).lower() == "true",
        "python_version": str(app.node.try_get_context("python") or "3.12"),
    }
    tune = app.node.try_get_context("tune")
    if tune:
        from lambda_ml_serve.plugins import get_registry

        backend = function_props["backend"] or get_registry().model(model).spec.backend
        function_props["memory_size"] = ModelFunction.tuned(tune, model=model, backend=backend)
    stack = ModelServingStack(
        app,
        f"lambda-ml-serve-{model.replace('_', '-')}",
        model=model,
        architecture=ARCHITECTURES[arch],
        function_props=function_props,
        description=f"lambda-ml-serve: model {model} behind an IAM-authenticated Lambda Function URL",
        # The CLI's account and region (AWS_PROFILE, AWS_REGION); unset leaves the stack
        # environment-agnostic, which synthesises without any AWS access.
        env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    # cdk-nag 3 runs as a CDK policy-validation plugin: findings fail the synth, and a finding is
    # accepted only through Validations.of(construct).acknowledge(...) with a written reason.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True), ServerlessChecks(app, verbose=True))
    return stack


def main() -> None:
    app = cdk.App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
