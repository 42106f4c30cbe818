"""The offset parsers of ``auditor.capture.tls`` against a reference reader.

``auditor.capture.tls`` reads hellos (and Certificate messages, SSLv2 hellos) by offset over one
buffer for speed, and raises ``TLSParseError`` naming the first field that does not fit. The
REFERENCE below is the bounds-checked reader that module used before (a ``_Reader`` per
structure, one slice per field), kept here only as the oracle: on real hellos and on seeded
random mutations of them, the offset parsers must accept exactly the bodies it accepts, build
the same result, and reject the others with its exact error message. Real hellos come from
Python's ssl module writing into a memory BIO (no socket).
"""

from __future__ import annotations

import dataclasses
import random
import re
import ssl
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from auditor.capture import tls, x509
from auditor.capture.tls import (
    EXT_ALPN,
    EXT_EC_POINT_FORMATS,
    EXT_SERVER_NAME,
    EXT_SIGNATURE_ALGORITHMS,
    EXT_SUPPORTED_GROUPS,
    EXT_SUPPORTED_VERSIONS,
    HELLO_RETRY_REQUEST_RANDOM,
    SSL2_VERSION,
    TLSParseError,
    _client_hellos,
    _parse_certificate_message,
    _parse_server_hello,
    _parse_sslv2_client_hello,
    _read_client_hello,
    parse_client_hello,
    parse_client_stream,
)
from auditor.enrich.fingerprints import _ja3_cached, _ja4_cached, ja3, ja4
from auditor.model import ClientHello, ServerHello

# --- REFERENCE: the bounds-checked reader (test oracle only, not used by the product) --------


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


def _reference_extensions(block: bytes, message: str) -> Iterator[tuple[int, bytes]]:
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


def _reference_uint16_list(data: bytes, what: str) -> list[int]:
    if len(data) % 2:
        raise TLSParseError(f"{what} has odd length {len(data)}")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def reference_client_hello(handshake_body: bytes, record_version: int) -> ClientHello:
    """The ClientHello fields, fingerprints left empty (as ``tls._read_client_hello``)."""
    reader = _Reader(handshake_body, "ClientHello")
    legacy_version = reader.uint(2, "legacy_version")
    reader.take(32, "random")
    session_id = reader.vector(1, "session_id")
    if len(session_id) > 32:
        raise TLSParseError(f"ClientHello session_id length {len(session_id)} exceeds 32")
    cipher_bytes = reader.vector(2, "cipher_suites")
    if not cipher_bytes:
        raise TLSParseError("ClientHello offers no cipher suites")
    cipher_suites = _reference_uint16_list(cipher_bytes, "ClientHello cipher_suites")
    if not reader.vector(1, "compression_methods"):
        raise TLSParseError("ClientHello offers no compression methods")
    hello = ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        cipher_suites=cipher_suites,
        extensions=[],
    )
    if reader.remaining:
        extensions = reader.vector(2, "extensions")
        for ext_type, ext_data in _reference_extensions(extensions, "ClientHello"):
            hello.extensions.append(ext_type)
            _reference_client_extension(hello, ext_type, ext_data)
    return hello


