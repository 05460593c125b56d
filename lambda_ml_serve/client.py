"""Call a deployed model's Lambda Function URL from Python, signing requests with SigV4.

This is developer tooling: the Lambda serving path never imports it, and boto3/botocore are
imported lazily (only when a request is signed) so that importing this module, and the CLI's
``--help``, stay fast. Requests go out through the standard library (``urllib.request``).

Typical use::

    from lambda_ml_serve.client import FunctionUrlClient, FunctionUrlError

    client = FunctionUrlClient("https://abc123.lambda-url.eu-west-1.on.aws/")
    try:
        answer = client.predict([{"pH": 3.2, "alcohol": 11.0}])
    except FunctionUrlError as exc:  # non-2xx answer; str(exc) is a readable one-liner
        print(exc)

The server answers ``POST`` (predict) and ``GET`` (metadata) on the URL's path, ``/`` for a
plain Function URL.

For the ``lambda-ml-serve predict`` CLI command, :func:`predict_command_impl` does all the work::

    try:
        result = predict_command_impl(url, data, region, assume_role, sign=not no_sign)
    except FunctionUrlClientError as exc:  # every error it raises says what to do
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2))
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from lambda_ml_serve.errors import LambdaMLServeError

if TYPE_CHECKING:
    import boto3
    from botocore.credentials import Credentials, ReadOnlyCredentials

__all__ = [
    "ROLE_SESSION_NAME",
    "ClientConfigError",
    "FunctionUrlClient",
    "FunctionUrlClientError",
    "FunctionUrlConnectionError",
    "FunctionUrlError",
    "predict_command_impl",
    "region_from_url",
    "sign_request",
]

#: The SigV4 service name Function URLs are signed for.
SERVICE = "lambda"
#: RoleSessionName used when assuming a role (shows up in CloudTrail).
ROLE_SESSION_NAME = "lambda-ml-serve-client"

# <url-id>.lambda-url.<region>.on.aws: the only host shape a Function URL has.
_FUNCTION_URL_HOST = re.compile(r"^[a-z0-9-]+\.lambda-url\.([a-z]{2}(?:-[a-z]+)+-\d+)\.on\.aws$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_HOSTS = {"localhost", "::1"}
# Assumed-role credentials are renewed this long before they expire, so a request signed
# just before expiry does not arrive with stale credentials.
_RENEW_BEFORE_EXPIRY = _dt.timedelta(minutes=5)
# How many detail lines an error's one-line str() shows; the full list is on ``.details``.
_MAX_DETAILS_SHOWN = 5
_MAX_BODY_SHOWN = 300
# Short, Python-version-independent reason phrases (HTTPStatus's change between versions).
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_CREDENTIALS_HELP = (
    "set AWS_PROFILE to a configured profile (run `aws configure` or `aws sso login`), "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
    "credentials), or pass session=boto3.Session(...); if the Function URL's AuthType is NONE, "
    'send unsigned requests with auth="NONE" (CLI: --no-sign)'
)


class FunctionUrlClientError(LambdaMLServeError):
    """Base class of everything this module raises."""


class ClientConfigError(FunctionUrlClientError, ValueError):
    """The client cannot be set up or cannot sign: bad URL, no region, no credentials, bad data."""


class FunctionUrlConnectionError(FunctionUrlClientError, ConnectionError):
    """The Function URL could not be reached, or the connection broke before an answer."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"could not reach {url}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url, self.reason))


