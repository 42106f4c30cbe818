"""TLS handshake parsing: ClientHello, ServerHello, Certificate and alerts from stream prefixes.

    traffic -> source -> [observations] -> detectors -> ...

The capture engine calls these functions on the first bytes of each reassembled TCP direction;
the mitmproxy adapter calls ``parse_client_hello`` on the raw ClientHello body it is given; the
QUIC parser (``auditor.capture.quic``) calls it on the CRYPTO stream of an Initial packet. The
results are the ``ClientHello`` / ``ServerHello`` / ``Certificate`` types of ``auditor.model``,
which the source wraps in a ``TLSHandshake`` observation.

Only the cleartext part of a handshake is read: everything after ChangeCipherSpec or the first
application-data record is encrypted and ignored. Code points stay IANA numbers; turning them
into names is the job of ``signatures/`` (see ``auditor.signatures``).

Errors: a stream that merely ends early is not an error (``None`` / a partial result); bytes that
cannot be a valid handshake raise ``TLSParseError`` whose message says what was wrong and where.

Speed: ``parse_client_hello`` first tries a flat parser that reads the one body buffer by offset
(no reader or per-extension objects); anything it does not fully accept is parsed again by the
bounds-checked reader, which raises the precise error. Both accept exactly the same input and
build the same ``ClientHello``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from auditor.capture.x509 import parse_certificate
from auditor.enrich.fingerprints import ja3, ja4
from auditor.model import Certificate, ClientHello, ServerHello

# Record layer content types (RFC 8446 §5.1).
CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23
CONTENT_HEARTBEAT = 24
CONTENT_TYPES = (
    CONTENT_CHANGE_CIPHER_SPEC,
    CONTENT_ALERT,
    CONTENT_HANDSHAKE,
    CONTENT_APPLICATION_DATA,
    CONTENT_HEARTBEAT,
)

# Handshake message types (RFC 8446 §4).
HANDSHAKE_CLIENT_HELLO = 1
HANDSHAKE_SERVER_HELLO = 2
HANDSHAKE_CERTIFICATE = 11

# Extension code points this module looks inside (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B

# A record fragment may not exceed 2^14 bytes, plus 2048 of expansion when protected
# (RFC 5246 §6.2.3); anything larger is not TLS.
MAX_RECORD_LENGTH = 2**14 + 2048
# A ClientHello is far smaller than this; the bound stops a bogus length from making us wait
# for megabytes that will never be a handshake. Servers get more room: certificate chains.
MAX_CLIENT_HANDSHAKE_MESSAGE = 2**17
MAX_SERVER_HANDSHAKE_MESSAGE = 2**20

# ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3): SHA-256("HelloRetryRequest").
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

# Alert levels and descriptions (RFC 8446 §6, RFC 5246 §7.2): protocol vocabulary, used to
# make ``ServerParse.alert`` readable.
ALERT_LEVELS = {1: "warning", 2: "fatal"}
ALERT_DESCRIPTIONS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}

# SSLv2 (draft-hickman-netscape-ssl-00) CLIENT-HELLO message type; used by old clients and by
# "SSLv2-compatible" hellos that offer SSL 3.0 / TLS.
SSL2_CLIENT_HELLO = 1
SSL2_VERSION = 0x0002


class TLSParseError(ValueError):
    """The bytes are not a well-formed TLS handshake; the message says what was wrong."""


class _Incomplete(Exception):
    """Internal: the stream ended before the structure did (not an error for a prefix)."""


class _Reader:
    """Bounds-checked big-endian reads over one structure, with errors naming that structure."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int, field_name: str) -> bytes:
        if count > self.remaining:
            raise TLSParseError(
                f"{self.what} {field_name} length {count} exceeds remaining {self.remaining} bytes"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self, size: int, field_name: str) -> int:
        return int.from_bytes(self.take(size, field_name), "big")

    def vector(self, length_size: int, field_name: str) -> bytes:
        """A length-prefixed vector (RFC 8446 §3.4)."""
        if length_size > self.remaining:
            raise TLSParseError(
                f"{self.what} {field_name} length field needs {length_size} bytes, "
                f"{self.remaining} remain"
            )
        length = self.uint(length_size, field_name)
        return self.take(length, field_name)


