"""Content codings: compressed request bodies in, gzip answers out, both bounded.

A request body announced as ``Content-Encoding: gzip`` (or ``x-gzip``) or ``deflate`` is inflated in
steps with a cap: at most :data:`MAX_DECODED_BYTES` come out (the 6 MB a plain body may have), and
the decompressor never produces more than one byte beyond it, so a zip bomb costs the time and memory
of 6 MB, not of what it would expand to. Codings may be stacked (``gzip, gzip``) up to
:data:`MAX_CODINGS`; each layer obeys the same cap.

An answer is gzip-compressed when the request accepts gzip (``Accept-Encoding``) and the answer's
body is at least :data:`COMPRESS_MIN_BYTES` long: below that, compression saves less than the base64
a Function URL needs for a binary body adds back.
"""

from __future__ import annotations

import zlib

from lambda_ml_serve.runtime.errors import ApiError

#: A decoded body may be as large as a plain one: the Function URL's 6 MB (6 MiB) request limit.
MAX_DECODED_BYTES = 6 * 1024 * 1024
#: Stacked codings beyond this are refused (a body compressed twice gains nothing a third time).
MAX_CODINGS = 2
#: Answers shorter than this are sent as they are.
COMPRESS_MIN_BYTES = 4096
#: zlib level 1: on 10,000 predictions (180 KB) 87 KB in ~11 ms, where level 5 gives 79 KB in ~35 ms
#: (bench/clients.py's machine); the function's CPU time is what a caller pays for.
COMPRESS_LEVEL = 1
_STEP = 256 * 1024
#: zlib's window bits: gzip header and trailer, zlib header (HTTP's "deflate"), or raw deflate.
_GZIP, _ZLIB, _RAW = 31, 15, -15
_CODINGS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}
TOO_LARGE = (
    f"the decompressed body is larger than {MAX_DECODED_BYTES} bytes, the limit of a request; "
    "split the rows over several requests"
)


def codings_of(header: str | None) -> list[str]:
    """The content codings a ``Content-Encoding`` header lists, in the order they were applied."""
    if not header:
        return []
    codings = [c.strip().lower() for c in header.split(",")]
    return [c for c in codings if c and c != "identity"]


def decode_body(body: bytes, header: str | None) -> bytes:
    """``body`` with the codings of its ``Content-Encoding`` header undone, or ApiError (400, 413, 415)."""
    codings = codings_of(header)
    if not codings:
        return body
    unknown = [c for c in codings if c not in _CODINGS]
    if unknown:
        raise ApiError(
            "unsupported_media_type",
            "the request's Content-Encoding is not one this function decodes; send gzip, deflate or no coding",
        )
    if len(codings) > MAX_CODINGS:
        raise ApiError("bad_request", f"the body is compressed more than {MAX_CODINGS} times; compress it once")
    for coding in reversed(codings):  # the last coding listed was applied last
        body = _inflate(body, coding)
    return body


def _inflate(body: bytes, coding: str) -> bytes:
    wbits = _CODINGS[coding]
    try:
        return _inflate_bounded(body, wbits)
    except zlib.error:
        if coding != "deflate":
            raise ApiError("bad_request", f"the body is announced as {coding} but is not valid {coding} data") from None
    # Some clients send "deflate" as raw deflate data, without zlib's header (as browsers accept it).
    try:
        return _inflate_bounded(body, _RAW)
    except zlib.error:
        raise ApiError("bad_request", "the body is announced as deflate but is not valid deflate data") from None


def _inflate_bounded(body: bytes, wbits: int) -> bytes:
    """Inflate ``body`` (gzip: every member) producing at most MAX_DECODED_BYTES, else 413."""
    out: list[bytes] = []
    size = 0
    data = body
    while True:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            # max_length keeps each step's output bounded, whatever the compression ratio.
            chunk = inflater.decompress(data, min(_STEP, MAX_DECODED_BYTES + 1 - size))
            size += len(chunk)
            if size > MAX_DECODED_BYTES:
                raise ApiError("payload_too_large", TOO_LARGE)
            out.append(chunk)
            progress = chunk or len(inflater.unconsumed_tail) < len(data)
            data = inflater.unconsumed_tail
            if not progress:
                break  # no input left and nothing pending: the data ends early
        if not inflater.eof:
            raise ApiError("bad_request", "the compressed body is truncated: it ends before its compressed data does")
        data = inflater.unused_data
        if wbits != _GZIP or not data:
            if data:
                raise ApiError("bad_request", "the compressed body has bytes after the end of its compressed data")
            return b"".join(out)
        # gzip allows several members one after another (RFC 1952); each is inflated in turn.


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (by name or ``*``, with a q-value above 0)."""
    header = (header or "").lower()
    if "gzip" not in header and "*" not in header:
        return False
    accepted: dict[str, bool] = {}
    for part in header.split(","):
        coding, _, params = part.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        accepted[coding.strip()] = q > 0
    return accepted.get("gzip", accepted.get("x-gzip", accepted.get("*", False)))


def gzip_bytes(body: bytes) -> bytes:
    """``body`` as a gzip member (without a file name or time stamp, so equal bodies compress equally)."""
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, _GZIP)
    return compressor.compress(body) + compressor.flush()
