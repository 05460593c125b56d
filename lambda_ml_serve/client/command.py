"""What ``lambda-ml-serve predict URL --data FILE|-`` does, apart from reading the file and printing."""

from __future__ import annotations

import json
from typing import Any

from lambda_ml_serve.client.errors import ClientConfigError
from lambda_ml_serve.client.function_url import FunctionUrlClient


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