def _extensions(block: bytes, message: str) -> Iterator[tuple[int, bytes]]:
    """(type, data) of each extension in an extensions block, in wire order."""
    pos = 0
    while pos < len(block):
        if len(block) - pos < 4:
            raise TLSParseError(
                f"{message} extension header needs 4 bytes, {len(block) - pos} remain"
            )
        ext_type = int.from_bytes(block[pos : pos + 2], "big")
        length = int.from_bytes(block[pos + 2 : pos + 4], "big")
        remaining = len(block) - pos - 4
        if length > remaining:
            raise TLSParseError(
                f"{message} extension 0x{ext_type:04x} length {length} exceeds remaining "
                f"{remaining} bytes"
            )
        yield ext_type, block[pos + 4 : pos + 4 + length]
        pos += 4 + length


def _uint16_list(data: bytes, what: str) -> list[int]:
    if len(data) % 2:
        raise TLSParseError(f"{what} has odd length {len(data)}")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


# --- detection -------------------------------------------------------------------------------


def _is_sslv2_client_hello(data: bytes) -> bool:
    """An SSLv2-format CLIENT-HELLO: 2-byte header with the high bit set, type 1, sane version."""
    if len(data) < 5 or not data[0] & 0x80:
        return False
    length = ((data[0] & 0x7F) << 8) | data[1]
    version = (data[3] << 8) | data[4]
    return (
        data[2] == SSL2_CLIENT_HELLO
        and (version == SSL2_VERSION or 0x0300 <= version <= 0x0304)
        and length >= 9
    )


def looks_like_tls(data: bytes) -> bool:
    """Do the first bytes of a stream look like a TLS handshake record (or an SSLv2 hello)?

    Needs 5 bytes (one record header); fewer is never TLS enough to say so.
    """
    if len(data) < 5:
        return False
    if data[0] == CONTENT_HANDSHAKE and data[1] == 3 and data[2] <= 4:
        length = (data[3] << 8) | data[4]
        return 0 < length <= MAX_RECORD_LENGTH
    return _is_sslv2_client_hello(data)


# --- records and handshake messages ----------------------------------------------------------


@dataclass(slots=True)
class _Record:
    content_type: int
    version: int
    fragment: bytes


def _records(data: bytes, side: str) -> Iterator[_Record]:
    """Complete records from the start of ``data``; stops silently at a truncated one."""
    pos = 0
    while len(data) - pos >= 5:
        content_type = data[pos]
        version = (data[pos + 1] << 8) | data[pos + 2]
        length = (data[pos + 3] << 8) | data[pos + 4]
        if content_type not in CONTENT_TYPES or data[pos + 1] != 3:
            raise TLSParseError(
                f"{side} record at offset {pos}: content type {content_type} version "
                f"0x{version:04x} is not a TLS record"
            )
        if length > MAX_RECORD_LENGTH:
            raise TLSParseError(
                f"{side} record at offset {pos}: length {length} exceeds the TLS maximum "
                f"{MAX_RECORD_LENGTH}"
            )
        if length == 0 and content_type in (CONTENT_HANDSHAKE, CONTENT_ALERT):
            # RFC 8446 §5.1: zero-length handshake and alert fragments are forbidden.
            raise TLSParseError(
                f"{side} record at offset {pos}: zero-length content type {content_type}"
            )
        if len(data) - pos - 5 < length:
            return
        yield _Record(content_type, version, data[pos + 5 : pos + 5 + length])
        pos += 5 + length


def _handshake_messages(buffer: bytearray, side: str) -> Iterator[tuple[int, bytes]]:
    """Pop complete handshake messages (type, body) off the front of ``buffer``."""
    while len(buffer) >= 4:
        msg_type = buffer[0]
        length = int.from_bytes(buffer[1:4], "big")
        limit = MAX_CLIENT_HANDSHAKE_MESSAGE if side == "client" else MAX_SERVER_HANDSHAKE_MESSAGE
        if length > limit:
            raise TLSParseError(
                f"{side} handshake message type {msg_type} length {length} is implausibly large"
            )
        if len(buffer) < 4 + length:
            return
        body = bytes(buffer[4 : 4 + length])
        del buffer[: 4 + length]
        yield msg_type, body


