"""The flat hello parsers in ``auditor.capture.tls`` against the checked readers they mirror.

``parse_client_hello`` reads a body by offsets first and only falls back to the bounds-checked
reader when the flat parser gives up; both must accept exactly the same bodies and build the
same ``ClientHello``. Real hellos come from Python's ssl module writing into a memory BIO (no
socket); broken ones are seeded random mutations of them.
"""

from __future__ import annotations

import dataclasses
import random
import ssl

import pytest

from auditor.capture.tls import (
    HELLO_RETRY_REQUEST_RANDOM,
    TLSParseError,
    _client_hellos,
    _parse_client_hello_checked,
    _parse_client_hello_flat,
    _parse_server_hello_checked,
    _parse_server_hello_flat,
    parse_client_hello,
    parse_client_stream,
)
from auditor.enrich.fingerprints import _ja3_cached, _ja4_cached, ja3, ja4
from auditor.model import ClientHello


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


def checked_or_error(body: bytes) -> ClientHello | str:
    try:
        return _parse_client_hello_checked(body, 0x0301)
    except TLSParseError as error:
        return f"error: {error}"


def test_real_hello_reads_the_same_both_ways(real_bodies: list[bytes]) -> None:
    for body in real_bodies:
        flat = _parse_client_hello_flat(body, 0x0301)
        assert flat is not None, "a well-formed hello must not need the fallback"
        assert flat == _parse_client_hello_checked(body, 0x0301)
    hello = parse_client_hello(real_bodies[0])
    assert hello.server_name == "api.example.test"
    assert hello.alpn == ["h2", "http/1.1"]
    assert hello.ja4.startswith("t13d") and hello.ja4[8:10] == "h2"


def test_flat_and_checked_accept_the_same_mutated_bodies(real_bodies: list[bytes]) -> None:
    rng = random.Random(14)
    accepted = rejected = 0
    for _ in range(3000):
        body = bytearray(rng.choice(real_bodies))
        kind = rng.randrange(3)
        if kind == 0:  # flip bytes, often hitting a length field
            for _ in range(rng.randint(1, 3)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind == 1:  # truncate
            del body[rng.randrange(len(body)) :]
        else:  # small length nudges keep the structure mostly intact
            index = rng.randrange(len(body))
            body[index] = (body[index] + rng.choice((-2, -1, 1, 2))) % 256
        flat = _parse_client_hello_flat(bytes(body), 0x0301)
        checked = checked_or_error(bytes(body))
        if isinstance(checked, str):
            assert flat is None, f"flat parser accepted what the checked one rejects: {checked}"
            rejected += 1
        else:
            assert flat == checked
            accepted += 1
    assert accepted > 100 and rejected > 100  # both branches really exercised


def test_public_parser_keeps_the_checked_error_message(real_bodies: list[bytes]) -> None:
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


def stream_result(parse: object, data: bytes) -> object:
    try:
        return parse(data)  # type: ignore[operator]
    except TLSParseError as error:
        return f"error: {error}"


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
        walked = stream_result(walk_only, bytes(data))
        assert stream_result(parse_client_stream, bytes(data)) == walked
        shortcut_taken += isinstance(walked, ClientHello)
    assert shortcut_taken > 200


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


def server_result(parse: object, body: bytes) -> object:
    try:
        return parse(body)  # type: ignore[operator]
    except TLSParseError:
        return "error"


def test_flat_server_hello_matches_the_checked_reader() -> None:
    bodies = [
        server_hello_body(bytes(range(32)), b"h2"),
        server_hello_body(HELLO_RETRY_REQUEST_RANDOM, b""),
    ]
    hello, is_retry = _parse_server_hello_flat(bodies[0]) or (None, None)
    assert hello is not None and (hello.version, hello.alpn, is_retry) == (0x0304, "h2", False)
    assert _parse_server_hello_flat(bodies[1])[1] is True  # type: ignore[index]
    rng = random.Random(2)
    parsed = failed = 0
    for _ in range(3000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 2)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.3:
            del body[rng.randrange(len(body)) :]
        checked = server_result(_parse_server_hello_checked, bytes(body))
        flat = _parse_server_hello_flat(bytes(body))
        if checked == "error":
            assert flat is None
            failed += 1
        else:
            assert flat == checked
            parsed += 1
    assert parsed > 300 and failed > 300
