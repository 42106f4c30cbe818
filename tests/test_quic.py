"""QUIC Initial decryption: RFC key vectors, real ClientHellos sealed into v1/v2 Initials,
ClientHellos spread over datagrams, the reference captures, and broken packets."""

from __future__ import annotations

import contextlib
import random
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auditor.capture.quic import (
    QUIC_V1,
    QUIC_V2,
    initial_client_keys,
    parse_quic_initial,
    parse_quic_initials,
)
from auditor.capture.tls import TLSParseError

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ja4"
RFC_DCID = bytes.fromhex("8394c8f03e515708")


def test_initial_keys_match_rfc_vectors() -> None:
    # RFC 9001 Appendix A.1 (v1) and RFC 9369 Appendix A.1 (v2), client Initial keys.
    assert [k.hex() for k in initial_client_keys(RFC_DCID, QUIC_V1)] == [
        "1f369613dd76d5467730efcbe3b1a22d",
        "fa044b2f42a3fd3b46fb255c",
        "9f50449e04a0e810283a1e9933adedd2",
    ]
    assert [k.hex() for k in initial_client_keys(RFC_DCID, QUIC_V2)] == [
        "8b1a0bc121284290a29e0971b5cd045d",
        "91f73e2351d8fa91660e909f",
        "45b95e15235d6f45a6b19cbcb0294ba9",
    ]


def real_client_hello_message(server_name: str, alpn: list[str]) -> bytes:
    """The ClientHello handshake message (type + length + body) Python's ssl really sends."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    record = outgoing.read()
    assert record[0] == 0x16
    return record[5:]  # QUIC carries handshake messages without the record layer


def _varint2(value: int) -> bytes:
    return (0x4000 | value).to_bytes(2, "big")


def _crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + _varint2(offset) + _varint2(len(data)) + data


def seal_initial(frames: bytes, dcid: bytes, version: int = QUIC_V1, pn: int = 0) -> bytes:
    """A client Initial packet, protected as RFC 9001 §5 says (the test's own encoder)."""
    key, iv, hp_key = initial_client_keys(dcid, version)
    initial_type = 0b00 if version == QUIC_V1 else 0b01
    pn_length = 2
    first = 0xC0 | (initial_type << 4) | (pn_length - 1)
    plaintext = frames + b"\x00" * max(0, 1100 - len(frames))  # PADDING, as clients do
    scid = b"\x11\x22\x33\x44"
    header = (
        bytes([first]) + version.to_bytes(4, "big") + bytes([len(dcid)]) + dcid
        + bytes([len(scid)]) + scid + b"\x00" + _varint2(pn_length + len(plaintext) + 16)
    )  # fmt: skip
    packet_number = pn.to_bytes(pn_length, "big")
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big"), strict=True))
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, header + packet_number)
    sample = ciphertext[4 - pn_length : 4 - pn_length + 16]
    encryptor = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    protected_first = bytes([first ^ (mask[0] & 0x0F)])
    protected_pn = bytes(b ^ m for b, m in zip(packet_number, mask[1:], strict=False))
    return protected_first + header[1:] + protected_pn + ciphertext


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2], ids=["v1", "v2"])
def test_real_client_hello_in_one_initial(version: int) -> None:
    message = real_client_hello_message("chat.relay.test", ["h3"])
    dcid = bytes(range(1, 9))
    # Two CRYPTO frames out of order, plus a PING, as real stacks send them.
    frames = b"\x01" + _crypto_frame(300, message[300:]) + _crypto_frame(0, message[:300])
    hello = parse_quic_initial(seal_initial(frames, dcid, version))
    assert hello is not None
    assert hello.over_quic is True
    assert hello.record_version == 0
    assert hello.server_name == "chat.relay.test"
    assert hello.alpn == ["h3"]
    assert hello.max_version == 0x0304
    assert hello.ja4.startswith("q13d") and hello.ja4[8:10] == "h3"
    assert hello.ja4_r.startswith("q13d")