# --- ClientHello -----------------------------------------------------------------------------


def parse_client_hello(handshake_body: bytes, record_version: int = 0x0301) -> ClientHello:
    """Parse a ClientHello from its handshake body (after the 4-byte handshake header).

    ``record_version`` is what the record layer said (0 when there was none, as in QUIC).
    The JA4 (transport "t") and JA3 fingerprints are filled in.
    """
    hello = _parse_client_hello_flat(handshake_body, record_version)
    if hello is None:
        # Malformed (or unusual enough to doubt): the checked reader gives the exact error.
        hello = _parse_client_hello_checked(handshake_body, record_version)
    hello.ja4, hello.ja4_r = ja4(hello)
    hello.ja3, hello.ja3_hash = ja3(hello)
    return hello


def _uint16_values(data: bytes, start: int, length: int) -> list[int] | None:
    """``length`` bytes at ``start`` as big-endian 16-bit values; None for an odd length."""
    if length & 1:
        return None
    return list(struct.unpack_from(f">{length >> 1}H", data, start))


def _parse_client_hello_flat(body: bytes, record_version: int) -> ClientHello | None:
    """The ClientHello read by offsets over ``body``; None when anything is out of bounds.

    Mirrors ``_parse_client_hello_checked`` field by field (same acceptance, same result); it
    only gives up instead of naming the error.
    """
    end = len(body)
    if end < 35:
        return None
    legacy_version = (body[0] << 8) | body[1]
    session_length = body[34]
    pos = 35 + session_length
    if session_length > 32 or pos + 2 > end:
        return None
    cipher_length = (body[pos] << 8) | body[pos + 1]
    pos += 2
    if cipher_length == 0 or pos + cipher_length > end:
        return None
    cipher_suites = _uint16_values(body, pos, cipher_length)
    if cipher_suites is None:
        return None
    pos += cipher_length
    if pos >= end:
        return None
    compression_length = body[pos]
    pos += 1 + compression_length
    if compression_length == 0 or pos > end:
        return None
    extensions: list[int] = []
    hello = ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        cipher_suites=cipher_suites,
        extensions=extensions,
    )
    if pos == end:
        return hello  # no extensions (SSL 3.0 / early TLS 1.0)
    if pos + 2 > end:
        return None
    block_end = pos + 2 + ((body[pos] << 8) | body[pos + 1])
    if block_end > end:
        return None
    pos += 2
    while pos < block_end:
        if pos + 4 > block_end:
            return None
        ext_type = (body[pos] << 8) | body[pos + 1]
        data_start = pos + 4
        data_end = data_start + ((body[pos + 2] << 8) | body[pos + 3])
        if data_end > block_end:
            return None
        extensions.append(ext_type)
        if ext_type == EXT_SERVER_NAME:
            if data_end > data_start and not _flat_server_name(hello, body, data_start, data_end):
                return None
        elif ext_type == EXT_ALPN:
            if not _flat_alpn(hello, body, data_start, data_end):
                return None
        elif ext_type in (EXT_SIGNATURE_ALGORITHMS, EXT_SUPPORTED_GROUPS):
            if data_start + 2 > data_end:
                return None
            list_length = (body[data_start] << 8) | body[data_start + 1]
            if data_start + 2 + list_length > data_end:
                return None
            values = _uint16_values(body, data_start + 2, list_length)
            if values is None:
                return None
            if ext_type == EXT_SIGNATURE_ALGORITHMS:
                hello.signature_algorithms = values
            else:
                hello.supported_groups = values
        elif ext_type in (EXT_EC_POINT_FORMATS, EXT_SUPPORTED_VERSIONS):
            if data_start + 1 > data_end:
                return None
            list_length = body[data_start]
            if data_start + 1 + list_length > data_end:
                return None
            if ext_type == EXT_EC_POINT_FORMATS:
                hello.ec_point_formats = list(body[data_start + 1 : data_start + 1 + list_length])
            else:
                versions = _uint16_values(body, data_start + 1, list_length)
                if versions is None:
                    return None
                hello.supported_versions = versions
        pos = data_end
    return hello


