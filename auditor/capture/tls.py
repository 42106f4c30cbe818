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

Speed: the hello parsers read the one body buffer by offset, with no reader or per-field
objects; a length that does not fit is only then turned into the error message (see "bounds
checks" below).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

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
# After its msg_type: version, then the lengths of cipher_specs, session_id and challenge.
_SSL2_HELLO_FIELDS = struct.Struct(">HHHH")


class TLSParseError(ValueError):
    """The bytes are not a well-formed TLS handshake; the message says what was wrong."""


# --- bounds checks ---------------------------------------------------------------------------
# The parsers read the one buffer they are given by offset: no reader object or slice per field,
# since they run on every handshake of a capture. Each length is checked against the end of what
# encloses it before it is used, and the first one that does not fit raises a TLSParseError built
# here, naming the structure and the field ("ClientHello cipher_suites length 64 exceeds
# remaining 20 bytes"). The idiom for a vector (RFC 8446 §3.4) with a 2-byte length at ``pos``:
#     if pos + 2 > end or (stop := pos + 2 + ((data[pos] << 8) | data[pos + 1])) > end:
#         raise _vector_error(data, pos, end, 2, what, field_name)


def _overrun(what: str, field_name: str, length: int, remaining: int) -> TLSParseError:
    """A field of ``length`` bytes where only ``remaining`` are left."""
    return TLSParseError(f"{what} {field_name} length {length} exceeds remaining {remaining} bytes")


def _vector_error(
    data: bytes, pos: int, end: int, size: int, what: str, field_name: str
) -> TLSParseError:
    """Why the vector whose ``size``-byte length is at ``data[pos]`` does not fit by ``end``."""
    if pos + size > end:
        return TLSParseError(
            f"{what} {field_name} length field needs {size} bytes, {end - pos} remain"
        )
    length = int.from_bytes(data[pos : pos + size], "big")
    return _overrun(what, field_name, length, end - pos - size)


def _extension_name(message: str, ext_type: int) -> str:
    """How errors name an extension: "ClientHello extension 0x0010" (built only for an error)."""
    return f"{message} extension 0x{ext_type:04x}"


# An extension's type and length (RFC 8446 §4.2), read in one call.
_EXTENSION_HEADER = struct.Struct(">HH")


def _extensions(body: bytes, pos: int, message: str) -> Iterator[tuple[int, int, int]]:
    """(type, data start, data end) of each extension in the block at ``body[pos:]``, in order.

    Lazy, so the caller reads each extension before the next header is checked: of two faults,
    the one earlier on the wire is reported.
    """
    end = len(body)
    if pos + 2 > end or (block_end := pos + 2 + ((body[pos] << 8) | body[pos + 1])) > end:
        raise _vector_error(body, pos, end, 2, message, "extensions")
    pos += 2
    while pos < block_end:
        if pos + 4 > block_end:
            raise TLSParseError(
                f"{message} extension header needs 4 bytes, {block_end - pos} remain"
            )
        ext_type, length = _EXTENSION_HEADER.unpack_from(body, pos)
        data_end = pos + 4 + length
        if data_end > block_end:
            raise _overrun(message, f"extension 0x{ext_type:04x}", length, block_end - pos - 4)
        yield ext_type, pos + 4, data_end
        pos = data_end


def _session_id_end(body: bytes, message: str) -> int:
    """Where the session id of a ClientHello / ServerHello body ends (after version, random)."""
    end = len(body)
    if end < 2:
        raise _overrun(message, "legacy_version", 2, end)
    if end < 34:
        raise _overrun(message, "random", 32, end - 2)
    if end < 35 or (session_end := 35 + body[34]) > end:
        raise _vector_error(body, 34, end, 1, message, "session_id")
    if session_end > 35 + 32:
        raise TLSParseError(f"{message} session_id length {session_end - 35} exceeds 32")
    return session_end


# Readers of n big-endian 16-bit values, by byte length 2n: the lists of a hello come in a few
# lengths, and building the format text per list cost more than the read.
_UINT16_READERS: dict[int, struct.Struct] = {}


def _uint16_values(data: bytes, start: int, stop: int) -> list[int] | None:
    """``data[start:stop]`` as big-endian 16-bit values; None for an odd length."""
    length = stop - start
    if length & 1:
        return None
    reader = _UINT16_READERS.get(length)
    if reader is None:
        # At most 2^15 lengths (a vector length has 16 bits), each one small struct.
        reader = _UINT16_READERS[length] = struct.Struct(f">{length >> 1}H")
    return list(reader.unpack_from(data, start))


def _odd_length_error(what: str, length: int) -> TLSParseError:
    """A list of 16-bit values with an odd byte count."""
    return TLSParseError(f"{what} has odd length {length}")


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

# ClientHello extensions holding one list, by the size of its length: 16-bit code points
# (signature schemes, groups, versions) or, for ec_point_formats, bytes. Sets, not tuples
# written in place, so the per-extension test builds nothing.
_TWO_BYTE_LENGTH_LISTS = frozenset((EXT_SIGNATURE_ALGORITHMS, EXT_SUPPORTED_GROUPS))
_ONE_BYTE_LENGTH_LISTS = frozenset((EXT_EC_POINT_FORMATS, EXT_SUPPORTED_VERSIONS))
# The name each of those lists has in its RFC (8446 §4.2; 8422 §5.1.2), for errors.
_CLIENT_LIST_FIELDS = {
    EXT_SIGNATURE_ALGORITHMS: "supported_signature_algorithms",
    EXT_SUPPORTED_GROUPS: "named_group_list",
    EXT_EC_POINT_FORMATS: "ec_point_format_list",
    EXT_SUPPORTED_VERSIONS: "versions",
}


def parse_client_hello(handshake_body: bytes, record_version: int = 0x0301) -> ClientHello:
    """Parse a ClientHello from its handshake body (after the 4-byte handshake header).

    ``record_version`` is what the record layer said (0 when there was none, as in QUIC).
    The JA4 (transport "t") and JA3 fingerprints are filled in. Bytes that do not fit raise
    ``TLSParseError`` naming the first field that is wrong.
    """
    hello = _read_client_hello(handshake_body, record_version)
    hello.ja4, hello.ja4_r = ja4(hello)
    hello.ja3, hello.ja3_hash = ja3(hello)
    return hello


def _read_client_hello(body: bytes, record_version: int) -> ClientHello:
    """The ClientHello fields of a handshake body (fingerprints are left to the caller)."""
    end = len(body)
    pos = _session_id_end(body, "ClientHello")
    if pos + 2 > end or (cipher_end := pos + 2 + ((body[pos] << 8) | body[pos + 1])) > end:
        raise _vector_error(body, pos, end, 2, "ClientHello", "cipher_suites")
    if cipher_end == pos + 2:
        raise TLSParseError("ClientHello offers no cipher suites")
    cipher_suites = _uint16_values(body, pos + 2, cipher_end)
    if cipher_suites is None:
        raise _odd_length_error("ClientHello cipher_suites", cipher_end - pos - 2)
    pos = cipher_end
    if pos + 1 > end or (compression_end := pos + 1 + body[pos]) > end:
        raise _vector_error(body, pos, end, 1, "ClientHello", "compression_methods")
    if compression_end == pos + 1:
        raise TLSParseError("ClientHello offers no compression methods")
    pos = compression_end
    hello = ClientHello(
        record_version=record_version,
        legacy_version=(body[0] << 8) | body[1],
        cipher_suites=cipher_suites,
        extensions=[],
    )
    if pos == end:
        return hello  # extensions are optional (absent in SSL 3.0 / early TLS 1.0 hellos)
    extensions = hello.extensions
    for ext_type, data_start, data_end in _extensions(body, pos, "ClientHello"):
        extensions.append(ext_type)
        if ext_type == EXT_SERVER_NAME:
            if data_end > data_start:  # empty is legal in a ServerHello echo; tolerate it
                _read_server_names(hello, body, data_start, data_end)
        elif ext_type == EXT_ALPN:
            _read_alpn_protocols(hello, body, data_start, data_end)
        elif ext_type in _TWO_BYTE_LENGTH_LISTS:
            if (
                data_start + 2 > data_end
                or (list_end := data_start + 2 + ((body[data_start] << 8) | body[data_start + 1]))
                > data_end
            ):
                raise _client_list_error(body, data_start, data_end, 2, ext_type)
            values = _uint16_values(body, data_start + 2, list_end)
            if values is None:
                raise _odd_length_error(
                    _extension_name("ClientHello", ext_type), list_end - data_start - 2
                )
            if ext_type == EXT_SIGNATURE_ALGORITHMS:
                hello.signature_algorithms = values
            else:
                hello.supported_groups = values
        elif ext_type in _ONE_BYTE_LENGTH_LISTS:
            if (
                data_start + 1 > data_end
                or (list_end := data_start + 1 + body[data_start]) > data_end
            ):
                raise _client_list_error(body, data_start, data_end, 1, ext_type)
            if ext_type == EXT_EC_POINT_FORMATS:
                hello.ec_point_formats = list(body[data_start + 1 : list_end])
            else:
                versions = _uint16_values(body, data_start + 1, list_end)
                if versions is None:
                    raise _odd_length_error(
                        _extension_name("ClientHello", ext_type), list_end - data_start - 1
                    )
                hello.supported_versions = versions
    return hello


def _client_list_error(
    body: bytes, start: int, end: int, size: int, ext_type: int
) -> TLSParseError:
    """The list of the ClientHello extension ``ext_type`` at ``body[start:end]`` does not fit."""
    return _vector_error(
        body,
        start,
        end,
        size,
        _extension_name("ClientHello", ext_type),
        _CLIENT_LIST_FIELDS[ext_type],
    )


def _read_server_names(hello: ClientHello, body: bytes, start: int, end: int) -> None:
    """The first host name of a non-empty SNI extension at ``body[start:end]`` (RFC 6066 §3)."""
    if start + 2 > end or (list_end := start + 2 + ((body[start] << 8) | body[start + 1])) > end:
        raise _vector_error(
            body, start, end, 2, _extension_name("ClientHello", EXT_SERVER_NAME), "server_name_list"
        )
    pos = start + 2
    while pos < list_end:
        # name_type (1 byte), then the name as a vector with a 2-byte length
        if (
            pos + 3 > list_end
            or (name_end := pos + 3 + ((body[pos + 1] << 8) | body[pos + 2])) > list_end
        ):
            raise _vector_error(
                body,
                pos + 1,
                list_end,
                2,
                _extension_name("ClientHello", EXT_SERVER_NAME),
                "host_name",
            )
        if body[pos] == 0 and hello.server_name is None:
            # Host names are ASCII; keep odd bytes visible, never fail on them.
            hello.server_name = body[pos + 3 : name_end].decode("ascii", errors="backslashreplace")
        pos = name_end


def _read_alpn_protocols(hello: ClientHello, body: bytes, start: int, end: int) -> None:
    """The protocol names of an ALPN extension at ``body[start:end]`` (RFC 7301 §3.1)."""
    if start + 2 > end or (list_end := start + 2 + ((body[start] << 8) | body[start + 1])) > end:
        raise _vector_error(
            body, start, end, 2, _extension_name("ClientHello", EXT_ALPN), "protocol_name_list"
        )
    pos = start + 2
    alpn = hello.alpn
    while pos < list_end:
        name_end = pos + 1 + body[pos]
        if name_end > list_end:
            raise _vector_error(
                body, pos, list_end, 1, _extension_name("ClientHello", EXT_ALPN), "protocol_name"
            )
        # latin-1 maps every byte to one character, so the exact bytes can be recovered (JA4
        # needs them) even for non-ASCII protocol ids.
        alpn.append(body[pos + 1 : name_end].decode("latin-1"))
        pos = name_end


def _parse_sslv2_client_hello(data: bytes) -> ClientHello | None:
    """An SSLv2-format CLIENT-HELLO (also sent by old clients offering SSL 3.0 / TLS 1.0).

    Cipher specs are 3 bytes: those with a zero first byte are TLS suites and are kept as their
    16-bit IANA value; SSLv2-only kinds keep their 24-bit value (always > 0xFFFF).
    """
    length = ((data[0] & 0x7F) << 8) | data[1]
    end = 2 + length
    if len(data) < end:
        return None
    # The 9-byte header at data[2:11] (``_is_sslv2_client_hello`` made sure it is there): msg_type,
    # version, and the lengths of the three fields that follow it.
    version, spec_length, session_length, challenge_length = _SSL2_HELLO_FIELDS.unpack_from(data, 3)
    if spec_length % 3 or spec_length == 0:
        raise TLSParseError(f"SSLv2 ClientHello cipher_specs length {spec_length} is not 3*n > 0")
    pos = 11
    for field_name, field_length in (
        ("cipher_specs", spec_length),
        ("session_id", session_length),
        ("challenge", challenge_length),
    ):
        if pos + field_length > end:
            raise _overrun("SSLv2 ClientHello", field_name, field_length, end - pos)
        pos += field_length
    suites = [int.from_bytes(data[i : i + 3], "big") for i in range(11, 11 + spec_length, 3)]
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


def _parse_server_hello(body: bytes) -> tuple[ServerHello, bool]:
    """The ServerHello and whether it is a HelloRetryRequest; ``TLSParseError`` names the first
    field that does not fit."""
    end = len(body)
    pos = _session_id_end(body, "ServerHello")
    if pos + 3 > end:  # cipher_suite (2 bytes), compression_method (1 byte)
        if pos + 2 > end:
            raise _overrun("ServerHello", "cipher_suite", 2, end - pos)
        raise _overrun("ServerHello", "compression_method", 1, end - pos - 2)
    hello = ServerHello(
        legacy_version=(body[0] << 8) | body[1], cipher_suite=(body[pos] << 8) | body[pos + 1]
    )
    if pos + 3 < end:
        for ext_type, data_start, data_end in _extensions(body, pos + 3, "ServerHello"):
            hello.extensions.append(ext_type)
            if ext_type == EXT_SUPPORTED_VERSIONS:
                if data_start + 2 > data_end:
                    raise _overrun(
                        _extension_name("ServerHello", ext_type),
                        "selected_version",
                        2,
                        data_end - data_start,
                    )
                hello.selected_version = (body[data_start] << 8) | body[data_start + 1]
            elif ext_type == EXT_ALPN:
                hello.alpn = _selected_alpn_protocol(body, data_start, data_end)
    return hello, body[2:34] == HELLO_RETRY_REQUEST_RANDOM


def _selected_alpn_protocol(body: bytes, start: int, end: int) -> str:
    """The protocol a ServerHello's ALPN extension at ``body[start:end]`` selected: the first
    (and only) name of its protocol list (RFC 7301 §3.1)."""
    if start + 2 > end or (list_end := start + 2 + ((body[start] << 8) | body[start + 1])) > end:
        raise _vector_error(
            body, start, end, 2, _extension_name("ServerHello", EXT_ALPN), "protocol_name_list"
        )
    name_start = start + 3
    if name_start > list_end or (name_end := name_start + body[start + 2]) > list_end:
        raise _vector_error(
            body, start + 2, list_end, 1, _extension_name("ServerHello", EXT_ALPN), "protocol_name"
        )
    return body[name_start:name_end].decode("latin-1")


def _parse_certificate_message(body: bytes) -> list[Certificate]:
    """A TLS <= 1.2 Certificate message: a 24-bit-length list of 24-bit-length DER certs."""
    # Imported here: x509 loads cryptography (~30 ms), which most captures never need.
    from auditor.capture.x509 import parse_certificate

    end = len(body)
    if end < 3 or (list_end := 3 + int.from_bytes(body[:3], "big")) > end:
        raise _vector_error(body, 0, end, 3, "Certificate", "certificate_list")
    certificates = []
    pos = 3
    while pos < list_end:
        if (
            pos + 3 > list_end
            or (cert_end := pos + 3 + int.from_bytes(body[pos : pos + 3], "big")) > list_end
        ):
            raise _vector_error(body, pos, list_end, 3, "Certificate", "certificate")
        certificates.append(parse_certificate(body[pos + 3 : cert_end]))
        pos = cert_end
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
