"""HTTP request <-> Lambda Function URL event (payload format 2.0) and response, as AWS converts them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl

#: Function URLs refuse requests above 6 MB (Lambda's synchronous invoke limit, 6 MiB).
MAX_BODY_BYTES = 6 * 1024 * 1024
#: What a Function URL answers then (status 413 and this body).
TOO_LARGE_BODY = b'{"Message":"Request must be smaller than 6291456 bytes for the InvokeFunction operation"}'
_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-www-form-urlencoded",
)


def _is_text(content_type: str) -> bool:
    ct = content_type.lower()
    return ct.startswith(_TEXT_TYPES) or "+json" in ct or "+xml" in ct


def to_event(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str = "127.0.0.1",
    domain: str = "localhost",
) -> dict:
    """Build the payload-2.0 event a Function URL would send for this request.

    As AWS does: header names lowercased, repeated headers joined with commas (``cookie`` stays in
    ``headers`` and also fills ``cookies``), ``x-forwarded-for`` and ``x-forwarded-proto`` added, and the body passed
    as text only when its content type is textual and it is valid UTF-8, else base64-encoded, so the
    function always sees the exact bytes.
    """
    path, _, query = target.partition("?")
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    cookies = [c.strip() for c in merged.get("cookie", "").split(";") if c.strip()]
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-proto", "http")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    now = time.time()
    request_id = str(uuid.uuid4())
    event: dict = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path or "/",
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "http": {
                "method": method.upper(),
                "path": path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if body:
        text = _as_text(body) if _is_text(merged.get("content-type", "")) else None
        if text is not None:
            event["body"] = text
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def _as_text(body: bytes) -> str | None:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def from_result(result: object) -> HttpResponse:
    """Turn what the function returned into the HTTP answer, inferring the format as AWS does.

    A dict with ``statusCode`` is a full response; anything else is JSON-encoded as a 200 body.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        return HttpResponse(200, [("content-type", "application/json")], json.dumps(result).encode())
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    headers += [("set-cookie", c) for c in result.get("cookies") or ()]
    body = result.get("body") or ""
    if not isinstance(body, str):
        body = json.dumps(body)
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("content-type", "application/json"))
    return HttpResponse(int(result["statusCode"]), headers, raw)
