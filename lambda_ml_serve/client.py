"""Call a deployed model's Lambda Function URL from Python, signing requests with SigV4.

Developer tooling: the serving path never imports it. Signing is botocore's ``SigV4Auth``; requests go
out through urllib3 (the HTTP library botocore itself ships with), imported when the first call is
made so that importing this module, and the CLI's ``--help``, stay fast::

    from lambda_ml_serve.client import FunctionUrlClient, FunctionUrlError

    client = FunctionUrlClient("https://abc123.lambda-url.eu-west-1.on.aws/")
    try:
        answer = client.predict([{"pH": 3.2, "alcohol": 11.0}])
    except FunctionUrlError as exc:  # non-2xx answer; str(exc) is a readable one-liner
        print(exc)

Every failure is a :class:`FunctionUrlClientError`: bad configuration (:class:`ClientConfigError`), no
answer or none within ``timeout`` (:class:`FunctionUrlConnectionError`), a non-2xx or unreadable answer
(:class:`FunctionUrlError`). ``timeout`` bounds the whole call: connecting, the headers and the body.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from contextlib import suppress
from contextvars import ContextVar
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from lambda_ml_serve.errors import LambdaMLServeError

if TYPE_CHECKING:
    import boto3
    import urllib3
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
_MAX_DETAILS_SHOWN = 5
_MAX_BODY_SHOWN = 300
# Phrases that changed between Python versions (HTTPStatus), kept short and stable.
_REASONS = {413: "Payload Too Large", 422: "Unprocessable"}
# What SigV4 leaves unescaped in a path and in a query name or value (RFC 3986 unreserved).
_PATH_SAFE = "/-_.~!$&'()*+,;=:@%"
_QUERY_SAFE = "-_.~"
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
    """The Function URL could not be reached, did not answer within the timeout, or the connection broke."""

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
        super().__init__(str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays ``args``; this keeps every field instead.
        args = (self.status, self.message, self.details, self.request_id)
        return (type(self), args, {"error_type": self.error_type, "hint": self.hint})

    def __str__(self) -> str:
        try:
            reason = _REASONS.get(self.status) or HTTPStatus(self.status).phrase
        except ValueError:
            reason = "HTTP error"
        shown = [_format_detail(d) for d in self.details[:_MAX_DETAILS_SHOWN]]
        if len(self.details) > _MAX_DETAILS_SHOWN:
            shown.append(f"... and {len(self.details) - _MAX_DETAILS_SHOWN} more")
        details = "; ".join(shown)
        # AWS answers like {"Message": "Forbidden"} would otherwise read "403 Forbidden: Forbidden".
        message = self.message if self.message.strip().lower() != reason.lower() else ""
        text = f"{self.status} {reason}"
        if message and details:
            text += f": {message} [{details}]"
        elif message or details:
            text += f": {message or details}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return f"{text}; {self.hint}" if self.hint else text


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
    return host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"


def _canonical_query(query: str) -> str:
    # Sent exactly as SigV4 canonicalises it (botocore signs the query as it appears in the URL).
    pairs = (pair.partition("=") for pair in query.split("&") if pair)
    return "&".join(f"{quote(unquote(k), safe=_QUERY_SAFE)}={quote(unquote(v), safe=_QUERY_SAFE)}" for k, _, v in pairs)


def _normalize_url(url: str) -> str:
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


# -- HTTP: urllib3 with a deadline over the whole call ------------------------------------------------


class _Deadline:
    """When the current call must end, and whether the watchdog ended it (the socket then reads as EOF)."""

    __slots__ = ("at", "expired")

    def __init__(self, at: float) -> None:
        self.at, self.expired = at, False


_deadline: ContextVar[_Deadline] = ContextVar("deadline")


def _pool_manager(proxy: str | None) -> urllib3.PoolManager:
    """A urllib3 pool manager whose connections are shut down when the current call's deadline passes.

    urllib3's own timeouts bound each socket operation, so a server trickling a byte at a time could
    hold a call forever; a timer that shuts the socket down makes ``timeout`` a deadline.
    """
    import urllib3
    from botocore.httpsession import get_cert_path
    from urllib3.connection import HTTPConnection, HTTPSConnection

    class Deadline:
        def request(self, *args: Any, **kwargs: Any) -> None:
            self._state = _deadline.get()
            self._watchdog = threading.Timer(max(0.0, self._state.at - time.monotonic()), self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()
            try:
                super().request(*args, **kwargs)
            except BaseException:
                self._watchdog.cancel()
                raise

        def getresponse(self) -> Any:
            try:
                return super().getresponse()  # reads the whole body: preload_content
            finally:
                self._watchdog.cancel()

        def _expire(self) -> None:
            self._state.expired = True
            if self.sock is not None:
                with suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)

    class Http(urllib3.HTTPConnectionPool):
        ConnectionCls = type("DeadlineHTTPConnection", (Deadline, HTTPConnection), {})

    class Https(urllib3.HTTPSConnectionPool):
        ConnectionCls = type("DeadlineHTTPSConnection", (Deadline, HTTPSConnection), {})

    options = {"retries": False, "ca_certs": get_cert_path(True)}
    manager = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    manager.pool_classes_by_scheme = {"http": Http, "https": Https}
    return manager


def _proxy_for(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    # A proxy cannot reach this machine's loopback interface: never use one for it.
    if host in ("localhost", "::1") or host.startswith("127.") or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(urlsplit(url).scheme)


def _reason(exc: BaseException) -> str:
    # urllib3 wraps the OSError that says what happened (refused, reset...) in its own exceptions.
    while exc.__context__ is not None and not isinstance(exc, OSError):
        exc = exc.__context__
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(exc).__name__


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
    payload = (
        list(payload) if isinstance(payload, tuple) else dict(payload) if isinstance(payload, Mapping) else payload
    )
    try:
        return json.dumps(payload, default=_json_default, allow_nan=False, separators=(",", ":")).encode()
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
    and needs no region. Non-ASCII characters in the URL's path or query are percent-encoded
    (UTF-8) and signed as sent. ``timeout`` is a deadline in seconds for each whole call.

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
        self._source: Credentials | None = None
        self._http: urllib3.PoolManager | None = None

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

    # -- credentials ---------------------------------------------------------------------------------

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
        from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        with self._lock:
            try:
                if self._source is None:
                    session = self._get_session()
                    credentials = session.get_credentials()
                    if credentials is None:
                        raise NoCredentialsError()
                    if self.assume_role:  # botocore renews them before they expire
                        fetcher = AssumeRoleCredentialFetcher(
                            lambda service, **kwargs: session.client(service, region_name=self.region, **kwargs),
                            credentials,
                            self.assume_role,
                            extra_args={"RoleSessionName": ROLE_SESSION_NAME},
                        )
                        credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
                    self._source = credentials
                return self._source.get_frozen_credentials()
            except NoCredentialsError:
                raise ClientConfigError(
                    f"no AWS credentials found to sign requests to {self.url}: {_CREDENTIALS_HELP}"
                ) from None
            except ClientError as exc:  # only AssumeRole calls AWS here
                error = exc.response.get("Error", {})
                raise ClientConfigError(
                    f"cannot assume role {self.assume_role}: {error.get('Code', 'error')}: "
                    f"{error.get('Message', exc)}; check that your identity "
                    "(`aws sts get-caller-identity`) may call sts:AssumeRole on it and that the "
                    "role's trust policy allows it"
                ) from None
            except BotoCoreError as exc:  # expired SSO token, broken profile...
                raise ClientConfigError(f"cannot load AWS credentials: {exc}") from None

    # -- one call ------------------------------------------------------------------------------------

    def _call(self, method: str, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        headers = {"Content-Type": "application/json"} if body else {}
        if self.auth == "AWS_IAM":
            assert self.region is not None  # resolved in __init__ for signed clients
            headers = sign_request(method, self.url, body, self._credentials(), self.region, headers=headers)
        # Added after signing: intermediaries may rewrite these, which must not break signatures.
        headers |= {"Accept": "application/json", "User-Agent": "lambda-ml-serve-client"}
        response = self._send(method, body, headers, deadline)
        request_id = response.headers.get("x-request-id") or response.headers.get("x-amzn-requestid")
        if not 200 <= response.status < 300:
            raise self._error(response, request_id)
        try:
            answer = json.loads(response.data)
        except ValueError:
            text = _squash(response.data.decode("utf-8", "replace"))
            raise FunctionUrlError(
                response.status, f"the answer is not JSON: {text!r}", request_id=request_id
            ) from None
        if not isinstance(answer, dict):
            kind = type(answer).__name__
            raise FunctionUrlError(response.status, f"expected a JSON object, got a JSON {kind}", request_id=request_id)
        return answer

    def _send(self, method: str, body: bytes, headers: dict[str, str], deadline: float) -> urllib3.BaseHTTPResponse:
        try:
            import urllib3

            if self._http is None:
                self._http = _pool_manager(_proxy_for(self.url))
        except ImportError:
            raise ClientConfigError(
                "the client sends with botocore's urllib3: pip install 'lambda-ml-serve[cli]'"
            ) from None
        remaining = deadline - time.monotonic()
        state = _Deadline(deadline)
        token = _deadline.set(state)
        reason = f"no answer within {self.timeout:g}s (raise the timeout if the model is slow)"
        try:
            # Redirects are reported, not followed: that would send the signature to another URL.
            response = self._http.urlopen(
                method,
                self.url,
                body=body or None,
                headers=headers,
                redirect=False,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # NewConnectionError subclasses ConnectTimeoutError in urllib3, yet means refused or unresolvable.
            slow = isinstance(exc, urllib3.exceptions.TimeoutError)
            timed_out = (
                state.expired
                or time.monotonic() >= deadline
                or (slow and not isinstance(exc, urllib3.exceptions.NewConnectionError))
            )
            raise FunctionUrlConnectionError(self.url, reason if timed_out else _reason(exc)) from None
        finally:
            _deadline.reset(token)
        if state.expired:
            # The watchdog shut the socket while a body without a length was read: what came is not the answer.
            raise FunctionUrlConnectionError(self.url, reason)
        return response

    def _error(self, response: urllib3.BaseHTTPResponse, request_id: str | None) -> FunctionUrlError:
        text = response.data.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        message, details, error_type = _squash(text), [], None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # the project's shape: {"error": {type, message, details}}
            message = str(error.get("message") or "")
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            if isinstance(error.get("details"), list):
                details = [d for d in error["details"] if isinstance(d, dict)]
        elif isinstance(body, dict):  # AWS's own answers: {"Message": ...} or {"message": ...}
            message = str(body.get("Message") or body.get("message") or _squash(text))
        hint = self._hint(response.status, response.headers.get("location"))
        return FunctionUrlError(response.status, message, details, request_id, error_type=error_type, hint=hint)

    def _hint(self, status: int, location: str | None) -> str | None:
        if 300 <= status < 400:
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
    auth = "AWS_IAM" if sign else "NONE"
    client = FunctionUrlClient(url, region=region, auth=auth, assume_role=assume_role, timeout=timeout)
    return client.predict(bytes(data))
