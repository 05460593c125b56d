"""What the Function URL client raises: every failure is a :class:`FunctionUrlClientError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from lambda_ml_serve.errors import LambdaMLServeError

_MAX_DETAILS_SHOWN = 5
# Phrases that changed between Python versions (HTTPStatus), kept short and stable.
_REASONS = {413: "Payload Too Large", 422: "Unprocessable"}


class FunctionUrlClientError(LambdaMLServeError):
    """Base class of everything the client raises."""


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
