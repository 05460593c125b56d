"""Lambda events <-> requests and responses, for every source that puts HTTP in front of a function.

| source | recognised by | answered with |
| --- | --- | --- |
| Function URL, API Gateway HTTP API (payload 2.0) | ``requestContext.http`` | statusCode, headers, body |
| API Gateway REST API, HTTP API payload 1.0 | ``httpMethod`` + ``requestContext`` | statusCode, headers, body |
| ALB target group | ``requestContext.elb`` | + statusDescription; multiValueHeaders when the event has them |
| console / hand-written test event | only ``body`` (and ``isBase64Encoded``) | statusCode, headers, body |
| direct invocation | anything else | the payload itself |
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from lambda_ml_serve.runtime import codings, encoding
from lambda_ml_serve.runtime.errors import ApiError

URL, REST, ALB, BODY, DIRECT = "url", "rest", "alb", "body", "direct"
_BODY_ONLY_KEYS = frozenset({"body", "isBase64Encoded"})
#: What a request id must look like to be repeated in a header and in messages: a UUID (Function
#: URLs, REST APIs, ALB traces) or base64 text (HTTP APIs' ``JKJaXmPLvHcESHA=``).
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    request_id: str
    #: Which event source sent it: decides the response format.
    source: str = URL
    #: A direct invocation's event is the payload, already parsed by Lambda.
    payload: Any = None
    #: An ALB target group with multi-value headers on wants them back the same way.
    multi_value: bool = False
    #: The event's ``body`` and ``isBase64Encoded``, decoded by :meth:`body` when the route reads it.
    raw_body: Any = None
    base64: bool = False
    #: The request's headers, names in lowercase, repeated headers joined with commas.
    headers: dict[str, str] = field(default_factory=dict)
    #: The query string's parameters (the last value of a repeated one).
    query: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> bool:
        """False for a direct invocation: the answer is then a plain value, not an HTTP response."""
        return self.source != DIRECT

    @property
    def media_type(self) -> str:
        """The body's media type (``Content-Type`` without parameters), lowercase; empty when not given."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    @property
    def encoded(self) -> bool:
        """Whether the body is announced with a content coding (gzip, deflate) to undo before reading it."""
        return bool(codings.codings_of(self.headers.get("content-encoding")))

    def body(self) -> bytes:
        """The request body's bytes, content codings undone; a bad base64 or compressed body is the client's error."""
        if self.raw_body is None or self.raw_body == "":
            return b""
        if not isinstance(self.raw_body, str):
            raise ApiError("bad_request", "the event body must be a string")
        if self.base64:
            try:
                raw = base64.b64decode(self.raw_body, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError("bad_request", "the body is marked base64-encoded but is not valid base64") from None
        else:
            raw = self.raw_body.encode("utf-8", "surrogatepass")
        return codings.decode_body(raw, self.headers.get("content-encoding"))


@dataclass(frozen=True)
class Answer:
    """What the application answers, before it is written in the event source's response format."""

    status: int
    payload: Any
    headers: dict[str, str]
    #: JSON payloads are encoded here; a text payload (the docs page) or bytes (binary v2) are sent as they are.
    content_type: str = "application/json"


def source_of(event: Any) -> str:
    """Which event source an event comes from (see the module's table)."""
    if not isinstance(event, dict):
        return DIRECT
    context = event.get("requestContext")
    if isinstance(context, dict):
        if isinstance(context.get("http"), dict):
            return URL
        if isinstance(context.get("elb"), dict):
            return ALB
        if "httpMethod" in event:
            return REST
    if "body" in event and event.keys() <= _BODY_ONLY_KEYS and isinstance(event["body"], (str, type(None))):
        return BODY
    return DIRECT


def request_id_of(event: Any, fallback: str) -> str:
    """The event's own request id when it carries one (so logs and answers match AWS's)."""
    context = event.get("requestContext") if isinstance(event, dict) else None
    request_id = context.get("requestId") if isinstance(context, dict) else None
    # It goes into a header and into messages: anything but an id-like token is not repeated.
    return request_id if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id) else fallback


