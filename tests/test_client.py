"""The Function URL client: SigV4 signing, region and credential resolution, HTTP behaviour.

Signatures are checked two ways: against botocore's own ``SigV4Auth.add_auth`` with its clock
fixed, and against a small independent SigV4 implementation below (itself checked against
AWS's published examples), which the local test server also uses to verify what it receives.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import pickle
import socket
import threading
import time
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from lambda_ml_serve.client import (
    ROLE_SESSION_NAME,
    ClientConfigError,
    FunctionUrlClient,
    FunctionUrlClientError,
    FunctionUrlConnectionError,
    FunctionUrlError,
    predict_command_impl,
    region_from_url,
    sign_request,
)

FIXED_NOW = dt.datetime(2024, 3, 5, 14, 7, 9, tzinfo=dt.UTC)
FIXED_STAMP = "20240305T140709Z"
FUNCTION_URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws/"
REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/model-caller"


# -- an independent SigV4 implementation (hashlib/hmac only) -------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_authorization(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    signed: list[str] | None = None,
) -> str:
    """The Authorization header AWS expects, computed from the SigV4 specification."""
    lowered = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    names = sorted(signed if signed is not None else lowered)
    pairs = sorted(tuple(p.split("=", 1)) for p in query.split("&")) if query else []
    canonical = "\n".join(
        [
            method,
            path,
            "&".join(f"{k}={v}" for k, v in pairs),
            "".join(f"{n}:{lowered[n]}\n" for n in names),
            ";".join(names),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    stamp = lowered["x-amz-date"]
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(f"AWS4{secret_key}".encode(), stamp[:8])
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"


def signed_header_names(authorization: str) -> list[str]:
    fields = dict(part.strip().split("=", 1) for part in authorization[17:].split(","))
    return fields["SignedHeaders"].split(";")


def test_reference_implementation_matches_aws_published_examples() -> None:
    # AWS's SigV4 documentation example (IAM ListUsers) and test-suite case "get-vanilla".
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    iam = expected_authorization(
        "GET",
        "/",
        "Action=ListUsers&Version=2010-05-08",
        {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Host": "iam.amazonaws.com",
            "X-Amz-Date": "20150830T123600Z",
        },
        b"",
        access_key="AKIDEXAMPLE",
        secret_key=secret,
        region="us-east-1",
        service="iam",
    )
    assert iam.endswith("Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    vanilla = expected_authorization(
        "GET",
        "/",
        "",
        {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"},
        b"",
        access_key="AKIDEXAMPLE",
        secret_key=secret,
        region="us-east-1",
        service="service",
    )
    assert vanilla == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


# -- hermetic AWS configuration ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No real credentials, config files, instance metadata or proxies can leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def static_session(region: str | None = REGION, token: str | None = None) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
        aws_session_token=token,
        region_name=region,
    )


# -- sign_request --------------------------------------------------------------------------


def freeze_botocore_clock(monkeypatch: pytest.MonkeyPatch, when: dt.datetime) -> None:
    naive = when.astimezone(dt.UTC).replace(tzinfo=None)
    if hasattr(botocore.auth, "get_current_datetime"):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: naive)
    else:  # older botocore reads datetime.datetime.utcnow() through its module import

        class Frozen(dt.datetime):
            @classmethod
            def utcnow(cls) -> dt.datetime:  # type: ignore[override]
                return naive

        monkeypatch.setattr(botocore.auth, "datetime", types.SimpleNamespace(datetime=Frozen))


@pytest.mark.parametrize("token", [None, "SESSIONTOKEN"])
def test_signature_equals_botocore_add_auth(monkeypatch: pytest.MonkeyPatch, token: Any) -> None:
    credentials = Credentials("AKID", "SECRET", token)
    body = b'{"instances":[{"pH":3.2,"alcohol":11.0}]}'
    headers = sign_request("POST", FUNCTION_URL, body, credentials, REGION, now=FIXED_NOW)

    # botocore's own signer over an equivalent request, its clock fixed to the same instant.
    freeze_botocore_clock(monkeypatch, FIXED_NOW)
    reference = AWSRequest(
        method="POST",
        url=FUNCTION_URL,
        data=body,
        headers={
            "Content-Type": "application/json",
            "Host": "abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-west-1.on.aws",
            "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
        },
    )
    SigV4Auth(credentials, "lambda", REGION).add_auth(reference)

    assert headers["Authorization"] == reference.headers["Authorization"]
    assert headers["X-Amz-Date"] == reference.headers["X-Amz-Date"] == FIXED_STAMP
    assert headers.get("X-Amz-Security-Token") == reference.headers.get("X-Amz-Security-Token")


@pytest.mark.parametrize("token", [None, "SESSIONTOKEN"])
def test_signature_matches_the_specification(token: str | None) -> None:
    credentials = Credentials("AKID", "SECRET", token)
    body = b'[{"pH":3.2}]'
    headers = sign_request("POST", FUNCTION_URL, body, credentials, REGION, now=FIXED_NOW)

    assert headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=AKID/20240305/{REGION}/lambda/aws4_request, "
    )
    assert headers["X-Amz-Date"] == FIXED_STAMP
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"] == urlsplit(FUNCTION_URL).hostname
    expected_signed = ["content-type", "host", "x-amz-content-sha256", "x-amz-date"]
    if token:
        assert headers["X-Amz-Security-Token"] == token
        expected_signed.append("x-amz-security-token")
    else:
        assert "X-Amz-Security-Token" not in headers
    assert signed_header_names(headers["Authorization"]) == expected_signed
    to_check = {k: v for k, v in headers.items() if k != "Authorization"}
    assert headers["Authorization"] == expected_authorization(
        "POST",
        "/",
        "",
        to_check,
        body,
        access_key="AKID",
        secret_key="SECRET",
        region=REGION,
        service="lambda",
    )


def test_signature_steps_agree_with_botocore_helpers() -> None:
    credentials = Credentials("AKID", "SECRET")
    body = b'{"pH":3.2}'
    headers = sign_request("POST", FUNCTION_URL, body, credentials, REGION, now=FIXED_NOW)
    request = AWSRequest(
        method="POST",
        url=FUNCTION_URL,
        data=body,
        headers={k: v for k, v in headers.items() if k != "Authorization"},
    )
    request.context["timestamp"] = FIXED_STAMP
    signer = SigV4Auth(credentials, "lambda", REGION)
    canonical = signer.canonical_request(request)
    assert canonical.endswith(hashlib.sha256(body).hexdigest())
    string_to_sign = signer.string_to_sign(request, canonical)
    assert string_to_sign.splitlines()[:3] == [
        "AWS4-HMAC-SHA256",
        FIXED_STAMP,
        f"20240305/{REGION}/lambda/aws4_request",
    ]
    assert headers["Authorization"].endswith(f"Signature={signer.signature(string_to_sign, request)}")


def test_body_method_and_time_all_change_the_signature() -> None:
    credentials = Credentials("AKID", "SECRET")

    def signature(method: str, body: bytes, now: dt.datetime = FIXED_NOW) -> str:
        authorization = sign_request(method, FUNCTION_URL, body, credentials, REGION, now=now)
        return authorization["Authorization"].rsplit("Signature=", 1)[1]

    base = signature("POST", b'{"pH":3.2}')
    assert signature("POST", b'{"pH":3.2}') == base
    assert signature("POST", b'{"pH":3.3}') != base
    assert signature("PUT", b'{"pH":3.2}') != base
    assert signature("POST", b'{"pH":3.2}', FIXED_NOW + dt.timedelta(seconds=1)) != base


def test_signing_time_is_converted_to_utc() -> None:
    credentials = Credentials("AKID", "SECRET")
    paris = dt.timezone(dt.timedelta(hours=1))
    local = sign_request("GET", FUNCTION_URL, b"", credentials, REGION, now=FIXED_NOW.astimezone(paris))
    naive = sign_request("GET", FUNCTION_URL, b"", credentials, REGION, now=FIXED_NOW.replace(tzinfo=None))
    assert local["X-Amz-Date"] == naive["X-Amz-Date"] == FIXED_STAMP
    assert local["Authorization"] == naive["Authorization"]


def test_get_without_body_has_no_content_type_and_hashes_nothing() -> None:
    headers = sign_request("GET", FUNCTION_URL, None, Credentials("AKID", "SECRET"), REGION)
    assert "Content-Type" not in headers
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(b"").hexdigest()


def test_refreshable_credentials_are_frozen_before_signing() -> None:
    class Rotating:
        """Stands in for RefreshableCredentials: only the frozen snapshot is consistent."""

        def get_frozen_credentials(self) -> ReadOnlyCredentials:
            return ReadOnlyCredentials("AKIDFROZEN", "SECRET", "TOKEN")

    headers = sign_request("GET", FUNCTION_URL, b"", Rotating(), REGION, now=FIXED_NOW)  # type: ignore[arg-type]
    assert "Credential=AKIDFROZEN/" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "TOKEN"


# database=None: nothing is written to the working tree; dot segments are left out because
# SigV4 signs the normalised path and urllib would send them as they are.
@settings(max_examples=60, deadline=None, database=None)
@given(
    body=st.binary(max_size=300),
    path=st.lists(
        st.text("abcxyz0123-_.~", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
        max_size=3,
    ),
    port=st.sampled_from([None, 443, 8443]),
    region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"]),
    token=st.one_of(st.none(), st.text("ABCDEFGHIJ0123456789/+=", min_size=1, max_size=40)),
    when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)),
)
def test_any_request_signs_per_specification(
    body: bytes, path: list[str], port: int | None, region: str, token: str | None, when: Any
) -> None:
    netloc = "x.example.com" + (f":{port}" if port else "")
    url = f"https://{netloc}/{'/'.join(path)}"
    headers = sign_request("POST", url, body, Credentials("AKID", "SECRET", token), region, now=when)
    assert headers["Host"] == ("x.example.com:8443" if port == 8443 else "x.example.com")
    rest = {k: v for k, v in headers.items() if k != "Authorization"}
    assert headers["Authorization"] == expected_authorization(
        "POST",
        urlsplit(url).path,
        "",
        rest,
        body,
        access_key="AKID",
        secret_key="SECRET",
        region=region,
        service="lambda",
    )


# -- regions and configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://abc123.lambda-url.us-east-1.on.aws/", "us-east-1"),
        ("https://abc123.lambda-url.eu-west-1.on.aws", "eu-west-1"),
        ("https://abc123.lambda-url.ap-southeast-2.on.aws/predict?x=1", "ap-southeast-2"),
        ("HTTPS://ABC123.LAMBDA-URL.US-GOV-WEST-1.ON.AWS:443/", "us-gov-west-1"),
        ("  https://abc123.lambda-url.cn-north-1.on.aws/  ", "cn-north-1"),
        ("https://models.example.com/", None),
        ("https://abc123.lambda-url.us-east-1.on.aws.example.com/", None),
        ("https://example.com/?h=abc.lambda-url.us-east-1.on.aws", None),
        ("https://lambda-url.us-east-1.on.aws/", None),
        ("http://127.0.0.1:8080/", None),
        ("not a url", None),
    ],
)
def test_region_from_url(url: str, region: str | None) -> None:
    assert region_from_url(url) == region


def test_client_takes_the_region_from_the_url_and_normalises_it() -> None:
    client = FunctionUrlClient("HTTPS://ABC123.Lambda-Url.us-east-1.on.aws:443", session=static_session("eu-west-1"))
    assert client.region == "us-east-1"  # the URL's region wins over the session's
    assert client.url == "https://abc123.lambda-url.us-east-1.on.aws/"


def test_client_falls_back_to_the_session_region() -> None:
    client = FunctionUrlClient("https://models.example.com/", session=static_session("ap-south-1"))
    assert client.region == "ap-south-1"


def test_missing_region_is_a_clear_error() -> None:
    with pytest.raises(ClientConfigError) as caught:
        FunctionUrlClient("https://models.example.com/", session=boto3.Session())
    message = str(caught.value)
    assert "https://models.example.com/" in message
    assert "region=" in message
    assert "--region" in message
    assert "AWS_DEFAULT_REGION" in message


def test_unsigned_client_needs_no_region() -> None:
    client = FunctionUrlClient("https://models.example.com/", auth="NONE")
    assert client.region is None


def test_region_contradicting_the_url_is_rejected() -> None:
    with pytest.raises(ClientConfigError, match="does not match"):
        FunctionUrlClient(FUNCTION_URL, region="us-east-1", session=static_session())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://example.com/"}, "not an http"),
        ({"url": ""}, "empty"),
        ({"url": "https://user:pw@example.com/", "auth": "NONE"}, "credentials in the URL"),
        ({"url": FUNCTION_URL, "auth": "KERBEROS"}, "auth must be"),
        ({"url": FUNCTION_URL, "timeout": 0}, "timeout"),
        ({"url": FUNCTION_URL, "auth": "NONE", "assume_role": ROLE_ARN}, "assume_role"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ClientConfigError, match=match):
        FunctionUrlClient(**kwargs)


# -- a local server that answers like the deployed service --------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 that records requests and replays set answers."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.answer = json_answer(200, {"predictions": [5.4], "model": "wine_quality"})
        self.release = threading.Event()
        self.release.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
                server.release.wait()
                answer = server.answer
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (the timeout test): nothing to answer

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def only_request(self) -> Recorded:
        assert len(self.requests) == 1
        return self.requests[0]


def json_answer(status: int, payload: Any, request_id: str = "req-1") -> Answer:
    return Answer(
        status,
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", "x-request-id": request_id},
    )


@pytest.fixture
def server() -> Iterator[LocalServer]:
    local = LocalServer()
    local.start()
    try:
        yield local
    finally:
        local.stop()


def assert_signed_by(recorded: Recorded, access_key: str, secret_key: str, region: str) -> None:
    """Verify the received request the way the service would, from what arrived on the wire."""
    headers = {k.lower(): v for k, v in recorded.headers.items()}
    authorization = headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={access_key}/")
    assert headers["x-amz-content-sha256"] == hashlib.sha256(recorded.body).hexdigest()
    path, _, query = recorded.path.partition("?")
    assert authorization == expected_authorization(
        recorded.method,
        quote(path, safe="/~"),  # services other than S3 sign the path URI-encoded twice
        query,
        headers,
        recorded.body,
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        service="lambda",
        signed=signed_header_names(authorization),
    )


def signed_client(server: LocalServer, **kwargs: Any) -> FunctionUrlClient:
    return FunctionUrlClient(server.url, region=REGION, session=static_session(), **kwargs)


def test_predict_posts_signed_json(server: LocalServer) -> None:
    rows = [{"pH": 3.2, "alcohol": 11.0}, {"pH": 3.5, "alcohol": 9.4}]
    answer = signed_client(server).predict(rows)

    assert answer == {"predictions": [5.4], "model": "wine_quality"}
    sent = server.only_request()
    assert (sent.method, sent.path) == ("POST", "/")
    assert json.loads(sent.body) == rows
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=AKID/{sent.headers['X-Amz-Date'][:8]}/{REGION}/lambda/aws4_request, "
    )
    assert "X-Amz-Security-Token" not in sent.headers
    assert_signed_by(sent, "AKID", "SECRET", REGION)


def test_session_token_is_sent_and_signed(server: LocalServer) -> None:
    client = FunctionUrlClient(server.url, region=REGION, session=static_session(token="TOK"))
    client.predict({"pH": 3.2})
    sent = server.only_request()
    assert sent.headers["X-Amz-Security-Token"] == "TOK"
    assert "x-amz-security-token" in signed_header_names(sent.headers["Authorization"])
    assert_signed_by(sent, "AKID", "SECRET", REGION)


@pytest.mark.parametrize(
    "payload",
    [
        {"instances": [{"pH": 3.2}]},
        {"pH": 3.2},
        [{"pH": 3.2}],
        ({"pH": 3.2},),
    ],
)
def test_payload_shapes_are_sent_as_json(server: LocalServer, payload: Any) -> None:
    signed_client(server).predict(payload)
    expected = list(payload) if isinstance(payload, tuple) else payload
    assert json.loads(server.only_request().body) == expected


@pytest.mark.parametrize("raw", [b'{"instances": [{"pH": 3.2}]}', '{"instances": [{"pH": 3.2}]}'])
def test_raw_bodies_are_sent_unchanged(server: LocalServer, raw: bytes | str) -> None:
    signed_client(server).predict(raw)
    sent = server.only_request()
    assert sent.body == (raw.encode() if isinstance(raw, str) else raw)
    assert_signed_by(sent, "AKID", "SECRET", REGION)


def test_numpy_values_are_sent_as_plain_numbers(server: LocalServer) -> None:
    np = pytest.importorskip("numpy")
    signed_client(server).predict([{"pH": np.float32(3.25), "counts": np.arange(3)}])
    assert json.loads(server.only_request().body) == [{"pH": 3.25, "counts": [0, 1, 2]}]


def test_nan_is_refused_before_sending(server: LocalServer) -> None:
    with pytest.raises(ClientConfigError, match="NaN"):
        signed_client(server).predict([{"pH": float("nan")}])
    assert server.requests == []


def test_unsupported_payload_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="list of row dicts"):
        FunctionUrlClient(FUNCTION_URL, auth="NONE").predict(42)


def test_metadata_is_a_signed_get_without_body(server: LocalServer) -> None:
    server.answer = json_answer(200, {"model": "wine_quality", "version": "1"})
    client = FunctionUrlClient(server.url + "models/wine", region=REGION, session=static_session())
    assert client.metadata() == {"model": "wine_quality", "version": "1"}
    sent = server.only_request()
    assert (sent.method, sent.path, sent.body) == ("GET", "/models/wine", b"")
    assert "Content-Type" not in sent.headers
    assert_signed_by(sent, "AKID", "SECRET", REGION)


def test_unsigned_client_sends_no_aws_headers(server: LocalServer) -> None:
    FunctionUrlClient(server.url, auth="NONE").predict([{"pH": 3.2}])
    sent = server.only_request()
    assert not any(name.lower() in ("authorization", "x-amz-date", "x-amz-security-token") for name in sent.headers)
    assert sent.headers["Content-Type"] == "application/json"


def test_validation_error_is_readable(server: LocalServer) -> None:
    server.answer = json_answer(
        422,
        {
            "error": {
                "type": "validation_error",
                "message": "2 invalid value(s) in 1 row(s)",
                "details": [
                    {"row": 0, "field": "pH", "message": "must be <= 14"},
                    {"row": 0, "field": "alcohol", "message": "required field is missing"},
                ],
            }
        },
        request_id="abc",
    )
    with pytest.raises(FunctionUrlError) as caught:
        signed_client(server).predict([{"pH": 15}])
    error = caught.value
    assert (error.status, error.request_id, error.error_type) == (422, "abc", "validation_error")
    assert error.details[0] == {"row": 0, "field": "pH", "message": "must be <= 14"}
    assert str(error) == (
        "422 Unprocessable: 2 invalid value(s) in 1 row(s) "
        "[row 0, field 'pH': must be <= 14; row 0, field 'alcohol': required field is missing]"
        " (request id abc)"
    )


def test_aws_forbidden_answer_is_readable_with_a_hint(server: LocalServer) -> None:
    server.answer = Answer(
        403,
        b'{"Message":"Forbidden"}',
        {"Content-Type": "application/json", "x-amzn-RequestId": "aws-req-9"},
    )
    with pytest.raises(FunctionUrlError) as caught:
        signed_client(server).predict([{"pH": 3.2}])
    error = caught.value
    assert (error.status, error.message, error.request_id) == (403, "Forbidden", "aws-req-9")
    text = str(error)
    assert text.startswith("403 Forbidden (request id aws-req-9); ")
    assert "lambda:InvokeFunctionUrl" in text


def test_forbidden_for_unsigned_requests_suggests_signing(server: LocalServer) -> None:
    server.answer = Answer(403, b'{"Message":"Forbidden"}', {"Content-Type": "application/json"})
    with pytest.raises(FunctionUrlError, match="--no-sign"):
        FunctionUrlClient(server.url, auth="NONE").metadata()


def test_non_json_gateway_error_is_readable(server: LocalServer) -> None:
    server.answer = Answer(502, b"Internal Server Error\n", {"Content-Type": "text/plain"})
    with pytest.raises(FunctionUrlError) as caught:
        signed_client(server).predict([{"pH": 3.2}])
    assert caught.value.status == 502
    assert str(caught.value) == "502 Bad Gateway: Internal Server Error"


def test_html_error_body_is_squashed_and_truncated(server: LocalServer) -> None:
    page = "<html>\n  <body>\n" + "upstream broke " * 100 + "</body></html>"
    server.answer = Answer(504, page.encode(), {"Content-Type": "text/html"})
    with pytest.raises(FunctionUrlError) as caught:
        FunctionUrlClient(server.url, auth="NONE").metadata()
    text = str(caught.value)
    assert text.startswith("504 Gateway Timeout: <html> <body> upstream broke")
    assert "\n" not in text
    assert len(text) < 400


def test_success_that_is_not_json_is_an_error(server: LocalServer) -> None:
    server.answer = Answer(200, b"ok", {"Content-Type": "text/plain"})
    with pytest.raises(FunctionUrlError, match="not JSON"):
        FunctionUrlClient(server.url, auth="NONE").metadata()


def test_redirects_are_reported_not_followed(server: LocalServer) -> None:
    server.answer = Answer(302, b"", {"Location": "https://elsewhere.example.com/"})
    with pytest.raises(FunctionUrlError) as caught:
        signed_client(server).predict([{"pH": 3.2}])
    assert caught.value.status == 302
    assert "https://elsewhere.example.com/" in str(caught.value)
    assert len(server.requests) == 1  # the signed request went nowhere else


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on once this socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(FunctionUrlConnectionError) as caught:
        FunctionUrlClient(url, auth="NONE").metadata()
    assert str(caught.value) == f"could not reach {url}: Connection refused"
    assert isinstance(caught.value, FunctionUrlClientError)


def test_no_answer_within_the_timeout_names_the_url(server: LocalServer) -> None:
    server.release.clear()  # the handler holds the answer back until the client gave up
    client = FunctionUrlClient(server.url, auth="NONE", timeout=0.2)
    with pytest.raises(FunctionUrlConnectionError) as caught:
        client.metadata()
    assert server.url in str(caught.value)
    assert "no answer within 0.2s" in str(caught.value)


# -- credentials ---------------------------------------------------------------------------


def test_missing_credentials_is_a_clear_error(server: LocalServer) -> None:
    client = FunctionUrlClient(server.url, region=REGION, session=boto3.Session())
    with pytest.raises(ClientConfigError) as caught:
        client.predict([{"pH": 3.2}])
    message = str(caught.value)
    for hint in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "--no-sign"):
        assert hint in message
    assert server.requests == []


def test_default_credential_chain_is_used(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ENVSECRET")
    FunctionUrlClient(server.url, region=REGION).predict([{"pH": 3.2}])
    assert_signed_by(server.only_request(), "AKIDFROMENV", "ENVSECRET", REGION)


class StubbedStsSession(boto3.Session):
    """A real session whose STS client is a botocore-stubbed one (no network)."""

    def __init__(self, sts: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sts = sts
        self.client_calls: list[tuple[str, dict[str, Any]]] = []

    def client(self, service_name: str, **kwargs: Any) -> Any:  # type: ignore[override]
        self.client_calls.append((service_name, kwargs))
        assert service_name == "sts"
        return self.sts


def temporary_credentials(n: int, expires_in: dt.timedelta) -> dict[str, Any]:
    return {
        "Credentials": {
            "AccessKeyId": f"ASIATEMPORARYKEY{n}",
            "SecretAccessKey": f"temporary-secret-{n}",
            "SessionToken": f"temporary-token-{n}",
            "Expiration": dt.datetime.now(dt.UTC) + expires_in,
        },
        "AssumedRoleUser": {
            "AssumedRoleId": f"AROAEXAMPLEID:{ROLE_SESSION_NAME}",
            "Arn": f"arn:aws:sts::123456789012:assumed-role/model-caller/{ROLE_SESSION_NAME}",
        },
    }


@pytest.fixture
def stubbed_sts() -> Iterator[tuple[StubbedStsSession, Stubber]]:
    base = static_session()
    sts = base.client("sts", region_name=REGION)
    with Stubber(sts) as stubber:
        yield (
            StubbedStsSession(sts, aws_access_key_id="AKID", aws_secret_access_key="SECRET", region_name=REGION),
            stubber,
        )


def test_assume_role_signs_with_the_temporary_credentials(
    server: LocalServer, stubbed_sts: tuple[StubbedStsSession, Stubber]
) -> None:
    session, stubber = stubbed_sts
    stubber.add_response(
        "assume_role",
        temporary_credentials(1, dt.timedelta(hours=1)),
        {"RoleArn": ROLE_ARN, "RoleSessionName": "lambda-ml-serve-client"},
    )
    client = FunctionUrlClient(server.url, region=REGION, session=session, assume_role=ROLE_ARN)
    client.predict([{"pH": 3.2}])
    client.metadata()  # reuses the credentials: a second AssumeRole would find no stub

    stubber.assert_no_pending_responses()
    assert [(name, kwargs["region_name"]) for name, kwargs in session.client_calls] == [("sts", REGION)]
    for sent in server.requests:
        assert sent.headers["X-Amz-Security-Token"] == "temporary-token-1"
        assert_signed_by(sent, "ASIATEMPORARYKEY1", "temporary-secret-1", REGION)


def test_assumed_credentials_near_expiry_are_renewed(
    server: LocalServer, stubbed_sts: tuple[StubbedStsSession, Stubber]
) -> None:
    session, stubber = stubbed_sts
    stubber.add_response("assume_role", temporary_credentials(1, dt.timedelta(minutes=1)))
    stubber.add_response("assume_role", temporary_credentials(2, dt.timedelta(hours=1)))
    client = FunctionUrlClient(server.url, region=REGION, session=session, assume_role=ROLE_ARN)
    client.metadata()
    client.metadata()

    stubber.assert_no_pending_responses()
    assert_signed_by(server.requests[0], "ASIATEMPORARYKEY1", "temporary-secret-1", REGION)
    assert_signed_by(server.requests[1], "ASIATEMPORARYKEY2", "temporary-secret-2", REGION)


def test_assume_role_refusal_is_a_clear_error(
    server: LocalServer, stubbed_sts: tuple[StubbedStsSession, Stubber]
) -> None:
    session, stubber = stubbed_sts
    stubber.add_client_error(
        "assume_role",
        service_error_code="AccessDenied",
        service_message="User is not authorized to perform: sts:AssumeRole",
        http_status_code=403,
    )
    client = FunctionUrlClient(server.url, region=REGION, session=session, assume_role=ROLE_ARN)
    with pytest.raises(ClientConfigError) as caught:
        client.predict([{"pH": 3.2}])
    assert ROLE_ARN in str(caught.value)
    assert "AccessDenied" in str(caught.value)
    assert server.requests == []


# -- the error type and the CLI entry point --------------------------------------------------


def test_error_str_for_a_single_detail() -> None:
    error = FunctionUrlError(422, "", [{"row": 0, "field": "pH", "message": "must be <= 14"}], "abc")
    assert str(error) == "422 Unprocessable: row 0, field 'pH': must be <= 14 (request id abc)"


def test_error_str_shortens_long_detail_lists() -> None:
    details = [{"row": i, "field": "pH", "message": "must be <= 14"} for i in range(12)]
    text = str(FunctionUrlError(422, "12 invalid value(s) in 12 row(s)", details))
    assert text.count("must be <= 14") == 5
    assert text.endswith("... and 7 more]")


def test_error_str_for_details_without_row_or_field() -> None:
    details = [{"row": None, "field": None, "message": "no rows to predict"}]
    assert str(FunctionUrlError(400, "", details)) == "400 Bad Request: no rows to predict"


def test_error_survives_pickling() -> None:
    error = FunctionUrlError(
        422, "bad", [{"row": 1, "field": "pH", "message": "x"}], "r", error_type="validation_error"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, copy.details, copy.request_id, copy.error_type) == (
        422,
        error.details,
        "r",
        "validation_error",
    )
    assert str(copy) == str(error)
    connection = pickle.loads(pickle.dumps(FunctionUrlConnectionError("http://x/", "refused")))
    assert str(connection) == "could not reach http://x/: refused"


def test_predict_command_impl_sends_the_file_as_is(server: LocalServer) -> None:
    data = b'{"instances": [{"pH": 3.2}]}\n'
    result = predict_command_impl(server.url, data, region=None, assume_role=None, sign=False)
    assert result == {"predictions": [5.4], "model": "wine_quality"}
    assert server.only_request().body == data


def test_predict_command_impl_signs_by_default(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    predict_command_impl(server.url, b'[{"pH": 3.2}]', REGION, None, True)
    assert_signed_by(server.only_request(), "AKID", "SECRET", REGION)


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (b"  \n", {}, "empty"),
        (b'{"pH": 3.2', {}, "not valid JSON"),
        (b'{"pH": 3.2}', {"assume_role": ROLE_ARN, "sign": False}, "--no-sign"),
    ],
)
def test_predict_command_impl_rejects_bad_input_locally(
    server: LocalServer, data: bytes, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ClientConfigError, match=match):
        predict_command_impl(server.url, data, **{"sign": False, **kwargs})
    assert server.requests == []


# -- finding 11: non-ASCII URLs -------------------------------------------------------------------


def test_non_ascii_path_and_query_are_encoded_and_signed_as_sent(server: LocalServer) -> None:
    client = FunctionUrlClient(server.url + "modèles/vin?q=é&z=a b&k=%C3%A9", region=REGION, session=static_session())
    client.predict([{"pH": 3.2}])
    sent = server.only_request()
    assert sent.path == "/mod%C3%A8les/vin?q=%C3%A9&z=a%20b&k=%C3%A9"
    assert_signed_by(sent, "AKID", "SECRET", REGION)


def test_non_ascii_host_is_refused_in_one_line() -> None:
    with pytest.raises(ClientConfigError, match="host name must be ASCII"):
        FunctionUrlClient("https://fonction.exemple.é/", auth="NONE")


def test_predict_command_with_a_non_ascii_url_prints_one_line(server: LocalServer) -> None:
    from click.testing import CliRunner

    from lambda_ml_serve.cli import main

    runner = CliRunner()
    ok = runner.invoke(main, ["predict", server.url + "prédire", "--data", "-", "--no-sign"], input="[]")
    assert ok.exit_code == 0, ok.output
    assert server.only_request().path == "/pr%C3%A9dire"
    bad = runner.invoke(main, ["predict", "http://hôte.example/", "--data", "-", "--no-sign"], input="[]")
    assert bad.exit_code == 1
    assert bad.output.count("\n") == 1 and bad.output.startswith("Error: ") and "Traceback" not in bad.output


# -- finding 12: timeout is a deadline over the whole call ------------------------------------------


class TricklingServer:
    """Reads a request, then answers one byte every ``interval`` seconds (headers, or only the body)."""

    def __init__(self, answer: bytes, *, start_trickling_at: int = 0, interval: float = 0.5) -> None:
        self.answer, self.start, self.interval = answer, start_trickling_at, interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/"

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(self.answer[: self.start])
                for byte in self.answer[self.start :]:
                    if self.stop.wait(self.interval):
                        return
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up, as it should

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{"predictions": []}'


@pytest.mark.parametrize("start", [0, ANSWER.index(b"\r\n\r\n") + 4], ids=["headers", "body"])
def test_a_trickling_server_fails_the_call_at_the_deadline(start: int) -> None:
    trickler = TricklingServer(ANSWER, start_trickling_at=start)
    try:
        started = time.monotonic()
        with pytest.raises(FunctionUrlConnectionError, match=r"no answer within 1.5s"):
            FunctionUrlClient(trickler.url, auth="NONE", timeout=1.5).predict([])
        # The trickle alone would take 19 s or more: the call ended at its deadline, not the server's pace.
        assert time.monotonic() - started < 10
    finally:
        trickler.close()


@pytest.mark.parametrize(
    "headers",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["until-close", "chunked"],
)
def test_headers_then_a_trickle_is_the_timeout_not_a_cut_answer(headers: bytes) -> None:
    """A body without a length ends when the connection does: the deadline's shutdown is not that end.

    Each byte comes before a socket read would time out, so only the deadline's watchdog ends the call.
    """
    trickler = TricklingServer(headers + b"0" * 64, start_trickling_at=len(headers), interval=0.3)
    try:
        with pytest.raises(FunctionUrlConnectionError, match=r"no answer within 1s"):
            FunctionUrlClient(trickler.url, auth="NONE", timeout=1).predict([])
    finally:
        trickler.close()


def test_every_failure_is_a_client_error() -> None:
    trickler = TricklingServer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", interval=0)
    try:
        with pytest.raises(FunctionUrlClientError):  # the server hung up in the middle of the body
            FunctionUrlClient(trickler.url, auth="NONE").predict([])
    finally:
        trickler.close()
