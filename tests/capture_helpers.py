"""Builders for the capture-engine tests: frames, TCP sessions and pcap/pcapng files.

Packets are made with scapy (IP/TCP/UDP with correct lengths); the file formats are written by
hand with ``struct`` so that byte order, timestamp resolution and odd blocks can be chosen.
"""

from __future__ import annotations

import contextlib
import ssl
import struct
from collections.abc import Iterable
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Raw

ETH_SRC = b"\x02\x00\x00\x00\x00\x01"
ETH_DST = b"\x02\x00\x00\x00\x00\x02"

Frame = tuple[float, bytes]


def ether(payload: bytes, ethertype: int = 0x0800, tags: Iterable[int] = ()) -> bytes:
    """An Ethernet frame; ``tags`` are TPIDs (0x8100, 0x88a8, 0x9100) of VLAN tags, outer first."""
    header = ETH_DST + ETH_SRC
    for index, tpid in enumerate(tags):
        header += struct.pack("!HH", tpid, 100 + index)
    return header + struct.pack("!H", ethertype) + payload


def tcp_packet(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    flags: str,
    payload: bytes = b"",
    ack: int = 0,
) -> bytes:
    """IPv4 or IPv6 + TCP bytes (no link layer)."""
    ip: Packet = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    segment = TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags)
    return bytes(ip / segment / Raw(payload)) if payload else bytes(ip / segment)


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    ip: Packet = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return bytes(ip / UDP(sport=sport, dport=dport) / Raw(payload))


def tcp_session(
    client: tuple[str, int],
    server: tuple[str, int],
    client_segments: list[bytes],
    server_segments: list[bytes] = (),  # type: ignore[assignment]
    *,
    start: float = 1_700_000_000.0,
    with_syn: bool = True,
    with_fin: bool = True,
    client_isn: int = 1000,
    server_isn: int = 5000,
) -> list[tuple[float, bytes]]:
    """IP packets (ts, bytes) of a whole TCP connection: handshake, data in order, FIN both ways.

    Client segments are sent first, then server segments (each acknowledged).
    """
    (cip, cport), (sip, sport) = client, server
    packets: list[tuple[float, bytes]] = []
    ts = start
    c_seq, s_seq = client_isn, server_isn

    def add(raw: bytes) -> None:
        nonlocal ts
        packets.append((ts, raw))
        ts += 0.001

    if with_syn:
        add(tcp_packet(cip, sip, cport, sport, c_seq, "S"))
        add(tcp_packet(sip, cip, sport, cport, s_seq, "SA", ack=c_seq + 1))
        c_seq += 1
        s_seq += 1
        add(tcp_packet(cip, sip, cport, sport, c_seq, "A", ack=s_seq))
    for data in client_segments:
        add(tcp_packet(cip, sip, cport, sport, c_seq, "PA", data, ack=s_seq))
        c_seq += len(data)
    for data in server_segments:
        add(tcp_packet(sip, cip, sport, cport, s_seq, "PA", data, ack=c_seq))
        s_seq += len(data)
    if with_fin:
        add(tcp_packet(cip, sip, cport, sport, c_seq, "FA", ack=s_seq))
        add(tcp_packet(sip, cip, sport, cport, s_seq, "FA", ack=c_seq + 1))
        add(tcp_packet(cip, sip, cport, sport, c_seq + 1, "A", ack=s_seq + 1))
    return packets


def write_pcap(
    path: Path,
    frames: Iterable[Frame],
    linktype: int = 1,
    *,
    big_endian: bool = False,
    nanoseconds: bool = False,
    snaplen: int = 0,
) -> Path:
    """A classic pcap file. ``snaplen`` > 0 cuts frames like ``tcpdump -s``."""
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    with path.open("wb") as out:
        out.write(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen or 262144, linktype))
        for ts, frame in frames:
            seconds = int(ts)
            fraction = round((ts - seconds) * (1e9 if nanoseconds else 1e6))
            kept = frame[:snaplen] if snaplen else frame
            out.write(struct.pack(order + "IIII", seconds, fraction, len(kept), len(frame)))
            out.write(kept)
    return path


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def pcapng_block(block_type: int, body: bytes, order: str = "<") -> bytes:
    body = _pad4(body)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def pcapng_section(order: str = "<") -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return pcapng_block(0x0A0D0D0A, body, order)


def pcapng_interface(
    linktype: int, tsresol: int | None = None, tsoffset: int = 0, order: str = "<"
) -> bytes:
    options = b""
    if tsresol is not None:
        options += struct.pack(order + "HH", 9, 1) + _pad4(bytes([tsresol]))
    if tsoffset:
        options += struct.pack(order + "HHq", 14, 8, tsoffset)
    if options:
        options += struct.pack(order + "HH", 0, 0)
    return pcapng_block(1, struct.pack(order + "HHI", linktype, 0, 0) + options, order)


def pcapng_packet(interface: int, units: int, frame: bytes, order: str = "<") -> bytes:
    """An enhanced packet block; ``units`` is the timestamp in the interface's resolution."""
    body = (
        struct.pack(
            order + "IIIII", interface, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)
        )
        + frame
    )
    return pcapng_block(6, body, order)


def real_tls_flights(server_name: str, tls13: bool = False) -> tuple[bytes, bytes]:
    """(ClientHello flight, server flight) of a real OpenSSL handshake done in memory."""
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(server_name).configure_cert(server_ctx)
    if not tls13:
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # certificate in cleartext
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    with contextlib.suppress(ssl.SSLWantReadError):  # waits for the server's answer
        client.do_handshake()
    client_flight = c_out.read()
    s_in.write(client_flight)
    with contextlib.suppress(ssl.SSLWantReadError):
        server.do_handshake()
    return client_flight, s_out.read()


def dns_query_bytes(name: str, transaction_id: int = 0x1234, qtype: int = 1) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        struct.pack("!HHHHHH", transaction_id, 0x0100, 1, 0, 0, 0)
        + question
        + struct.pack("!HH", qtype, 1)
    )


def dns_response_bytes(name: str, address: str, transaction_id: int = 0x1234) -> bytes:
    """A response with the question and one compressed A answer (pointer to offset 12)."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    answer = (
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes(int(x) for x in address.split("."))
    )
    header = struct.pack("!HHHHHH", transaction_id, 0x8180, 1, 1, 0, 0)
    return header + question + struct.pack("!HH", 1, 1) + answer