def _reference_client_extension(hello: ClientHello, ext_type: int, data: bytes) -> None:
    what = f"ClientHello extension 0x{ext_type:04x}"
    if ext_type == EXT_SERVER_NAME:
        if not data:
            return
        names = _Reader(_Reader(data, what).vector(2, "server_name_list"), what)
        while names.remaining:
            name_type = names.uint(1, "name_type")
            name = names.vector(2, "host_name")
            if name_type == 0 and hello.server_name is None:
                hello.server_name = name.decode("ascii", errors="backslashreplace")
    elif ext_type == EXT_ALPN:
        protocols = _Reader(_Reader(data, what).vector(2, "protocol_name_list"), what)
        while protocols.remaining:
            hello.alpn.append(protocols.vector(1, "protocol_name").decode("latin-1"))
    elif ext_type == EXT_SIGNATURE_ALGORITHMS:
        hello.signature_algorithms = _reference_uint16_list(
            _Reader(data, what).vector(2, "supported_signature_algorithms"), what
        )
    elif ext_type == EXT_SUPPORTED_GROUPS:
        hello.supported_groups = _reference_uint16_list(
            _Reader(data, what).vector(2, "named_group_list"), what
        )
    elif ext_type == EXT_EC_POINT_FORMATS:
        hello.ec_point_formats = list(_Reader(data, what).vector(1, "ec_point_format_list"))
    elif ext_type == EXT_SUPPORTED_VERSIONS:
        hello.supported_versions = _reference_uint16_list(
            _Reader(data, what).vector(1, "versions"), what
        )


def reference_server_hello(handshake_body: bytes) -> tuple[ServerHello, bool]:
    """The ServerHello and whether it is a HelloRetryRequest (as ``tls._parse_server_hello``)."""
    reader = _Reader(handshake_body, "ServerHello")
    legacy_version = reader.uint(2, "legacy_version")
    random_bytes = reader.take(32, "random")
    session_id = reader.vector(1, "session_id")
    if len(session_id) > 32:
        raise TLSParseError(f"ServerHello session_id length {len(session_id)} exceeds 32")
    hello = ServerHello(legacy_version=legacy_version, cipher_suite=reader.uint(2, "cipher_suite"))
    reader.uint(1, "compression_method")
    if reader.remaining:
        extensions = reader.vector(2, "extensions")
        for ext_type, ext_data in _reference_extensions(extensions, "ServerHello"):
            hello.extensions.append(ext_type)
            what = f"ServerHello extension 0x{ext_type:04x}"
            if ext_type == EXT_SUPPORTED_VERSIONS:
                hello.selected_version = _Reader(ext_data, what).uint(2, "selected_version")
            elif ext_type == EXT_ALPN:
                names = _Reader(_Reader(ext_data, what).vector(2, "protocol_name_list"), what)
                hello.alpn = names.vector(1, "protocol_name").decode("latin-1")
    return hello, random_bytes == HELLO_RETRY_REQUEST_RANDOM


def reference_certificate_ders(body: bytes) -> list[bytes]:
    """The DER certificates of a Certificate message (``tls`` then parses each one)."""
    reader = _Reader(_Reader(body, "Certificate").vector(3, "certificate_list"), "Certificate")
    ders = []
    while reader.remaining:
        ders.append(reader.vector(3, "certificate"))
    return ders


def reference_sslv2_client_hello(data: bytes) -> ClientHello | None:
    """An SSLv2-format CLIENT-HELLO, None when ``data`` ends before it does."""
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
        record_version=SSL2_VERSION, legacy_version=version, cipher_suites=suites, extensions=[]
    )
    hello.ja4, hello.ja4_r = ja4(hello)
    hello.ja3, hello.ja3_hash = ja3(hello)
    return hello


# --- inputs ----------------------------------------------------------------------------------