def test_client_hello_spread_over_two_datagrams() -> None:
    message = real_client_hello_message("split.relay.test", ["h3"])
    dcid = b"\xaa" * 8
    first = seal_initial(_crypto_frame(0, message[:200]), dcid, pn=0)
    second = seal_initial(_crypto_frame(200, message[200:]), dcid, pn=1)
    assert parse_quic_initial(first) is None  # documented: incomplete in one datagram
    hello = parse_quic_initials([first, second])
    assert hello is not None and hello.server_name == "split.relay.test"
    # An unrelated datagram (another connection's DCID) does not get mixed in.
    other = seal_initial(_crypto_frame(200, b"\x00" * 50), b"\xbb" * 8)
    assert parse_quic_initials([first, other, second]) == hello


def test_coalesced_initials_in_one_datagram() -> None:
    message = real_client_hello_message("coalesced.test", ["h3"])
    dcid = b"\xcc" * 8
    # Small packets (no padding) so that both fit one datagram.
    part_one = seal_initial(_crypto_frame(0, message[:150]), dcid, pn=0)
    part_two = seal_initial(_crypto_frame(150, message[150:]), dcid, pn=1)
    hello = parse_quic_initial(part_one + part_two)
    assert hello is not None and hello.server_name == "coalesced.test"


@pytest.mark.skipif(not (CORPUS / "pcap").is_dir(), reason=f"JA4 corpus not found at {CORPUS}")
@pytest.mark.parametrize(
    ("capture", "server_name"),
    [
        ("quic-tls-handshake.pcapng", None),
        ("quic-with-several-tls-frames.pcapng", None),
        ("chrome-cloudflare-quic-with-secrets.pcapng", "cloudflare-quic.com"),
    ],
)
def test_reference_captures(capture: str, server_name: str | None) -> None:
    from scapy.all import UDP, PcapReader

    with PcapReader(str(CORPUS / "pcap" / capture)) as packets:
        payloads = [bytes(p[UDP].payload) for p in packets if UDP in p and p[UDP].dport == 443]
    hellos = [h for h in map(parse_quic_initial, payloads) if h is not None]
    assert hellos, f"no ClientHello decrypted from {capture}"
    assert all(h.over_quic and h.ja4.startswith("q13") for h in hellos)
    assert hellos[0].server_name
    if server_name:
        assert hellos[0].server_name == server_name


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\xc0",
        b"\x40" + b"\x00" * 40,  # short header
        b"\xc0\x00\x00\x00\x01\x15" + b"\x00" * 40,  # DCID longer than 20
        b"\xc0\xff\x00\x00\x1d\x08" + b"\x00" * 60,  # draft-29: not supported
        b"\xe0\x00\x00\x00\x01\x08" + b"\x00" * 60,  # Handshake packet, not Initial
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
def test_not_an_initial_gives_none(payload: bytes) -> None:
    assert parse_quic_initial(payload) is None


def test_tampering_and_truncation_give_none() -> None:
    message = real_client_hello_message("tamper.test", ["h3"])
    packet = seal_initial(_crypto_frame(0, message), b"\x01" * 8)
    assert parse_quic_initial(packet) is not None
    flipped = bytearray(packet)
    flipped[-20] ^= 0x01
    assert parse_quic_initial(bytes(flipped)) is None  # AEAD tag fails
    for cut in (10, 30, 100, len(packet) - 1):
        assert parse_quic_initial(packet[:cut]) is None


def test_random_mutations_raise_nothing_but_tls_parse_error() -> None:
    message = real_client_hello_message("fuzz.test", ["h3"])
    rng = random.Random(99)
    # Mutate the plaintext (so decryption succeeds and the frame/TLS parsers see the damage)
    # and the protected packet (header parsing).
    for _ in range(150):
        frames = bytearray(_crypto_frame(0, message))
        for _ in range(rng.randint(1, 4)):
            frames[rng.randrange(len(frames))] = rng.randrange(256)
        packet = bytearray(seal_initial(bytes(frames), b"\x02" * 8))
        if rng.random() < 0.5:
            packet[rng.randrange(40)] = rng.randrange(256)
        with contextlib.suppress(TLSParseError):
            parse_quic_initial(bytes(packet))