def _flat_server_name(hello: ClientHello, body: bytes, start: int, end: int) -> bool:
    """Read a non-empty SNI extension at body[start:end]; False when it is malformed."""
    if start + 2 > end:
        return False
    list_end = start + 2 + ((body[start] << 8) | body[start + 1])
    if list_end > end:
        return False
    pos = start + 2
    while pos < list_end:
        if pos + 3 > list_end:
            return False
        name_type = body[pos]
        name_end = pos + 3 + ((body[pos + 1] << 8) | body[pos + 2])
        if name_end > list_end:
            return False
        if name_type == 0 and hello.server_name is None:
            # Host names are ASCII (RFC 6066 §3); keep odd bytes visible, never fail on them.
            hello.server_name = body[pos + 3 : name_end].decode("ascii", errors="backslashreplace")
        pos = name_end
    return True


def _flat_alpn(hello: ClientHello, body: bytes, start: int, end: int) -> bool:
    """Read an ALPN extension at body[start:end]; False when it is malformed."""
    if start + 2 > end:
        return False
    list_end = start + 2 + ((body[start] << 8) | body[start + 1])
    if list_end > end:
        return False
    pos = start + 2
    alpn = hello.alpn
    while pos < list_end:
        name_end = pos + 1 + body[pos]
        if name_end > list_end:
            return False
        # latin-1 keeps the exact bytes recoverable (JA4 needs them).
        alpn.append(body[pos + 1 : name_end].decode("latin-1"))
        pos = name_end
    return True


def _parse_client_hello_checked(handshake_body: bytes, record_version: int) -> ClientHello:
    """The ClientHello read with bounds-checked readers: raises a ``TLSParseError`` naming
    the field that is wrong. Fingerprints are left to the caller."""
    reader = _Reader(handshake_body, "ClientHello")
    legacy_version = reader.uint(2, "legacy_version")
    reader.take(32, "random")
    session_id = reader.vector(1, "session_id")
    if len(session_id) > 32:
        raise TLSParseError(f"ClientHello session_id length {len(session_id)} exceeds 32")
    cipher_bytes = reader.vector(2, "cipher_suites")
    if not cipher_bytes:
        raise TLSParseError("ClientHello offers no cipher suites")
    cipher_suites = _uint16_list(cipher_bytes, "ClientHello cipher_suites")
    if not reader.vector(1, "compression_methods"):
        raise TLSParseError("ClientHello offers no compression methods")
    hello = ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        cipher_suites=cipher_suites,
        extensions=[],
    )
    # Extensions are optional (absent in SSL 3.0 / early TLS 1.0 hellos).
    if reader.remaining:
        for ext_type, ext_data in _extensions(reader.vector(2, "extensions"), "ClientHello"):
            hello.extensions.append(ext_type)
            _read_client_extension(hello, ext_type, ext_data)
    return hello


def _read_client_extension(hello: ClientHello, ext_type: int, data: bytes) -> None:
    """Fill the ClientHello fields an extension carries; unknown extensions are only listed."""
    what = f"ClientHello extension 0x{ext_type:04x}"
    if ext_type == EXT_SERVER_NAME:
        if not data:  # an empty SNI extension is legal in a ServerHello echo; tolerate it
            return
        names = _Reader(_Reader(data, what).vector(2, "server_name_list"), what)
        while names.remaining:
            name_type = names.uint(1, "name_type")
            name = names.vector(2, "host_name")
            if name_type == 0 and hello.server_name is None:
                # Host names are ASCII (RFC 6066 §3); keep odd bytes visible, never fail on them.
                hello.server_name = name.decode("ascii", errors="backslashreplace")
    elif ext_type == EXT_ALPN:
        protocols = _Reader(_Reader(data, what).vector(2, "protocol_name_list"), what)
        while protocols.remaining:
            # latin-1 maps every byte to one character, so the exact bytes can be recovered
            # (JA4 needs them) even for non-ASCII protocol ids.
            hello.alpn.append(protocols.vector(1, "protocol_name").decode("latin-1"))
    elif ext_type == EXT_SIGNATURE_ALGORITHMS:
        hello.signature_algorithms = _uint16_list(
            _Reader(data, what).vector(2, "supported_signature_algorithms"), what
        )
    elif ext_type == EXT_SUPPORTED_GROUPS:
        hello.supported_groups = _uint16_list(
            _Reader(data, what).vector(2, "named_group_list"), what
        )
    elif ext_type == EXT_EC_POINT_FORMATS:
        hello.ec_point_formats = list(_Reader(data, what).vector(1, "ec_point_format_list"))
    elif ext_type == EXT_SUPPORTED_VERSIONS:
        hello.supported_versions = _uint16_list(_Reader(data, what).vector(1, "versions"), what)


