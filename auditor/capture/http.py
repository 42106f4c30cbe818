"""HTTP/1.x request and response parsing over reassembled streams (cleartext HTTP).

A parser of the capture source (``reader -> packets -> flows -> parsers -> engine``). The engine
calls ``parse_request`` on the buffered client->server bytes of a flow and ``parse_response``
on the server->client bytes; each returns one message (line, headers, decoded body) and how
many bytes it used, so keep-alive connections yield message after message. Bodies:
Content-Length, chunked, or (responses) up to the end of the connection; Content-Encoding gzip,
deflate, br and zstd are decoded up to ``MAX_DECODED_BODY`` bytes. A body that does not decode
keeps its raw bytes and says why in ``body_error``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

# Decoded body bytes kept: a decompression bomb stops here (body_truncated is set).
MAX_DECODED_BODY = 1 << 20
# A request head (line + headers) longer than this is not HTTP we can use.
MAX_HEAD = 32 * 1024

# Request line: token method, target, HTTP/1.x version (RFC 9112 section 3).
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP/1\.[01])\r?$")
# What the first bytes of a client stream look like when it speaks HTTP/1.x: a method token
# in capitals and a space.
_REQUEST_START = re.compile(rb"[A-Z][A-Z_-]{1,15} ")
_METHOD_PREFIX = re.compile(rb"[A-Z][A-Z_-]{0,15}")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) (\d{3})(?: [^\r\n]*)?\r?$")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(?:;[^\r\n]*)?\r?\n")


class HTTPParseError(ValueError):
    """The stream does not hold a well-formed HTTP/1.x request here."""


@dataclass(slots=True)
class ParsedRequest:
    """One request as read from the stream."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    host: str | None
    body: bytes = b""
    body_truncated: bool = False
    body_error: str | None = None


@dataclass(slots=True)
class RequestParse:
    """``parse_request``'s answer: the request and where the stream goes on."""

    request: ParsedRequest
    consumed: int  # buffered bytes this request used
    skip: int  # further stream bytes (the rest of a cut-off body) to drop before the next one
    in_sync: bool  # False: the next request's start is unknown (chunked body cut off)


def looks_like_http_request(data: bytes | bytearray) -> bool:
    """The client stream starts with a complete HTTP/1.x request line."""
    line_end = data.find(b"\n", 0, MAX_HEAD)
    return line_end >= 0 and _REQUEST_LINE.match(bytes(data[:line_end])) is not None


def may_become_http_request(data: bytes | bytearray) -> bool:
    """Too few bytes to tell yet: no end of line, and they could start a request line."""
    if data.find(b"\n", 0, MAX_HEAD) >= 0 or len(data) > MAX_HEAD:
        return False
    return _REQUEST_START.match(data) is not None or _METHOD_PREFIX.fullmatch(data) is not None


