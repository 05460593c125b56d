"""Call a deployed model's Lambda Function URL from Python, signing requests with SigV4.

Developer tooling: the serving path never imports it. ``signing`` is SigV4 (botocore's ``SigV4Auth``),
``transport`` sends through urllib3 with a deadline, ``function_url`` is the client, ``command`` is the
CLI's ``predict``; botocore and urllib3 are imported on the first call, so importing this stays fast::

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

from lambda_ml_serve.client.command import predict_command_impl
from lambda_ml_serve.client.errors import (
    ClientConfigError,
    FunctionUrlClientError,
    FunctionUrlConnectionError,
    FunctionUrlError,
)
from lambda_ml_serve.client.function_url import ROLE_SESSION_NAME, FunctionUrlClient
from lambda_ml_serve.client.signing import region_from_url, sign_request

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