def _parse_sslv2_client_hello(data: bytes) -> ClientHello | None:
    """An SSLv2-format CLIENT-HELLO (also sent by old clients offering SSL 3.0 / TLS 1.0).

    Cipher specs are 3 bytes: those with a zero first byte are TLS suites and are kept as their
    16-bit IANA value; SSLv2-only kinds keep their 24-bit value (always > 0xFFFF).
    """
    length = ((data[0] & 0x7F) << 8) | data[1]
    if len(data) < 2 + length:
        return None
    reader = _Reader(data[2 : 2 + length], "SSLv2 ClientHello")
    reader.uint(1, "msg_type")
    version = reader.uint(2, "version")
    spec_length = reader.uint(2, "cipher_specs length")
    session_length = reader.uint(2, "session_id length")
    challenge_length = reader.uint(2, "challenge length")
    if spec_length % 3 or spec_length == 0:
        raise TLSParseError(f"SSLv2 ClientHello cipher_specs length {spec_length} is not 3*n > 0")
    specs = reader.take(spec_length, "cipher_specs")
    reader.take(session_length, "session_id")
    reader.take(challenge_length, "challenge")
    suites = [int.from_bytes(specs[i : i + 3], "big") for i in range(0, spec_length, 3)]
    hello = ClientHello(
        record_version=SSL2_VERSION,
        legacy_version=version,
        cipher_suites=suites,
        extensions=[],
    )
    hello.ja4, hello.ja4_r = ja4(hello)
    hello.ja3, hello.ja3_hash = ja3(hello)
    return hello


def _client_hellos(data: bytes) -> Iterator[ClientHello]:
    """Every cleartext ClientHello in a client->server stream (a second one follows an HRR)."""
    buffer = bytearray()
    first_record_version: int | None = None
    seen_hello = False
    for record in _records(data, "client"):
        if record.content_type == CONTENT_HANDSHAKE:
            if first_record_version is None:
                first_record_version = record.version
            buffer += record.fragment
            for msg_type, body in _handshake_messages(buffer, "client"):
                if msg_type == HANDSHAKE_CLIENT_HELLO:
                    seen_hello = True
                    yield parse_client_hello(body, first_record_version)
                    first_record_version = None
                elif not seen_hello:
                    raise TLSParseError(
                        f"client handshake starts with message type {msg_type}, not ClientHello"
                    )
                else:
                    return  # a later cleartext message (TLS 1.2 ClientKeyExchange, ...)
        elif record.content_type == CONTENT_CHANGE_CIPHER_SPEC and seen_hello:
            continue  # TLS 1.3 middlebox-compatibility CCS before a second ClientHello
        elif not seen_hello:
            raise TLSParseError(
                f"client stream starts with content type {record.content_type}, not a handshake"
            )
        else:
            return  # application data / alert: nothing cleartext left to read


