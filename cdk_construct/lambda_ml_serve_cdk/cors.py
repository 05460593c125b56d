"""CORS for a model's Function URL: which web pages may call it, mapped to the URL's own CORS config.

The Function URL answers preflights itself and adds ``access-control-*`` to the function's answers,
as ``lambda-ml-serve serve --cors ORIGIN`` does locally; the defaults allow what the project's clients
send (JSON, CSV, compressed and binary v2 bodies, SigV4 headers) and let a page read the headers
every answer carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_

from lambda_ml_serve_cdk.errors import ModelFunctionError

#: A Function URL caches a preflight for at most a day.
MAX_AGE_LIMIT = 86400
METHODS = {
    "GET": lambda_.HttpMethod.GET,
    "HEAD": lambda_.HttpMethod.HEAD,
    "POST": lambda_.HttpMethod.POST,
    "PUT": lambda_.HttpMethod.PUT,
    "PATCH": lambda_.HttpMethod.PATCH,
    "DELETE": lambda_.HttpMethod.DELETE,
    "OPTIONS": lambda_.HttpMethod.OPTIONS,
    "*": lambda_.HttpMethod.ALL,
}
DEFAULT_HEADERS = (
    "content-type",
    "content-encoding",
    "accept-encoding",
    "inference-header-content-length",
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
)
EXPOSED_HEADERS = ("x-request-id", "x-model-sha256", "inference-header-content-length", "content-encoding")


@dataclass(frozen=True)
class ModelCors:
    """Who may call the model from a browser.

    :param allowed_origins: origins such as ``https://app.example.com``, or ``*`` for any.
    :param allowed_methods: HTTP methods (default GET, HEAD and POST: every route the model has).
    :param allowed_headers: request headers a page may send (default: those the project's clients use).
    :param max_age: seconds a browser may cache a preflight's answer (0 to 86400; default 300).
    :param allow_credentials: let pages send cookies or HTTP auth (not with ``*`` origins).
    """

    allowed_origins: Sequence[str]
    allowed_methods: Sequence[str] = ("GET", "HEAD", "POST")
    allowed_headers: Sequence[str] = DEFAULT_HEADERS
    max_age: int = 300
    allow_credentials: bool = False

    def to_options(self) -> lambda_.FunctionUrlCorsOptions:
        """The Function URL's CORS configuration; a prop that cannot work raises ModelFunctionError."""
        origins = list(self.allowed_origins)
        if not origins or not all(isinstance(o, str) and o for o in origins):
            raise ModelFunctionError("cors.allowed_origins: give at least one origin, e.g. https://app.example.com")
        unknown = [m for m in self.allowed_methods if m.upper() not in METHODS]
        if unknown:
            raise ModelFunctionError(f"cors.allowed_methods: {unknown} are not methods; use {', '.join(METHODS)}")
        if not 0 <= self.max_age <= MAX_AGE_LIMIT:
            raise ModelFunctionError(f"cors.max_age: seconds from 0 to {MAX_AGE_LIMIT}; got {self.max_age}")
        if self.allow_credentials and "*" in origins:
            raise ModelFunctionError("cors.allow_credentials needs named origins: browsers refuse it with '*'")
        return lambda_.FunctionUrlCorsOptions(
            allowed_origins=origins,
            allowed_methods=[METHODS[m.upper()] for m in self.allowed_methods],
            allowed_headers=list(self.allowed_headers),
            exposed_headers=list(EXPOSED_HEADERS),
            max_age=Duration.seconds(self.max_age),
            allow_credentials=self.allow_credentials,
        )
