"""The one error type the runtime answers with, its JSON shape, and the rules that keep it safe.

Whatever raises an :class:`ApiError`, its answer is bounded: the message and every detail are cut to a
fixed length with control characters escaped, and details are dropped once the JSON body would pass
:data:`MAX_ERROR_BYTES`. Submitted values never reach an answer: framework messages are written from
the error type and counts, field names are the only submitted text shown (cut to
:data:`MAX_FIELD_CHARS`), and messages written by plugin validators pass through :func:`plugin_message`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Client-visible error types and their HTTP status codes.
STATUS = {
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "internal_error": 500,
}
#: No error body is larger (bytes of the JSON body); a Function URL answer may be 6 MB at most.
MAX_ERROR_BYTES = 16 * 1024
#: A field name (including an unknown key a client sent) is cut to this many characters.
MAX_FIELD_CHARS = 64
#: A message (the error's own or a detail's) is cut to this many characters.
MAX_MESSAGE_CHARS = 300
#: What replaces a quoted span in a plugin's message: quotes are where validators put the input.
ELIDED = "…"
WITHHELD = "invalid value (the validator's message is withheld: it may contain the submitted value)"

# A quote opens a span unless it is an apostrophe inside a word (doesn't); an unclosed one runs to the end.
_QUOTED = re.compile(
    r"(?<!\w)'.*?'(?!\w)|(?<!\w)'.*|\".*?\"|\".*|`.*?`|`.*|\u2018.*?\u2019|\u2018.*|\u201c.*?\u201d|\u201c.*", re.S
)
_TOKENS = re.compile(r"[^\W_]+(?:[._+-][^\W_]+)*")
#: Submitted strings at least this long count as echoed when the message contains them anywhere;
#: shorter ones (and numbers) only as a whole token, so "1" does not withhold "at most 10 rows".
_SUBSTRING_MIN = 4
#: Message tokens this long count as echoed when found inside a submitted string (a cut value).
_FRAGMENT_MIN = 8
_SCAN_ITEMS = 1024
_SCAN_CHARS = 16 * 1024


@dataclass
class ApiError(Exception):
    """An error answered to the client; see the module docstring for what bounds its answer."""

    type: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    #: How many problems ``message`` counts, when more than the details listed (e.g. 60 errors, 50 shown).
    total: int | None = None
    #: How many rows the request carried (0 when it got no further than its body), for the log line.
    rows: int = 0

    @property
    def status(self) -> int:
        return STATUS[self.type]

    def to_dict(self) -> dict[str, Any]:
        """The JSON body, within :data:`MAX_ERROR_BYTES` whatever the message and details hold."""
        message = bounded_text(self.message, MAX_MESSAGE_CHARS - 40)  # room for the suffix below
        budget = MAX_ERROR_BYTES - _json_len({"error": {"type": self.type, "message": message, "details": []}}) - 40
        shown: list[dict[str, Any]] = []
        for item in map(_bounded_detail, self.details):
            budget -= _json_len(item) + 1
            if budget < 0:
                break
            shown.append(item)
        if len(shown) < max(self.total or 0, len(self.details)):
            message += f"; showing the first {len(shown)}"
        return {"error": {"type": self.type, "message": message, "details": shown}}


def _json_len(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def detail(row: int | None, field: str | None, message: str) -> dict[str, Any]:
    """One line of an error answer: which row, which field (None for the whole row), what is wrong."""
    return {"row": row, "field": field, "message": message}


def _bounded_detail(item: dict[str, Any]) -> dict[str, Any]:
    row, name = item.get("row"), item.get("field")
    return detail(
        row if isinstance(row, int) else None,
        None if name is None else bounded_text(str(name), MAX_FIELD_CHARS),
        bounded_text(str(item.get("message", "")), MAX_MESSAGE_CHARS),
    )


def bounded_text(text: str, limit: int) -> str:
    """``text`` with control and other unprintable characters escaped, cut to ``limit`` characters."""
    text = text[: limit * 2]  # escaping only lengthens, so this is enough to work on
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + ELIDED


def field_name(loc: tuple[Any, ...]) -> str | None:
    """A pydantic location as a dotted field name, bounded (unknown keys are client text)."""
    return bounded_text(".".join(str(part) for part in loc), MAX_FIELD_CHARS) if loc else None


def plugin_message(message: str, submitted: Any) -> str:
    """A plugin validator's message, made safe to answer: it must not carry the submitted value.

    Quoted spans (where validators put values: ``f"{value!r}"``) are elided, and a message that still
    contains any of the submitted values (or a long piece of one) is withheld altogether.
    """
    message = _QUOTED.sub(ELIDED, message[: MAX_MESSAGE_CHARS * 4]).strip()
    folded = message.casefold()
    tokens = set(_TOKENS.findall(folded))
    texts = list(_submitted_texts(submitted))
    for text in texts:
        if text in tokens or (len(text) >= _SUBSTRING_MIN and text in folded):
            return WITHHELD
    haystack = "\x00".join(t for t in texts if len(t) >= _FRAGMENT_MIN)[:_SCAN_CHARS]
    if haystack and any(len(t) >= _FRAGMENT_MIN and t in haystack for t in tokens):
        return WITHHELD
    return bounded_text(message, MAX_MESSAGE_CHARS) if message else WITHHELD


def _submitted_texts(value: Any) -> Iterator[str]:
    """The values (not keys: those are field names) inside ``value`` as text, casefolded and bounded."""
    stack, seen = [(value, 0)], 0
    while stack and seen < _SCAN_ITEMS:
        item, depth = stack.pop()
        seen += 1
        if isinstance(item, dict):
            if depth < 3:
                stack.extend((v, depth + 1) for v in list(item.values())[:_SCAN_ITEMS])
        elif isinstance(item, list | tuple):
            if depth < 3:
                stack.extend((v, depth + 1) for v in item[:_SCAN_ITEMS])
        elif isinstance(item, bool) or item is None:
            continue  # "true"/"none" are words of ordinary messages, not secrets
        elif isinstance(item, str | bytes | int | float):
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            text = text[:_SCAN_CHARS].casefold().strip()
            if text:
                yield text
            if isinstance(item, int | float):
                # A number reappears with its sign apart ("-1" as "- 1" or "1") or 3.0 as 3.
                number = abs(item)
                yield str(number)
                if isinstance(number, float) and number.is_integer():
                    yield str(int(number))