def parse_client_stream(data: bytes) -> ClientHello | None:
    """The first ClientHello of a client->server stream prefix.

    Joins a ClientHello split over several records; accepts the SSLv2 format. Returns None when
    the prefix ends before the ClientHello does; raises ``TLSParseError`` when it is malformed.
    """
    if not data:
        return None
    if data[0] & 0x80:
        if len(data) < 5:
            return None
        if not _is_sslv2_client_hello(data):
            raise TLSParseError(
                f"client stream starts with 0x{data[0]:02x}{data[1]:02x}{data[2]:02x}: "
                "neither a TLS record nor an SSLv2 ClientHello"
            )
        return _parse_sslv2_client_hello(data)
    if data[0] != CONTENT_HANDSHAKE:
        raise TLSParseError(
            f"client stream starts with byte 0x{data[0]:02x}, not a TLS handshake record"
        )
    # Common case first: the whole ClientHello in the first record. These are the checks the
    # record and message walk makes on that record; anything else takes the walk.
    if len(data) >= 9 and data[1] == 3 and data[5] == HANDSHAKE_CLIENT_HELLO:
        record_length = (data[3] << 8) | data[4]
        message_length = (data[6] << 16) | (data[7] << 8) | data[8]
        if 4 + message_length <= record_length <= MAX_RECORD_LENGTH and (
            len(data) >= 5 + record_length
        ):
            return parse_client_hello(bytes(data[9 : 9 + message_length]), (3 << 8) | data[2])
    return next(_client_hellos(data), None)


def parse_client_hellos(data: bytes) -> list[ClientHello]:
    """All cleartext ClientHellos of a client->server stream prefix, in order.

    A TLS 1.3 client answering a HelloRetryRequest sends a second ClientHello; this returns both
    (the first is what ``parse_client_stream`` returns). Same errors as ``parse_client_stream``.
    """
    if data and data[0] & 0x80:
        first = parse_client_stream(data)
        return [first] if first else []
    if data and data[0] != CONTENT_HANDSHAKE:
        raise TLSParseError(
            f"client stream starts with byte 0x{data[0]:02x}, not a TLS handshake record"
        )
    return list(_client_hellos(data))


# --- server side -----------------------------------------------------------------------------


@dataclass
class ServerParse:
    """What the server sent in cleartext: its hello, certificates (TLS <= 1.2) and any alert."""

    server: ServerHello | None
    certificates: list[Certificate] = field(default_factory=list)
    alert: str | None = None


def parse_server_hello(handshake_body: bytes) -> ServerHello:
    """Parse a ServerHello (or HelloRetryRequest) body."""
    server_hello, _ = _parse_server_hello(handshake_body)
    return server_hello


def _parse_server_hello(handshake_body: bytes) -> tuple[ServerHello, bool]:
    """The ServerHello and whether it is a HelloRetryRequest."""
    parsed = _parse_server_hello_flat(handshake_body)
    if parsed is None:
        # Malformed (or unusual enough to doubt): the checked reader gives the exact error.
        parsed = _parse_server_hello_checked(handshake_body)
    return parsed


def _parse_server_hello_flat(body: bytes) -> tuple[ServerHello, bool] | None:
    """``_parse_server_hello_checked`` by offsets over ``body``; None where it would fail."""
    end = len(body)
    if end < 35:
        return None
    session_length = body[34]
    pos = 35 + session_length
    if session_length > 32 or pos + 3 > end:
        return None
    hello = ServerHello(
        legacy_version=(body[0] << 8) | body[1], cipher_suite=(body[pos] << 8) | body[pos + 1]
    )
    pos += 3  # cipher suite, compression method
    if pos < end:
        if pos + 2 > end:
            return None
        block_end = pos + 2 + ((body[pos] << 8) | body[pos + 1])
        if block_end > end:
            return None
        pos += 2
        while pos < block_end:
            if pos + 4 > block_end:
                return None
            ext_type = (body[pos] << 8) | body[pos + 1]
            data_start = pos + 4
            data_end = data_start + ((body[pos + 2] << 8) | body[pos + 3])
            if data_end > block_end:
                return None
            hello.extensions.append(ext_type)
            if ext_type == EXT_SUPPORTED_VERSIONS:
                if data_start + 2 > data_end:
                    return None
                hello.selected_version = (body[data_start] << 8) | body[data_start + 1]
            elif ext_type == EXT_ALPN:
                # The protocol list, then its first name (the one the server selected).
                if data_start + 2 > data_end:
                    return None
                list_end = data_start + 2 + ((body[data_start] << 8) | body[data_start + 1])
                name_start = data_start + 3
                if list_end > data_end or name_start > list_end:
                    return None
                name_end = name_start + body[data_start + 2]
                if name_end > list_end:
                    return None
                hello.alpn = body[name_start:name_end].decode("latin-1")
            pos = data_end
    return hello, body[2:34] == HELLO_RETRY_REQUEST_RANDOM