def python_client_hello_body(server_name: str, alpn: list[str]) -> bytes:
    """The handshake body of the ClientHello Python's ssl sends (from a memory BIO)."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    record = outgoing.read()
    assert record[0] == 22 and record[5] == 1  # handshake record holding a ClientHello
    length = int.from_bytes(record[6:9], "big")
    return record[9 : 9 + length]


@pytest.fixture(scope="module")
def real_bodies() -> list[bytes]:
    return [
        python_client_hello_body("api.example.test", ["h2", "http/1.1"]),
        python_client_hello_body("relay.example.test", []),
    ]


def server_hello_body(random_bytes: bytes, alpn: bytes) -> bytes:
    """A TLS 1.3-style ServerHello body: supported_versions, key_share and optionally ALPN."""
    extensions = b"\x00\x2b\x00\x02\x03\x04"  # supported_versions: TLS 1.3
    extensions += b"\x00\x33\x00\x24\x00\x1d\x00\x20" + bytes(range(32))  # key_share x25519
    if alpn:
        names = bytes([len(alpn)]) + alpn
        alpn_data = len(names).to_bytes(2, "big") + names
        extensions += b"\x00\x10" + len(alpn_data).to_bytes(2, "big") + alpn_data
    return (
        b"\x03\x03"
        + random_bytes
        + b"\x20"
        + bytes(range(100, 132))
        + b"\x13\x01\x00"
        + len(extensions).to_bytes(2, "big")
        + extensions
    )


def mutated(rng: random.Random, original: bytes) -> bytes:
    """``original`` with a few bytes changed, cut short, a length nudged or a byte inserted."""
    body = bytearray(original)
    kind = rng.randrange(4)
    if kind == 0:  # flip bytes, often hitting a length field
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del body[rng.randrange(len(body)) :]
    elif kind == 2:  # small length nudges keep the structure mostly intact
        index = rng.randrange(len(body))
        body[index] = (body[index] + rng.choice((-2, -1, 1, 2))) % 256
    else:  # everything after shifts by one
        body.insert(rng.randrange(len(body)), rng.randrange(256))
    return bytes(body)


def extension_cut_short(rng: random.Random, body: bytes, client: bool) -> bytes:
    """A well-formed hello ``body`` whose last extension is one of its extensions with its data
    cut short (the lengths around it kept consistent), so it ends where the buffer ends: the
    case where reading a length without checking it first would raise IndexError."""
    pos = 35 + body[34]  # after legacy_version, random, session_id
    if client:
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher_suites
        pos += 1 + body[pos]  # compression_methods
    else:
        pos += 3  # cipher_suite, compression_method
    extensions = []
    ext_pos = pos + 2
    while ext_pos < len(body):
        length = int.from_bytes(body[ext_pos + 2 : ext_pos + 4], "big")
        extensions.append(body[ext_pos : ext_pos + 4 + length])
        ext_pos += 4 + length
    kept = rng.randrange(len(extensions))
    ext_type, data = extensions[kept][:2], extensions[kept][4:]
    cut = data[: rng.randrange(len(data))] if data else b""
    if len(cut) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2 and rng.random() < 0.5:
        # The data is one list with a 2-byte length (SNI, ALPN, groups...): cut it consistently
        # too, so that what ends early is an entry of the list, at the end of the buffer.
        cut = (len(cut) - 2).to_bytes(2, "big") + cut[2:]
    block = b"".join(extensions[:kept]) + ext_type + len(cut).to_bytes(2, "big") + cut
    return body[:pos] + len(block).to_bytes(2, "big") + block


def outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    """What ``parse`` returns, or its error message."""
    try:
        return parse(data)
    except TLSParseError as error:
        return f"error: {error}"


def error_kinds(outcomes: list[object]) -> Counter[str]:
    """The error messages among ``outcomes`` with their numbers blanked out, counted."""
    return Counter(
        re.sub(r"\d+|0x[0-9a-f]{4}", "N", result) for result in outcomes if isinstance(result, str)
    )


def assert_matches_reference(
    parse: Callable[[bytes], object],
    reference: Callable[[bytes], object],
    bodies: list[bytes],
    rng: random.Random,
    rounds: int,
) -> list[object]:
    """``parse`` and ``reference`` agree on ``bodies`` and ``rounds`` mutations of them."""
    outcomes = []
    for round_number in range(len(bodies) + rounds):
        if round_number < len(bodies):
            data = bodies[round_number]
        else:
            data = mutated(rng, rng.choice(bodies))
        expected = outcome(reference, data)
        assert outcome(parse, data) == expected, data.hex()
        outcomes.append(expected)
    return outcomes


# --- ClientHello -----------------------------------------------------------------------------


def test_real_hellos_read_as_the_reference_reads_them(real_bodies: list[bytes]) -> None:
    for body in real_bodies:
        assert _read_client_hello(body, 0x0301) == reference_client_hello(body, 0x0301)
    hello = parse_client_hello(real_bodies[0])
    assert hello.server_name == "api.example.test"
    assert hello.alpn == ["h2", "http/1.1"]
    assert hello.ja4.startswith("t13d") and hello.ja4[8:10] == "h2"


def test_mutated_client_hellos_read_or_fail_as_the_reference(real_bodies: list[bytes]) -> None:
    rng = random.Random(14)
    cut_short = [extension_cut_short(rng, rng.choice(real_bodies), True) for _ in range(400)]
    outcomes = assert_matches_reference(
        lambda body: _read_client_hello(body, 0x0301),
        lambda body: reference_client_hello(body, 0x0301),
        real_bodies + cut_short,
        rng,
        4000,
    )
    accepted = sum(isinstance(result, ClientHello) for result in outcomes)
    kinds = error_kinds(outcomes)
    # Both branches exercised, and errors from many fields, not one failure mode over and over.
    assert accepted > 300 and sum(kinds.values()) > 1000
    assert len(kinds) >= 15, kinds


HELLO_START = b"\x03\x03" + bytes(32)  # legacy_version, random


@pytest.mark.parametrize(
    ("after_random", "message"),
    [
        (b"\x21" + bytes(33) + b"\x00\x02\x13\x01\x01\x00", "session_id length 33 exceeds 32"),
        (b"\x00" + b"\x00\x00" + b"\x01\x00", "offers no cipher suites"),
        (b"\x00" + b"\x00\x01\x13" + b"\x01\x00", "cipher_suites has odd length 1"),
        (b"\x00" + b"\x00\x02\x13\x01" + b"\x00", "offers no compression methods"),
    ],
)
def test_hello_rules_beyond_lengths_are_named(after_random: bytes, message: str) -> None:
    """Rules mutations seldom break alone: each gives the reference's exact message."""
    body = HELLO_START + after_random
    expected = f"ClientHello {message}"
    assert outcome(lambda data: reference_client_hello(data, 0x0301), body) == f"error: {expected}"
    with pytest.raises(TLSParseError, match=f"^{re.escape(expected)}$"):
        parse_client_hello(body)