class FunctionUrlError(FunctionUrlClientError):
    """A non-2xx answer (or an unreadable one) from the Function URL.

    ``status`` is the HTTP status, ``message`` the server's message, ``details`` the server's
    ``[{"row", "field", "message"}]`` list, ``request_id`` the ``x-request-id`` (or AWS's
    ``x-amzn-RequestId``) header, ``error_type`` the server's error type (``validation_error``...)
    when the body has the project's error shape, and ``hint`` a suggestion added by the client.
    """

    def __init__(
        self,
        status: int,
        message: str,
        details: Sequence[Mapping[str, Any]] = (),
        request_id: str | None = None,
        *,
        error_type: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.details: list[dict[str, Any]] = [dict(d) for d in details]
        self.request_id = request_id
        self.error_type = error_type
        self.hint = hint
        super().__init__(self._format())

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays ``args``; this keeps every field instead.
        args = (self.status, self.message, self.details, self.request_id)
        return (type(self), args, {"error_type": self.error_type, "hint": self.hint})

    def _format(self) -> str:
        reason = _REASONS.get(self.status)
        if reason is None:
            try:
                reason = HTTPStatus(self.status).phrase
            except ValueError:
                reason = "HTTP error"
        text = f"{self.status} {reason}"
        shown = [_format_detail(d) for d in self.details[:_MAX_DETAILS_SHOWN]]
        if len(self.details) > _MAX_DETAILS_SHOWN:
            shown.append(f"... and {len(self.details) - _MAX_DETAILS_SHOWN} more")
        detail_text = "; ".join(shown)
        # AWS answers like {"Message": "Forbidden"} would otherwise read "403 Forbidden: Forbidden".
        message = self.message if self.message.strip().lower() != reason.lower() else ""
        if message and detail_text:
            text += f": {message} [{detail_text}]"
        elif message or detail_text:
            text += f": {message or detail_text}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.hint:
            text += f"; {self.hint}"
        return text


def _format_detail(detail: Mapping[str, Any]) -> str:
    parts = []
    if detail.get("row") is not None:
        parts.append(f"row {detail['row']}")
    if detail.get("field") is not None:
        parts.append(f"field {str(detail['field'])!r}")
    message = str(detail.get("message") or "invalid")
    return f"{', '.join(parts)}: {message}" if parts else message


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
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return host


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return _netloc(parts.scheme.lower(), parts.hostname or "", parts.port)


def _normalize_url(url: str) -> str:
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
    netloc = _netloc(scheme, parts.hostname, port)
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


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
    ``Authorization`` are signed. ``credentials`` is a botocore ``Credentials`` (refreshable ones
    are frozen first) or anything with ``access_key``, ``secret_key`` and ``token``. ``now`` fixes
    the signing time (naive datetimes are taken as UTC); it defaults to the current time.
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
    lowered = {name.lower() for name in to_sign}
    if payload and "content-type" not in lowered:
        to_sign["Content-Type"] = "application/json"
    to_sign["Host"] = _host_header(url)
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
    canonical_request = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical_request)
    signature = signer.signature(string_to_sign, request)
    signed_headers = signer.signed_headers(signer.headers_to_sign(request))
    result = dict(to_sign)
    result["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={signed_headers}, Signature={signature}"
    )
    return result


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Following a redirect would forward the Authorization header to another URL, and the
    # signature would not match there anyway: report the redirect instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


def _json_default(value: Any) -> Any:
    # NumPy arrays and scalars are the usual non-JSON values in rows; both have tolist().
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} values cannot be sent as JSON")


