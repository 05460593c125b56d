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

#: Function URLs refuse request bodies above 6 MB.
MAX_BODY_BYTES = 6 * 1024 * 1024
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded")  # fmt: skip


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
    """Build the payload-2.0 event a Function URL would send for this request."""
    path, _, query = target.partition("?")
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
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
        if _is_text(merged.get("content-type", "")):
            event["body"] = body.decode("utf-8", "replace")
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


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
