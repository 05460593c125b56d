"""The one error type the runtime answers with, and its JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Client-visible error types and their HTTP status codes.
STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "validation_error": 422,
    "internal_error": 500,
}


@dataclass
class ApiError(Exception):
    """An error answered to the client; its message never echoes the payload."""

    type: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    #: How many rows the request carried (0 when it got no further than its body), for the log line.
    rows: int = 0

    @property
    def status(self) -> int:
        return STATUS[self.type]

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message, "details": self.details}}


def detail(row: int | None, field: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "field": field, "message": message}