def test_public_parser_keeps_the_field_in_the_error_message(real_bodies: list[bytes]) -> None:
    body = real_bodies[0][:80]  # ends inside the cipher suite list
    with pytest.raises(TLSParseError, match="ClientHello cipher_suites length"):
        parse_client_hello(body)


def test_fingerprint_cache_gives_the_uncached_answer_for_each_shape(
    real_bodies: list[bytes],
) -> None:
    _ja4_cached.cache_clear()
    _ja3_cached.cache_clear()
    first = parse_client_hello(real_bodies[0])
    again = parse_client_hello(real_bodies[0])
    assert (again.ja4, again.ja4_r, again.ja3_hash) == (first.ja4, first.ja4_r, first.ja3_hash)
    assert _ja4_cached.cache_info().hits >= 1 and _ja3_cached.cache_info().hits >= 1
    # A field JA4 reads changes the key: a different first ALPN value is a different JA4.
    other = dataclasses.replace(first, alpn=["http/1.1"])
    assert ja4(other)[0][8:10] == "h1" and ja4(first)[0][8:10] == "h2"
    # Fields JA4 ignores (server name, later ALPN values) share one cache entry.
    renamed = dataclasses.replace(first, server_name="other.example.test", alpn=["h2"])
    assert ja4(renamed) == ja4(first)
    assert ja3(dataclasses.replace(first, supported_groups=[23])) != ja3(first)


def walk_only(data: bytes) -> ClientHello | None:
    """``parse_client_stream`` without its one-record shortcut (the walk it replaced)."""
    if not data or data[0] != 0x16:
        return parse_client_stream(data)  # SSLv2 / not a handshake: the shortcut is not tried
    return next(_client_hellos(data), None)