def _encode_payload(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if not isinstance(payload, list | tuple | Mapping):
        raise TypeError(
            "predict() takes a list of row dicts, {'instances': [...]}, one row dict, "
            f"or a JSON body as bytes/str; got {type(payload).__name__}"
        )
    if isinstance(payload, Mapping):
        payload = dict(payload)
    try:
        return json.dumps(
            list(payload) if isinstance(payload, tuple) else payload,
            default=_json_default,
            allow_nan=False,
            separators=(",", ":"),
        ).encode("utf-8")
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        raise ClientConfigError(
            "the rows contain NaN or infinity, which JSON cannot carry; use None for a missing value"
        ) from None


def _squash(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_BODY_SHOWN else text[: _MAX_BODY_SHOWN - 3] + "..."


class FunctionUrlClient:
    """A client for one deployed model's Function URL.

    ``auth="AWS_IAM"`` (the default) signs every request with SigV4 using boto3's default
    credential chain (or ``session``'s), or, with ``assume_role``, temporary credentials from
    STS AssumeRole (renewed shortly before they expire). ``auth="NONE"`` sends unsigned requests
    and needs neither boto3 nor a region.

    The region is ``region`` if given, else the one in the Function URL's host, else the
    session's configured region; signing without one raises :class:`ClientConfigError`.
    """

    def __init__(
        self,
        url: str,
        *,
        region: str | None = None,
        auth: Literal["AWS_IAM", "NONE"] = "AWS_IAM",
        session: boto3.Session | None = None,
        assume_role: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = _normalize_url(url)
        normalized_auth = str(auth).upper()
        if normalized_auth not in ("AWS_IAM", "NONE"):
            raise ClientConfigError(f'auth must be "AWS_IAM" or "NONE", not {auth!r}')
        self.auth: Literal["AWS_IAM", "NONE"] = "AWS_IAM" if normalized_auth == "AWS_IAM" else "NONE"
        if not timeout or timeout <= 0:
            raise ClientConfigError(f"timeout must be a positive number of seconds: {timeout!r}")
        self.timeout = float(timeout)
        if assume_role is not None and self.auth == "NONE":
            raise ClientConfigError('assume_role only applies to signed requests; drop it or use auth="AWS_IAM"')
        self.assume_role = assume_role
        self._session = session
        self._lock = threading.Lock()
        self._assumed: ReadOnlyCredentials | None = None
        self._assumed_expiry: _dt.datetime | None = None

        url_region = region_from_url(self.url)
        region = region.strip() if region else None
        if region and url_region and region != url_region:
            # The signature's scope must name the function's region: this could only fail later.
            raise ClientConfigError(
                f"region {region!r} does not match the Function URL's region {url_region!r}; drop the region argument"
            )
        self.region: str | None = region or url_region
        if self.region is None and self.auth == "AWS_IAM":
            self.region = self._get_session().region_name
            if not self.region:
                raise ClientConfigError(
                    f"cannot tell the AWS region of {self.url}: it is not a "
                    "https://<url-id>.lambda-url.<region>.on.aws/ URL; pass region=... "
                    "(CLI: --region), or set AWS_DEFAULT_REGION or a region in your AWS profile"
                )

    def predict(self, rows_or_payload: Any) -> dict[str, Any]:
        """POST rows to the model and return its JSON answer.

        Accepts a list of row dicts, ``{"instances": [...]}``, one row dict (each is sent as
        JSON, NumPy values included), or a ready JSON body as ``bytes``/``str`` (sent as is).
        Raises :class:`FunctionUrlError` for non-2xx answers.
        """
        return self._call("POST", _encode_payload(rows_or_payload))

    def metadata(self) -> dict[str, Any]:
        """GET the model's metadata (name, version, input schema...) from the URL's path."""
        return self._call("GET", b"")

    # -- internals -----------------------------------------------------------------------

    def _get_session(self) -> boto3.Session:
        if self._session is None:
            try:
                import boto3
                from botocore.exceptions import BotoCoreError
            except ImportError:
                raise ClientConfigError(
                    "boto3 is needed to sign requests: pip install 'lambda-ml-serve[cli]' "
                    '(or use auth="NONE" for a Function URL without IAM auth)'
                ) from None
            try:
                self._session = boto3.Session()
            except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
                raise ClientConfigError(f"cannot set up AWS credentials: {exc}") from None
        return self._session

    def _credentials(self) -> ReadOnlyCredentials:
        from botocore.exceptions import BotoCoreError, NoCredentialsError

        with self._lock:
            try:
                if self.assume_role:
                    return self._assumed_role_credentials()
                credentials = self._get_session().get_credentials()
                if credentials is None:
                    raise NoCredentialsError()
                return credentials.get_frozen_credentials()
            except NoCredentialsError:
                raise ClientConfigError(
                    f"no AWS credentials found to sign requests to {self.url}: {_CREDENTIALS_HELP}"
                ) from None
            except BotoCoreError as exc:  # expired SSO token, broken profile...
                raise ClientConfigError(f"cannot load AWS credentials: {exc}") from None

    def _assumed_role_credentials(self) -> ReadOnlyCredentials:
        from botocore.credentials import ReadOnlyCredentials
        from botocore.exceptions import ClientError

        now = _dt.datetime.now(_dt.UTC)
        if (
            self._assumed is not None
            and self._assumed_expiry is not None
            and self._assumed_expiry - now > _RENEW_BEFORE_EXPIRY
        ):
            return self._assumed
        sts = self._get_session().client("sts", region_name=self.region)
        try:
            answer = sts.assume_role(RoleArn=self.assume_role, RoleSessionName=ROLE_SESSION_NAME)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ClientConfigError(
                f"cannot assume role {self.assume_role}: {error.get('Code', 'error')}: "
                f"{error.get('Message', exc)}; check that your identity "
                "(`aws sts get-caller-identity`) may call sts:AssumeRole on it and that the "
                "role's trust policy allows it"
            ) from None
        temporary = answer["Credentials"]
        self._assumed = ReadOnlyCredentials(
            temporary["AccessKeyId"], temporary["SecretAccessKey"], temporary["SessionToken"]
        )
        expiry = temporary.get("Expiration")
        self._assumed_expiry = expiry if isinstance(expiry, _dt.datetime) else None
        return self._assumed

    def _call(self, method: str, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body else {}
        if self.auth == "AWS_IAM":
            assert self.region is not None  # resolved in __init__ for signed clients
            headers = sign_request(method, self.url, body, self._credentials(), self.region, headers=headers)
        # Added after signing: intermediaries may rewrite these, which must not break signatures.
        headers["Accept"] = "application/json"
        headers["User-Agent"] = "lambda-ml-serve-client"
        status, response_headers, payload = self._send(method, body, headers)
        request_id = response_headers.get("x-request-id") or response_headers.get("x-amzn-requestid")
        if not 200 <= status < 300:
            raise self._error(status, response_headers, payload, request_id)
        try:
            answer = json.loads(payload)
        except ValueError:
            raise FunctionUrlError(
                status,
                f"the answer is not JSON: {_squash(payload.decode('utf-8', 'replace'))!r}",
                request_id=request_id,
            ) from None
        if not isinstance(answer, dict):
            raise FunctionUrlError(
                status,
                f"expected a JSON object, got a JSON {type(answer).__name__}",
                request_id=request_id,
            )
        return answer

    def _send(self, method: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        request = urllib.request.Request(self.url, data=body or None, headers=dict(headers), method=method)
        # A proxy cannot reach this machine's loopback interface: never use one for it.
        host = urlsplit(self.url).hostname or ""
        proxies = urllib.request.ProxyHandler({} if _is_loopback(host) else None)
        opener = urllib.request.build_opener(proxies, _NoRedirect)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    payload = exc.read()
                except (OSError, HTTPException):
                    payload = b""
                return exc.code, exc.headers, payload
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise FunctionUrlConnectionError(self.url, self._timed_out()) from exc
            raise FunctionUrlConnectionError(self.url, str(reason)) from exc
        except TimeoutError as exc:
            raise FunctionUrlConnectionError(self.url, self._timed_out()) from exc
        except (OSError, HTTPException) as exc:
            raise FunctionUrlConnectionError(
                self.url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc

    def _timed_out(self) -> str:
        return f"no answer within {self.timeout:g}s (raise the timeout if the model is slow)"

    def _error(
        self, status: int, headers: Mapping[str, str], payload: bytes, request_id: str | None
    ) -> FunctionUrlError:
        text = payload.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        message, details, error_type = _squash(text), [], None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # the project's shape: {"error": {type, message, details}}
            message = str(error.get("message") or "")
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            raw_details = error.get("details")
            if isinstance(raw_details, list):
                details = [d for d in raw_details if isinstance(d, dict)]
        elif isinstance(body, dict):  # AWS's own answers: {"Message": ...} or {"message": ...}
            found = body.get("Message") or body.get("message")
            message = str(found) if found else _squash(text)
        return FunctionUrlError(
            status,
            message,
            details,
            request_id,
            error_type=error_type,
            hint=self._hint(status, headers),
        )

    def _hint(self, status: int, headers: Mapping[str, str]) -> str | None:
        if 300 <= status < 400:
            location = headers.get("location")
            return f"redirected to {location}; call that URL instead" if location else None
        if status == 403 and self.auth == "AWS_IAM":
            who = f"role {self.assume_role}" if self.assume_role else "your AWS identity"
            return (
                f"check that {who} is allowed lambda:InvokeFunctionUrl on the function "
                f"and that {self.region} is the function's region"
            )
        if status in (401, 403) and self.auth == "NONE":
            return 'the Function URL may use AWS_IAM auth: sign requests (drop auth="NONE" / --no-sign)'
        return None


def predict_command_impl(
    url: str,
    data: bytes,
    region: str | None = None,
    assume_role: str | None = None,
    sign: bool = True,
    *,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Everything ``lambda-ml-serve predict URL --data FILE|-`` does; returns the model's answer.

    ``data`` is the file's (or stdin's) bytes; it must be JSON (a list of rows,
    ``{"instances": [...]}`` or one row) and is checked locally before anything is sent.
    ``sign=False`` (``--no-sign``) sends unsigned requests. Every error raised is a
    :class:`FunctionUrlClientError` whose message says what to do.
    """
    if not data.strip():
        raise ClientConfigError("no data to send: the --data input is empty")
    try:
        json.loads(data)
    except ValueError as exc:
        raise ClientConfigError(f"the --data input is not valid JSON: {exc}") from None
    if assume_role and not sign:
        raise ClientConfigError("--assume-role needs signed requests; drop --no-sign")
    client = FunctionUrlClient(
        url,
        region=region,
        auth="AWS_IAM" if sign else "NONE",
        assume_role=assume_role,
        timeout=timeout,
    )
    return client.predict(bytes(data))