def host_without_port(value: str | None) -> str | None:
    """'example.com:8080' -> 'example.com'; '[2001:db8::1]:80' -> '2001:db8::1'."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0].lower() or None
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.lower() or None


def parse_request(buffer: bytes | bytearray, final: bool) -> RequestParse | None:
    """The request at the start of ``buffer``.

    ``final``: no more bytes will come (flow ended, or the buffer is full): a request whose
    body is incomplete is returned with what there is (``body_truncated``). Otherwise None
    means "wait for more bytes". Raises ``HTTPParseError`` when this is not an HTTP request.
    """
    head = _head(buffer, final, _REQUEST_LINE, "request")
    if head is None:
        return None
    match, headers, body_start = head
    method, target, version = (part.decode("latin-1") for part in match.groups())
    lowered = {name.lower(): value for name, value in reversed(headers)}  # first one wins
    host = host_without_port(lowered.get("host"))
    if host is None and target.startswith(("http://", "https://")):
        host = host_without_port(target.split("/", 3)[2])  # absolute-form (proxy request)
    # A request without Content-Length or chunked coding has no body (RFC 9112 6.3).
    body = _body(buffer, body_start, lowered, final, until_close=False)
    if body is None:
        return None
    request = ParsedRequest(method, target, version, headers, host)
    request.body, request.body_truncated, request.body_error, consumed, skip, in_sync = body
    return RequestParse(request, consumed, skip, in_sync)


@dataclass(slots=True)
class ParsedResponse:
    status: int
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    body_truncated: bool = False
    body_error: str | None = None


@dataclass(slots=True)
class ResponseParse:
    response: ParsedResponse
    consumed: int
    skip: int
    in_sync: bool  # False: the body runs to the end of the connection, or was cut (chunked)


def parse_response(
    buffer: bytes | bytearray, final: bool, request_method: str
) -> ResponseParse | None:
    """The response at the start of a server->client ``buffer`` (same contract as
    ``parse_request``); ``request_method`` decides whether a body follows (HEAD, CONNECT)."""
    head = _head(buffer, final, _STATUS_LINE, "response")
    if head is None:
        return None
    match, headers, body_start = head
    version = match.group(1).decode("latin-1")
    status = int(match.group(2))
    lowered = {name.lower(): value for name, value in reversed(headers)}
    response = ParsedResponse(status, version, headers)
    # RFC 9112 6.3: no body after HEAD, 1xx, 204, 304, or a successful CONNECT.
    if (
        request_method == "HEAD"
        or status < 200
        or status in (204, 304)
        or (request_method == "CONNECT" and status < 300)
    ):
        return ResponseParse(response, body_start, 0, True)
    body = _body(buffer, body_start, lowered, final, until_close=True)
    if body is None:
        return None
    response.body, response.body_truncated, response.body_error, consumed, skip, in_sync = body
    return ResponseParse(response, consumed, skip, in_sync)


def _head(
    buffer: bytes | bytearray, final: bool, first_line: re.Pattern[bytes], what: str
) -> tuple[re.Match[bytes], list[tuple[str, str]], int] | None:
    """(first-line match, headers, offset of the body) of the message at the buffer's start."""
    head_end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    separator = 4
    if head_end < 0:
        # Bare-LF line endings are tolerated (RFC 9112 section 2.2).
        head_end = buffer.find(b"\n\n", 0, MAX_HEAD + 2)
        separator = 2
    if head_end < 0:
        first_line_end = buffer.find(b"\n")
        if first_line_end >= 0 and not first_line.match(bytes(buffer[:first_line_end])):
            raise HTTPParseError(f"not an HTTP/1.x {what} line")
        if len(buffer) > MAX_HEAD:
            raise HTTPParseError(f"{what} head longer than {MAX_HEAD} bytes")
        if final and buffer:
            raise HTTPParseError(f"stream ends inside a {what} head")
        return None
    lines = bytes(buffer[:head_end]).split(b"\n")
    match = first_line.match(lines[0])
    if match is None:
        raise HTTPParseError(f"not an HTTP/1.x {what} line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip().decode("latin-1"))
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise HTTPParseError(f"malformed header line {line[:40]!r}")
        headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return match, headers, head_end + separator


def _body(
    buffer: bytes | bytearray,
    body_start: int,
    lowered: dict[str, str],
    final: bool,
    until_close: bool,
) -> tuple[bytes, bool, str | None, int, int, bool] | None:
    """(decoded body, truncated, decode error, consumed, skip, in sync) or None: wait.

    ``until_close``: without Content-Length or chunked coding the body runs to the end of the
    connection (responses); otherwise there is none (requests).
    """
    transfer_encoding = lowered.get("transfer-encoding", "").lower()
    length_text = lowered.get("content-length")
    if "chunked" in transfer_encoding:
        raw, end, complete = _dechunk(buffer, body_start)
        if not complete and not final:
            return None
        truncated, consumed, skip, in_sync = not complete, end, 0, complete
    elif length_text is None and until_close:
        if not final:
            return None
        raw = bytes(buffer[body_start:])
        truncated, consumed, skip, in_sync = False, len(buffer), 0, False
    else:
        try:
            length = int(length_text) if length_text is not None else 0
        except ValueError:
            raise HTTPParseError(f"bad Content-Length {length_text!r}") from None
        if length < 0:
            raise HTTPParseError(f"bad Content-Length {length_text!r}")
        available = len(buffer) - body_start
        if available < length and not final:
            return None
        taken = min(length, available)
        raw = bytes(buffer[body_start : body_start + taken])
        truncated, consumed, skip, in_sync = (
            taken < length,
            body_start + taken,
            length - taken,
            True,
        )
    body, decoded_truncated, error = decode_body(raw, lowered.get("content-encoding", ""))
    return body, truncated or decoded_truncated, error, consumed, skip, in_sync


def _dechunk(buffer: bytes | bytearray, start: int) -> tuple[bytes, int, bool]:
    """(body so far, offset after it, complete?) of a chunked body starting at ``start``."""
    parts: list[bytes] = []
    position = start
    while True:
        match = _CHUNK_SIZE.match(buffer, position)
        if match is None:
            if buffer.find(b"\n", position) >= 0 or len(buffer) - position > 64:
                raise HTTPParseError("malformed chunk size line")
            return b"".join(parts), position, False
        size = int(match.group(1), 16)
        data_start = match.end()
        if size == 0:
            # Trailer section: header lines up to an empty line.
            trailer_end = buffer.find(b"\r\n", data_start)
            while trailer_end >= 0 and trailer_end != data_start:
                data_start = trailer_end + 2
                trailer_end = buffer.find(b"\r\n", data_start)
            if trailer_end < 0:
                return b"".join(parts), position, False
            return b"".join(parts), trailer_end + 2, True
        chunk = bytes(buffer[data_start : data_start + size])
        parts.append(chunk)
        if len(chunk) < size:
            return b"".join(parts), len(buffer), False
        position = data_start + size
        if buffer[position : position + 2] == b"\r\n":
            position += 2
        elif buffer[position : position + 1] == b"\n":
            position += 1
        elif len(buffer) - position >= 2:
            raise HTTPParseError("chunk not followed by CRLF")
        else:
            return b"".join(parts), position, False


def decode_body(raw: bytes, content_encoding: str) -> tuple[bytes, bool, str | None]:
    """(decoded body, cut at MAX_DECODED_BODY?, error) for a Content-Encoding list.

    Encodings are undone last-applied first. A body cut short by the capture decodes to its
    prefix without an error. On an error the raw bytes are returned with the reason.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    data = raw
    truncated = False
    for coding in reversed(codings):
        if coding == "identity":
            continue
        try:
            data, cut = _decode_one(data, coding)
        except _UnknownCoding:
            return raw, False, f"{coding}: unsupported content encoding"
        except Exception as exc:  # each decompressor has its own error types
            return raw, False, f"{coding}: {exc or type(exc).__name__}"
        truncated = truncated or cut
    return data, truncated, None


class _UnknownCoding(Exception):
    pass


def _decode_one(data: bytes, coding: str) -> tuple[bytes, bool]:
    if coding in ("gzip", "x-gzip"):
        return _zlib_decode(data, zlib.MAX_WBITS | 16)
    if coding == "deflate":
        # RFC 9110 says zlib-wrapped, but many servers send raw deflate.
        try:
            return _zlib_decode(data, zlib.MAX_WBITS)
        except zlib.error:
            return _zlib_decode(data, -zlib.MAX_WBITS)
    if coding == "br":
        return _brotli_decode(data)
    if coding == "zstd":
        return _zstd_decode(data)
    raise _UnknownCoding(coding)


def _zlib_decode(data: bytes, wbits: int) -> tuple[bytes, bool]:
    decompressor = zlib.decompressobj(wbits)
    out = decompressor.decompress(data, MAX_DECODED_BODY)
    # Input left over means the bound stopped it (a truncated stream simply ends early).
    return out, bool(decompressor.unconsumed_tail)


def _brotli_decode(data: bytes) -> tuple[bytes, bool]:
    import brotli

    decompressor = brotli.Decompressor()
    out = bytearray()
    # Feed in small pieces so a bomb stops near the bound instead of after inflating it all.
    for start in range(0, len(data), 256):
        out += decompressor.process(data[start : start + 256])
        if len(out) >= MAX_DECODED_BODY:
            return bytes(out[:MAX_DECODED_BODY]), True
    return bytes(out), False


def _zstd_decode(data: bytes) -> tuple[bytes, bool]:
    import io

    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data))
    out = bytearray()
    try:
        while len(out) <= MAX_DECODED_BODY:
            piece = reader.read(65536)
            if not piece:
                break
            out += piece
    except zstandard.ZstdError:
        if not out:
            raise
        # A body cut by the capture: keep the decoded prefix.
    if len(out) > MAX_DECODED_BODY:
        return bytes(out[:MAX_DECODED_BODY]), True
    return bytes(out), False