def parse_event(event: Any, request_id: str) -> Request:
    """Read an HTTP event of any source into a Request, or wrap a direct invocation's payload.

    Never raises: the body is decoded when a route reads it, so every error is answered in the
    event source's own response format.
    """
    source = source_of(event)
    if source == DIRECT:
        return Request("POST", "/", request_id, source=DIRECT, payload=event)
    if source == BODY:
        method, path = "POST", "/"
    elif source == URL:
        http = event["requestContext"]["http"]
        method, path = http.get("method"), event.get("rawPath") or http.get("path") or "/"
        stage = event["requestContext"].get("stage")
        # An HTTP API stage other than $default prefixes rawPath with the stage name.
        if isinstance(stage, str) and stage != "$default" and str(path).startswith(f"/{stage}/"):
            path = str(path)[len(stage) + 1 :]
    else:
        method, path = event.get("httpMethod"), event.get("path") or "/"
    return Request(
        str(method).upper(),
        str(path),
        request_id,
        source=source,
        multi_value=source == ALB and isinstance(event.get("multiValueHeaders"), dict),
        raw_body=event.get("body"),
        base64=bool(event.get("isBase64Encoded")),
        query=query_of(event),
        headers=headers_of(event, source),
    )


def headers_of(event: dict[str, Any], source: str) -> dict[str, str]:
    """The event's headers with lowercase names, as text (REST and ALB events may have other cases)."""
    headers = event.get("headers")
    multi = event.get("multiValueHeaders")
    if isinstance(multi, dict) and multi and source != URL:
        return {
            str(k).lower(): ",".join(map(str, v)) if isinstance(v, list) else str(v)
            for k, v in multi.items()
            if v is not None
        }
    if not isinstance(headers, dict):
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items() if v is not None}


def query_of(event: Any) -> dict[str, str]:
    """An HTTP event's query parameters (the last value of a repeated one)."""
    if not isinstance(event, dict):
        return {}
    raw = event.get("rawQueryString")
    if isinstance(raw, str) and raw:
        return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
    params = event.get("queryStringParameters")
    if isinstance(params, dict):
        return {str(k): v.rsplit(",", 1)[-1] for k, v in params.items() if isinstance(v, str)}
    return {}


def dumps(payload: Any) -> str:
    # allow_nan=False: NaN is not JSON; a model that produces it must fail loudly, not corrupt clients.
    return encoding.dumps(payload)


def http_response(
    status: int,
    payload: Any,
    request_id: str,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """A Function URL response: the body, status, and the request id every answer carries.

    Bytes are sent base64-encoded, as Lambda's HTTP event sources require for a binary body.
    """
    if isinstance(payload, bytes):
        body, binary = base64.b64encode(payload).decode("ascii"), True
    else:
        body = payload if isinstance(payload, str) and content_type != "application/json" else dumps(payload)
        binary = False
    return {
        "statusCode": status,
        "headers": {"content-type": content_type, "x-request-id": request_id, **(headers or {})},
        "body": body,
        "isBase64Encoded": binary,
    }


def respond(request: Request, answer: Answer, headers: dict[str, str] | None = None) -> Any:
    """Write the answer in the response format of the request's event source, with ``headers`` added.

    An answer of at least :data:`~lambda_ml_serve.runtime.codings.COMPRESS_MIN_BYTES` is
    gzip-compressed for a request that accepts gzip. A HEAD request gets the headers of the GET answer,
    ``content-length`` (of the body GET would send) included, and no body.
    """
    if not request.http:
        return answer.payload
    all_headers = {**answer.headers, **headers} if headers else answer.headers
    response = http_response(answer.status, answer.payload, request.request_id, all_headers, answer.content_type)
    if len(response["body"]) >= codings.COMPRESS_MIN_BYTES and codings.accepts_gzip(
        request.headers.get("accept-encoding")
    ):
        _compress(response)
    if request.method == "HEAD":
        # The body's length is only known once it is written; its bytes are not sent.
        body = response["body"]
        size = len(base64.b64decode(body)) if response["isBase64Encoded"] else len(body.encode("utf-8"))
        response["headers"]["content-length"] = str(size)
        response["body"], response["isBase64Encoded"] = "", False
    if request.source == ALB:
        phrase = HTTPStatus(answer.status).phrase if answer.status in HTTPStatus._value2member_map_ else ""
        response["statusDescription"] = f"{answer.status} {phrase}".rstrip()
        if request.multi_value:
            response["multiValueHeaders"] = {k: [v] for k, v in response.pop("headers").items()}
    return response


def _compress(response: dict[str, Any]) -> None:
    """Replace the response's body with its gzip encoding (base64, as Lambda wants binary bodies)."""
    body = response["body"]
    raw = base64.b64decode(body) if response["isBase64Encoded"] else body.encode("utf-8")
    response["body"] = base64.b64encode(codings.gzip_bytes(raw)).decode("ascii")
    response["isBase64Encoded"] = True
    response["headers"]["content-encoding"] = "gzip"
    response["headers"]["vary"] = "accept-encoding"
