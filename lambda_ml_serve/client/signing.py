"""SigV4 for Function URLs: the URL as it goes on the wire, its region, and the signed headers.

Signing is botocore's ``SigV4Auth``, imported when the first request is signed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from lambda_ml_serve.client.errors import ClientConfigError

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

#: The SigV4 service name Function URLs are signed for.
SERVICE = "lambda"

# <url-id>.lambda-url.<region>.on.aws: the only host shape a Function URL has.
_FUNCTION_URL_HOST = re.compile(r"^[a-z0-9-]+\.lambda-url\.([a-z]{2}(?:-[a-z]+)+-\d+)\.on\.aws$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What SigV4 leaves unescaped in a path and in a query name or value (RFC 3986 unreserved).
_PATH_SAFE = "/-_.~!$&'()*+,;=:@%"
_QUERY_SAFE = "-_.~"


def region_from_url(url: str) -> str | None:
    """The region in a Function URL's host (``<id>.lambda-url.<region>.on.aws``), else None."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    match = _FUNCTION_URL_HOST.match(host or "")
    return match.group(1) if match else None


def _netloc(scheme: str, hostname: str, port: int | None) -> str:
    # What SigV4 signs as ``host`` must equal what is sent: lowercase, no default port.
    host = f"[{hostname}]" if ":" in hostname else hostname
    return host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"


def _canonical_query(query: str) -> str:
    # Sent exactly as SigV4 canonicalises it (botocore signs the query as it appears in the URL).
    pairs = (pair.partition("=") for pair in query.split("&") if pair)
    return "&".join(f"{quote(unquote(k), safe=_QUERY_SAFE)}={quote(unquote(v), safe=_QUERY_SAFE)}" for k, _, v in pairs)


def normalize_url(url: str) -> str:
    """The URL as it goes on the wire: ASCII, lowercase host, no default port, path and query percent-encoded."""
    if not isinstance(url, str) or not url.strip():
        raise ClientConfigError("the Function URL is empty")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ClientConfigError(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ClientConfigError(f"{url!r} is not an http(s) URL; expected https://<url-id>.lambda-url.<region>.on.aws/")
    if parts.username is not None or parts.password is not None:
        raise ClientConfigError(f"{url!r}: credentials in the URL are not supported")
    if not parts.hostname.isascii():
        raise ClientConfigError(f"{url!r}: the host name must be ASCII (a Function URL's always is)")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    return urlunsplit((scheme, _netloc(scheme, parts.hostname, port), path, _canonical_query(parts.query), ""))


def sign_request(
    method: str,
    url: str,
    body: bytes | str | None,
    credentials: Credentials | ReadOnlyCredentials,
    region: str,
    *,
    headers: Mapping[str, str] | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, str]:
    """SigV4-sign a request to a Function URL; return every header to send with it.

    The result holds ``headers`` (``Content-Type: application/json`` is added when there is a
    body and none is given), ``Host``, ``X-Amz-Date``, ``X-Amz-Content-SHA256`` (the body's
    SHA-256), ``X-Amz-Security-Token`` for temporary credentials, and ``Authorization``; all but
    ``Authorization`` are signed. ``url`` must be as sent on the wire (ASCII, percent-encoded).
    ``credentials`` is a botocore ``Credentials`` (refreshable ones are frozen first) or anything with
    ``access_key``, ``secret_key`` and ``token``. ``now`` fixes the signing time (naive datetimes are
    taken as UTC); it defaults to the current time.
    """
    from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
    from botocore.awsrequest import AWSRequest

    if hasattr(credentials, "get_frozen_credentials"):
        # One consistent snapshot: refreshable credentials may rotate between attribute reads.
        credentials = credentials.get_frozen_credentials()
    payload = body.encode("utf-8") if isinstance(body, str) else (body or b"")
    when = now or _dt.datetime.now(_dt.UTC)
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC)
    timestamp = when.strftime(SIGV4_TIMESTAMP)

    to_sign = dict(headers or {})
    if payload and "content-type" not in {name.lower() for name in to_sign}:
        to_sign["Content-Type"] = "application/json"
    parts = urlsplit(url)
    to_sign["Host"] = _netloc(parts.scheme.lower(), parts.hostname or "", parts.port)
    to_sign["X-Amz-Date"] = timestamp
    # Sent explicitly so the signed body hash is visible to (and checked by) the service.
    to_sign["X-Amz-Content-SHA256"] = hashlib.sha256(payload).hexdigest()
    if credentials.token:
        to_sign["X-Amz-Security-Token"] = credentials.token

    # SigV4Auth.add_auth reads the clock itself; running its public steps with our own timestamp
    # gives the same result (the tests compare against add_auth) and makes ``now`` possible.
    request = AWSRequest(method=method.upper(), url=url, data=payload, headers=to_sign)
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(credentials, SERVICE, region)
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    signed_headers = signer.signed_headers(signer.headers_to_sign(request))
    return to_sign | {
        "Authorization": f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    }
