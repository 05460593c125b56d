"""The client of one deployed model's Function URL: credentials, one call, and its answer or error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from lambda_ml_serve.client.errors import ClientConfigError, FunctionUrlError
from lambda_ml_serve.client.signing import normalize_url, region_from_url, sign_request
from lambda_ml_serve.client.transport import Transport

if TYPE_CHECKING:
    import boto3
    import urllib3
    from botocore.credentials import Credentials, ReadOnlyCredentials

#: RoleSessionName used when assuming a role (shows up in CloudTrail).
ROLE_SESSION_NAME = "lambda-ml-serve-client"
_MAX_BODY_SHOWN = 300
_CREDENTIALS_HELP = (
    "set AWS_PROFILE to a configured profile (run `aws configure` or `aws sso login`), "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
    "credentials), or pass session=boto3.Session(...); if the Function URL's AuthType is NONE, "
    'send unsigned requests with auth="NONE" (CLI: --no-sign)'
)


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
        self.url = normalize_url(url)
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
        self._transport = Transport(self.url, self.timeout)

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
        response = self._transport.send(method, body, headers, deadline)
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
