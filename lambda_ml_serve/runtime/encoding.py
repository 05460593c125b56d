"""JSON answers: exactly the text of ``json.dumps(payload, separators=(",", ":"), allow_nan=False)``, faster.

A prediction answer is mostly a list of numbers, which json.dumps writes one float at a time (about
4 ms for 10,000). msgspec writes them ten times faster and, for finite floats written without an
exponent, the same shortest round-trip digits. So a top-level list of plain ints and floats (or of
such lists) is encoded by msgspec and kept when its text is plainly numbers in that range; anything
else (other types, NaN, exponents, tiny numbers) is encoded by json.dumps, so the text never changes.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_NUMBERS = frozenset({float, int})
#: Bytes of a list of plain numbers: what json.dumps and msgspec write alike.
_NUMBER_LIST_BYTES = b"0123456789.-,[]"
#: json.dumps writes floats below 1e-4 with an exponent (1e-05), msgspec without (0.00001).
_SMALL = b"0.0000"


def dumps(payload: Any) -> str:
    """The compact JSON text of ``payload``; NaN and infinity raise ValueError (they are not JSON)."""
    if type(payload) is dict and all(type(key) is str for key in payload):
        return "{" + ",".join(f"{encode_basestring_ascii(k)}:{_value(v)}" for k, v in payload.items()) + "}"
    return _value(payload)


def _value(value: Any) -> str:
    if type(value) is str:
        return encode_basestring_ascii(value)
    if type(value) is list and _numbers_only(value):
        try:
            encoded = _encode(value)
        except OverflowError:  # an int beyond 64 bits, which json.dumps writes
            encoded = b"?"
        if not encoded.translate(None, _NUMBER_LIST_BYTES) and _SMALL not in encoded:
            return encoded.decode("ascii")
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _numbers_only(values: list) -> bool:
    """Only ints and floats (not bools, enums or other subclasses), or lists of them."""
    kinds = set(map(type, values))
    return kinds <= _NUMBERS or (kinds == {list} and all(map(_numbers_only, values)))