def _parse_server_hello_checked(handshake_body: bytes) -> tuple[ServerHello, bool]:
    """The ServerHello read with bounds-checked readers (errors name the bad field)."""
    reader = _Reader(handshake_body, "ServerHello")
    legacy_version = reader.uint(2, "legacy_version")
    random = reader.take(32, "random")
    session_id = reader.vector(1, "session_id")
    if len(session_id) > 32:
        raise TLSParseError(f"ServerHello session_id length {len(session_id)} exceeds 32")
    hello = ServerHello(legacy_version=legacy_version, cipher_suite=reader.uint(2, "cipher_suite"))
    reader.uint(1, "compression_method")
    if reader.remaining:
        for ext_type, ext_data in _extensions(reader.vector(2, "extensions"), "ServerHello"):
            hello.extensions.append(ext_type)
            what = f"ServerHello extension 0x{ext_type:04x}"
            if ext_type == EXT_SUPPORTED_VERSIONS:
                hello.selected_version = _Reader(ext_data, what).uint(2, "selected_version")
            elif ext_type == EXT_ALPN:
                names = _Reader(_Reader(ext_data, what).vector(2, "protocol_name_list"), what)
                hello.alpn = names.vector(1, "protocol_name").decode("latin-1")
    return hello, random == HELLO_RETRY_REQUEST_RANDOM


def _parse_certificate_message(body: bytes) -> list[Certificate]:
    """A TLS <= 1.2 Certificate message: a 24-bit-length list of 24-bit-length DER certs."""
    reader = _Reader(_Reader(body, "Certificate").vector(3, "certificate_list"), "Certificate")
    certificates = []
    while reader.remaining:
        certificates.append(parse_certificate(reader.vector(3, "certificate")))
    return certificates


def _alert_text(fragment: bytes) -> str:
    level = ALERT_LEVELS.get(fragment[0], f"level_{fragment[0]}")
    description = ALERT_DESCRIPTIONS.get(fragment[1], f"alert_{fragment[1]}")
    return f"{level}:{description}"


def parse_server_stream(data: bytes) -> ServerParse:
    """The cleartext part of a server->client stream prefix.

    Reads the ServerHello (version, including ``supported_versions`` for TLS 1.3; cipher; ALPN),
    the Certificate message (TLS <= 1.2 only: in TLS 1.3 it is encrypted) and a cleartext alert
    (``"fatal:handshake_failure"``). Several messages may share a record and one message may
    span records. Stops at ChangeCipherSpec (after a HelloRetryRequest it reads on to the real
    ServerHello) and at application data. A truncated prefix gives what was complete;
    malformed bytes raise ``TLSParseError``.
    """
    result = ServerParse(server=None)
    if not data:
        return result
    if data[0] not in (CONTENT_HANDSHAKE, CONTENT_ALERT):
        raise TLSParseError(
            f"server stream starts with byte 0x{data[0]:02x}, not a TLS handshake or alert record"
        )
    buffer = bytearray()
    after_retry_request = False
    for record in _records(data, "server"):
        if record.content_type == CONTENT_HANDSHAKE:
            buffer += record.fragment
            for msg_type, body in _handshake_messages(buffer, "server"):
                if msg_type == HANDSHAKE_SERVER_HELLO:
                    result.server, after_retry_request = _parse_server_hello(body)
                elif msg_type == HANDSHAKE_CERTIFICATE and result.server is not None:
                    if result.server.version >= 0x0304:
                        return result  # cannot happen in cleartext; do not misread it
                    result.certificates.extend(_parse_certificate_message(body))
        elif record.content_type == CONTENT_ALERT:
            if len(record.fragment) < 2:
                raise TLSParseError(f"server alert record has {len(record.fragment)} bytes, not 2")
            result.alert = _alert_text(record.fragment)
            return result
        elif record.content_type == CONTENT_CHANGE_CIPHER_SPEC and after_retry_request:
            continue  # TLS 1.3 compatibility CCS after an HRR: the real ServerHello follows
        else:
            return result
    return result
