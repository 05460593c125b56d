"""Lambda events <-> requests and responses (Function URL payload format 2.0, or direct invocation)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from lambda_ml_serve.runtime.errors import ApiError

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    request_id: str
    #: False for a direct invocation: the answer is then a plain dict, not an HTTP response.
    http: bool
    #: A direct invocation's event is the payload, already parsed by Lambda.
    payload: Any = None


def _http_context(event: Any) -> tuple[dict, dict] | None:
    context = event.get("requestContext") if isinstance(event, dict) else None
    http = context.get("http") if isinstance(context, dict) else None
    return (context, http) if isinstance(http, dict) else None


def is_http_event(event: Any) -> bool:
    """A Function URL event; anything without ``requestContext.http`` is a direct invocation."""
    return _http_context(event) is not None


def request_id_of(event: Any, fallback: str) -> str:
    """The Function URL's request id when the event carries one (so logs and answers match AWS's)."""
    found = _http_context(event)
    request_id = found[0].get("requestId") if found else None
    # It goes into a header and into messages: anything but an id-like token is not repeated.
    return request_id if isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id) else fallback


def parse_event(event: Any, request_id: str) -> Request:
    """Read a Function URL event, or wrap a direct invocation's payload."""
    found = _http_context(event)
    if found is None:
        return Request("POST", "/", b"", request_id, http=False, payload=event)
    http = found[1]
    method = http.get("method")
    path = event.get("rawPath") or http.get("path") or "/"
    req = Request(str(method).upper(), str(path), b"", request_id, http=True)
    body = event.get("body")
    if body is None or body == "":
        return req
    if not isinstance(body, str):
        raise ApiError("bad_request", "the event body must be a string")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                "bad_request", "the body is marked base64-encoded but is not valid base64"
            ) from None
    else:
        raw = body.encode("utf-8", "surrogatepass")
    return Request(req.method, req.path, raw, request_id, http=True)


def dumps(payload: Any) -> str:
    # allow_nan=False: NaN is not JSON; a model that produces it must fail loudly, not corrupt clients.
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def http_response(
    status: int, payload: Any, request_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Function URL response: JSON body, status, and the request id every answer carries."""
    return {
        "statusCode": status,
        "headers": {
            "content-type": "application/json",
            "x-request-id": request_id,
            **(headers or {}),
        },
        "body": dumps(payload),
        "isBase64Encoded": False,
    }