def test_one_record_shortcut_matches_the_record_walk(real_bodies: list[bytes]) -> None:
    rng = random.Random(22)
    shortcut_taken = 0
    for _ in range(2000):
        body = rng.choice(real_bodies)
        message = bytes([1]) + len(body).to_bytes(3, "big") + body
        data = bytearray(b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message)
        for _ in range(rng.randint(0, 2)):
            index = (
                rng.randrange(min(len(data), 12))
                if rng.random() < 0.7
                else rng.randrange(len(data))
            )
            data[index] = rng.randrange(256)
        if rng.random() < 0.2:
            del data[rng.randrange(len(data)) :]
        if rng.random() < 0.3:
            data += rng.randbytes(rng.randrange(1, 40))  # a following record or junk
        walked = outcome(walk_only, bytes(data))
        assert outcome(parse_client_stream, bytes(data)) == walked
        shortcut_taken += isinstance(walked, ClientHello)
    assert shortcut_taken > 200


# --- ServerHello, Certificate, SSLv2 ClientHello ---------------------------------------------


def test_server_hellos_read_or_fail_as_the_reference() -> None:
    bodies = [
        server_hello_body(bytes(range(32)), b"h2"),
        server_hello_body(HELLO_RETRY_REQUEST_RANDOM, b""),
    ]
    hello, is_retry = _parse_server_hello(bodies[0])
    assert (hello.version, hello.alpn, is_retry) == (0x0304, "h2", False)
    assert _parse_server_hello(bodies[1])[1] is True
    rng = random.Random(2)
    cut_short = [extension_cut_short(rng, rng.choice(bodies), False) for _ in range(200)]
    outcomes = assert_matches_reference(
        _parse_server_hello, reference_server_hello, bodies + cut_short, rng, 3000
    )
    kinds = error_kinds(outcomes)
    assert len(outcomes) - sum(kinds.values()) > 300 and sum(kinds.values()) > 300
    assert len(kinds) >= 8, kinds


def test_certificate_messages_read_or_fail_as_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Compare the DER slices each parser finds, not what x509 makes of them.
    monkeypatch.setattr(x509, "parse_certificate", lambda der: der)
    rng = random.Random(11)
    ders = [rng.randbytes(size) for size in (300, 40, 700)]
    certificate_list = b"".join(len(der).to_bytes(3, "big") + der for der in ders)
    body = len(certificate_list).to_bytes(3, "big") + certificate_list
    assert _parse_certificate_message(body) == ders
    outcomes = assert_matches_reference(
        _parse_certificate_message, reference_certificate_ders, [body], rng, 2000
    )
    assert len(error_kinds(outcomes)) >= 3


def test_sslv2_client_hellos_read_or_fail_as_the_reference() -> None:
    specs = bytes.fromhex("01008000003500002f0000ff")  # RC4-MD5 (SSLv2), 2 TLS, SCSV
    challenge = bytes(range(16))
    message = b"\x01\x03\x01" + len(specs).to_bytes(2, "big") + b"\x00\x00"
    message += len(challenge).to_bytes(2, "big") + specs + challenge
    data = bytes([0x80 | (len(message) >> 8), len(message) & 0xFF]) + message
    assert _parse_sslv2_client_hello(data) is not None

    def parse(data: bytes) -> ClientHello | None:
        # Both parsers trust the header checks ``parse_client_stream`` makes first.
        return _parse_sslv2_client_hello(data) if tls._is_sslv2_client_hello(data) else None

    def reference(data: bytes) -> ClientHello | None:
        return reference_sslv2_client_hello(data) if tls._is_sslv2_client_hello(data) else None

    outcomes = assert_matches_reference(parse, reference, [data], random.Random(5), 2000)
    assert len(error_kinds(outcomes)) >= 3
