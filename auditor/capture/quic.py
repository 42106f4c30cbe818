"""QUIC Initial packets: decrypt a client's Initial and read the TLS ClientHello inside it.

    traffic -> source -> [observations] -> detectors -> ...

The capture engine calls ``parse_quic_initial`` on UDP payloads (typically to port 443). QUIC
encrypts even its first packet, but with keys anyone can derive from the packet's Destination
Connection ID (RFC 9001 §5.2), so the ClientHello (SNI, ALPN, JA4 with transport "q") is as
visible as over TCP. The result is the same ``ClientHello`` as ``auditor.capture.tls`` gives,
with ``over_quic=True`` and ``record_version=0`` (QUIC has no TLS record layer).

Supported: QUIC v1 (RFC 9000/9001) and v2 (RFC 9369). A ClientHello larger than one Initial
packet (post-quantum key shares, Chrome's several-packet first flight) is only complete across
datagrams: ``parse_quic_initial`` then returns None for the first datagram, and
``parse_quic_initials`` takes the client's first datagrams together.

Never raises for QUIC-level problems (not QUIC, not an Initial, failed decryption, bad frames):
those return None and are worth counting. A decrypted ClientHello that is malformed raises
``TLSParseError`` like the TCP parser does.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from auditor.capture.tls import HANDSHAKE_CLIENT_HELLO, parse_client_hello
from auditor.enrich.fingerprints import ja4
from auditor.model import ClientHello

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF

# Per-version constants: the Initial salt (RFC 9001 §5.2, RFC 9369 §3.3.1), the long-header
# packet type of Initial (RFC 9369 §3.2 swaps the codes), and the HKDF label prefix.
_VERSION_PARAMETERS: dict[int, tuple[bytes, int, str]] = {
    QUIC_V1: (bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"), 0b00, "quic"),
    QUIC_V2: (bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"), 0b01, "quicv2"),
}

MAX_CONNECTION_ID = 20  # RFC 9000 §17.2
FRAME_PADDING = 0x00
FRAME_PING = 0x01
FRAME_ACK = 0x02
FRAME_ACK_ECN = 0x03
FRAME_CRYPTO = 0x06
FRAME_CONNECTION_CLOSE = 0x1C
MAX_CRYPTO_OFFSET = 2**16  # a ClientHello is a few kB; a larger offset is not a first flight


class _Malformed(Exception):
    """Internal: the packet is not a decryptable client Initial."""


def _hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    """HKDF-Expand-Label of TLS 1.3 (RFC 8446 §7.1) with an empty context."""
    # cryptography is imported where a QUIC Initial is decrypted: most captures have none,
    # and its import costs ~30 ms.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full_label = b"tls13 " + label.encode("ascii")
    info = length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label + b"\x00"
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(secret)


def initial_client_keys(dcid: bytes, version: int = QUIC_V1) -> tuple[bytes, bytes, bytes]:
    """(key, iv, header-protection key) protecting a client's Initial packets."""
    salt, _, prefix = _VERSION_PARAMETERS[version]
    initial_secret = hmac.new(salt, dcid, hashlib.sha256).digest()  # HKDF-Extract
    client_secret = _hkdf_expand_label(initial_secret, "client in", 32)
    return (
        _hkdf_expand_label(client_secret, f"{prefix} key", 16),
        _hkdf_expand_label(client_secret, f"{prefix} iv", 12),
        _hkdf_expand_label(client_secret, f"{prefix} hp", 16),
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer (RFC 9000 §16) at ``pos``: (value, next position)."""
    if pos >= len(data):
        raise _Malformed("varint past the end")
    length = 1 << (data[pos] >> 6)
    if pos + length > len(data):
        raise _Malformed("varint past the end")
    value = data[pos] & 0x3F
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _decrypt_initial(datagram: bytes, pos: int) -> tuple[bytes, bytes, int]:
    """Decrypt the long-header packet at ``pos``: (DCID, plaintext payload, next packet pos)."""
    from cryptography.exceptions import InvalidTag  # see _hkdf_expand_label
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    first = datagram[pos]
    if not first & 0x80:
        raise _Malformed("short header")
    if len(datagram) - pos < 7:
        raise _Malformed("truncated long header")
    version = int.from_bytes(datagram[pos + 1 : pos + 5], "big")
    if version not in _VERSION_PARAMETERS:
        raise _Malformed(f"unsupported version 0x{version:08x}")
    _, initial_type, _ = _VERSION_PARAMETERS[version]
    if (first >> 4) & 0x03 != initial_type:
        raise _Malformed("not an Initial packet")
    cursor = pos + 5
    dcid_length = datagram[cursor]
    if dcid_length > MAX_CONNECTION_ID:
        raise _Malformed("connection id too long")
    dcid = datagram[cursor + 1 : cursor + 1 + dcid_length]
    cursor += 1 + dcid_length
    if cursor >= len(datagram):
        raise _Malformed("truncated header")
    scid_length = datagram[cursor]
    if scid_length > MAX_CONNECTION_ID:
        raise _Malformed("connection id too long")
    cursor += 1 + scid_length
    token_length, cursor = _varint(datagram, cursor)
    cursor += token_length
    length, pn_offset = _varint(datagram, cursor)
    end = pn_offset + length
    if end > len(datagram) or length < 20:
        raise _Malformed("packet length past the end of the datagram")

    key, iv, hp_key = initial_client_keys(dcid, version)
    # Header protection (RFC 9001 §5.4): the sample starts 4 bytes after the packet number.
    sample = datagram[pn_offset + 4 : pn_offset + 20]
    encryptor = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    first_plain = first ^ (mask[0] & 0x0F)
    pn_length = (first_plain & 0x03) + 1
    packet_number = bytes(
        b ^ m for b, m in zip(datagram[pn_offset : pn_offset + pn_length], mask[1:], strict=False)
    )
    # The AEAD's associated data is the header with its protection removed (RFC 9001 §5.3).
    header = bytes([first_plain]) + datagram[pos + 1 : pn_offset] + packet_number
    # Initial packet numbers are small: the truncated number is the full one in practice.
    nonce = bytes(
        a ^ b
        for a, b in zip(iv, int.from_bytes(packet_number, "big").to_bytes(12, "big"), strict=True)
    )
    try:
        plaintext = AESGCM(key).decrypt(nonce, datagram[pn_offset + pn_length : end], header)
    except InvalidTag:
        raise _Malformed("decryption failed") from None
    return dcid, plaintext, end


def _crypto_frames(plaintext: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of every CRYPTO frame of a decrypted Initial payload."""
    frames = []
    pos = 0
    while pos < len(plaintext):
        frame_type = plaintext[pos]
        pos += 1
        if frame_type in (FRAME_PADDING, FRAME_PING):
            continue
        if frame_type == FRAME_CRYPTO:
            offset, pos = _varint(plaintext, pos)
            length, pos = _varint(plaintext, pos)
            if pos + length > len(plaintext) or offset > MAX_CRYPTO_OFFSET:
                raise _Malformed("CRYPTO frame past the end")
            frames.append((offset, plaintext[pos : pos + length]))
            pos += length
        elif frame_type in (FRAME_ACK, FRAME_ACK_ECN):
            _, pos = _varint(plaintext, pos)  # largest acknowledged
            _, pos = _varint(plaintext, pos)  # ack delay
            ranges, pos = _varint(plaintext, pos)
            _, pos = _varint(plaintext, pos)  # first range
            for _ in range(ranges * 2):
                _, pos = _varint(plaintext, pos)
            if frame_type == FRAME_ACK_ECN:
                for _ in range(3):
                    _, pos = _varint(plaintext, pos)
        elif frame_type == FRAME_CONNECTION_CLOSE:
            _, pos = _varint(plaintext, pos)  # error code
            _, pos = _varint(plaintext, pos)  # frame type
            reason_length, pos = _varint(plaintext, pos)
            pos += reason_length
        else:
            raise _Malformed(f"frame type 0x{frame_type:02x} is not allowed in Initial packets")
    return frames


def _initial_crypto_frames(datagram: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """DCID and CRYPTO frames of every client Initial coalesced in one datagram."""
    frames: list[tuple[int, bytes]] = []
    dcid = b""
    pos = 0
    while pos < len(datagram):
        if pos and (not datagram[pos] & 0x80):
            break  # a coalesced short-header packet: not ours to read
        try:
            packet_dcid, plaintext, pos = _decrypt_initial(datagram, pos)
        except _Malformed:
            if not frames:
                raise
            break  # a later coalesced packet (0-RTT, Handshake) is not an Initial
        if dcid and packet_dcid != dcid:
            break
        dcid = packet_dcid
        frames.extend(_crypto_frames(plaintext))
    return dcid, frames


def _client_hello_from_crypto(frames: Iterable[tuple[int, bytes]]) -> ClientHello | None:
    """Join CRYPTO data in offset order from 0; parse the ClientHello when it is complete."""
    stream = bytearray()
    for offset, data in sorted(frames, key=lambda frame: frame[0]):
        if offset > len(stream):
            break  # a gap: the missing part is in a datagram we do not have
        stream[offset : offset + len(data)] = data
    if len(stream) < 4 or stream[0] != HANDSHAKE_CLIENT_HELLO:
        return None
    length = int.from_bytes(stream[1:4], "big")
    if len(stream) < 4 + length:
        return None
    hello = parse_client_hello(bytes(stream[4 : 4 + length]), record_version=0)
    hello.over_quic = True
    hello.ja4, hello.ja4_r = ja4(hello, transport="q")
    return hello


def parse_quic_initial(payload: bytes) -> ClientHello | None:
    """The ClientHello in one UDP payload holding a client's QUIC Initial, else None.

    None also when the ClientHello continues in a later datagram (see ``parse_quic_initials``).
    """
    try:
        _, frames = _initial_crypto_frames(payload)
    except (_Malformed, IndexError, ValueError):
        return None
    return _client_hello_from_crypto(frames)


def parse_quic_initials(payloads: Iterable[bytes]) -> ClientHello | None:
    """The ClientHello spread over a client's first Initial datagrams (same DCID), else None."""
    frames: list[tuple[int, bytes]] = []
    first_dcid: bytes | None = None
    for payload in payloads:
        try:
            dcid, datagram_frames = _initial_crypto_frames(payload)
        except (_Malformed, IndexError, ValueError):
            continue
        if first_dcid is None:
            first_dcid = dcid
        if dcid == first_dcid:
            frames.extend(datagram_frames)
    return _client_hello_from_crypto(frames) if frames else None
