"""Packet decoding: every link layer, VLAN tags, IPv4 options and fragments, IPv6 extension
headers, and the tunnels (GRE, ERSPAN, VXLAN, Geneve) opened to reach the inner flow."""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest
from capture_helpers import ether, tcp_packet, udp_packet
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Raw

from auditor.capture import packets as packets_module
from auditor.capture.packets import TCP_SYN, Packet, address_text, decode

INNER = tcp_packet("192.0.2.10", "198.51.100.20", 41000, 443, 77, "PA", b"hello")
INNER6 = tcp_packet("2001:db8::10", "2001:db8::20", 41000, 443, 77, "PA", b"hello")


def decoded(linktype: int, frame: bytes) -> tuple[Packet | None, Counter[str]]:
    skipped: Counter[str] = Counter()
    return decode(linktype, frame, skipped), skipped


def assert_inner(packet: Packet | None, v6: bool = False) -> None:
    assert packet is not None
    assert address_text(packet.src) == ("2001:db8::10" if v6 else "192.0.2.10")
    assert address_text(packet.dst) == ("2001:db8::20" if v6 else "198.51.100.20")
    assert (packet.sport, packet.dport, packet.seq) == (41000, 443, 77)
    assert packet.payload == b"hello"


@pytest.mark.parametrize(
    ("linktype", "frame", "v6"),
    [
        (1, ether(INNER), False),
        (1, ether(INNER6, 0x86DD), True),
        (1, ether(INNER, tags=[0x8100]), False),
        (1, ether(INNER, tags=[0x88A8, 0x8100]), False),  # QinQ
        (1, ether(INNER, tags=[0x9100, 0x8100]), False),
        (113, struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800) + INNER, False),  # SLL
        (276, struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"\x02" * 8) + INNER6, True),
        (101, INNER, False),
        (101, INNER6, True),
        (228, INNER, False),
        (229, INNER6, True),
        (0, struct.pack("<I", 2) + INNER, False),  # null, little-endian host
        (0, struct.pack(">I", 2) + INNER, False),  # null, big-endian host
        (0, struct.pack("<I", 30) + INNER6, True),  # macOS AF_INET6
        (108, struct.pack(">I", 24) + INNER6, True),  # OpenBSD loop
        (1, ether(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 0), None),
    ],
    ids=[
        "ethernet",
        "ethernet-ipv6",
        "vlan",
        "qinq-88a8",
        "qinq-9100",
        "sll",
        "sll2",
        "raw-v4",
        "raw-v6",
        "ipv4",
        "ipv6",
        "null-le",
        "null-be",
        "null-v6",
        "loop",
        "not-ip",
    ],
)
def test_link_layers(linktype: int, frame: bytes, v6: bool | None):
    packet, skipped = decoded(linktype, frame)
    if v6 is None:
        assert packet is None and skipped
        return
    assert_inner(packet, v6)
    assert not skipped


def test_unsupported_link_type_is_counted():
    packet, skipped = decoded(147, b"\x00" * 60)
    assert packet is None
    assert skipped == Counter({"unsupported-linktype-147": 1})


def test_ethernet_padding_is_not_payload():
    syn = tcp_packet("192.0.2.1", "192.0.2.2", 1000, 80, 5, "S")
    packet, _ = decoded(1, ether(syn) + b"\x00" * 6)
    assert packet is not None and packet.payload == b"" and packet.flags & TCP_SYN


def test_ipv4_options_are_skipped():
    raw = bytes(
        IP(src="192.0.2.10", dst="198.51.100.20", options=[b"\x07\x07\x04" + b"\x00" * 4 + b"\x01"])
        / TCP(sport=41000, dport=443, seq=77, flags="PA")
        / Raw(b"hello")
    )
    assert raw[0] & 0x0F > 5
    packet, _ = decoded(101, raw)
    assert_inner(packet)


def test_non_first_ipv4_fragment_is_skipped_and_counted():
    first, second = (
        bytes(p)
        for p in (
            IP(src="192.0.2.1", dst="192.0.2.2", flags="MF", frag=0, proto=6)
            / Raw(bytes(TCP(sport=1, dport=2)) + b"A" * 16),
            IP(src="192.0.2.1", dst="192.0.2.2", frag=5, proto=6) / Raw(b"B" * 16),
        )
    )
    packet, skipped = decoded(101, first)
    assert packet is not None and packet.sport == 1
    packet, skipped = decoded(101, second)
    assert packet is None and skipped == Counter({"non-first-fragment": 1})


def test_ipv6_extension_headers_are_walked():
    raw = bytes(
        IPv6(src="2001:db8::10", dst="2001:db8::20")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=[])
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrFragment(offset=0, m=0)
        / TCP(sport=41000, dport=443, seq=77, flags="PA")
        / Raw(b"hello")
    )
    packet, skipped = decoded(101, raw)
    assert_inner(packet, v6=True)
    assert not skipped


def test_ipv6_non_first_fragment_is_skipped_and_counted():
    raw = bytes(
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrFragment(offset=8, nh=6)
        / Raw(b"x" * 8)
    )
    packet, skipped = decoded(101, raw)
    assert packet is None and skipped == Counter({"non-first-fragment": 1})


def test_snap_length_cut_is_parsed_as_far_as_it_goes():
    frame = ether(tcp_packet("192.0.2.10", "198.51.100.20", 41000, 443, 77, "PA", b"x" * 500))
    packet, skipped = decoded(1, frame[:100])
    assert packet is not None and packet.truncated
    assert len(packet.payload) == 100 - 54
    assert packet.ip_payload_len == 20 + 500  # what crossed the wire, not what was kept
    assert not skipped


@pytest.mark.parametrize("cut", [5, 14, 20, 30, 40])
def test_truncated_headers_are_counted_not_raised(cut: int):
    packet, skipped = decoded(1, ether(INNER)[:cut])
    assert packet is None
    assert skipped == Counter({"truncated-packet": 1})


def outer_ipv4(protocol: int, payload: bytes) -> bytes:
    return bytes(IP(src="10.9.9.1", dst="10.9.9.2", proto=protocol) / Raw(payload))


def test_gre_carrying_ipv4():
    packet, _ = decoded(1, ether(outer_ipv4(47, struct.pack("!HH", 0, 0x0800) + INNER)))
    assert_inner(packet)


def test_gre_with_key_and_sequence_carrying_ethernet():
    gre = struct.pack("!HHII", 0x3000, 0x6558, 42, 7) + ether(INNER)
    packet, _ = decoded(1, ether(outer_ipv4(47, gre)))
    assert_inner(packet)


def test_erspan_type_1_2_and_3():
    type_1 = struct.pack("!HH", 0x0000, 0x88BE) + ether(INNER)
    type_2 = struct.pack("!HHI", 0x1000, 0x88BE, 1) + b"\x10\x01\x00\x05" + b"\x00" * 4
    type_2 += ether(INNER)
    type_3_header = b"\x20\x01\x00\x05" + b"\x00" * 4 + b"\x00\x00" + b"\x00\x01"  # O bit set
    type_3 = struct.pack("!HHI", 0x1000, 0x22EB, 1) + type_3_header + b"\xaa" * 8 + ether(INNER)
    for gre in (type_1, type_2, type_3):
        packet, skipped = decoded(1, ether(outer_ipv4(47, gre)))
        assert_inner(packet)
        assert not skipped


def test_vxlan_and_geneve():
    vxlan = udp_packet("10.9.9.1", "10.9.9.2", 55555, 4789, b"\x08\0\0\0\0\0\x01\0" + ether(INNER))
    geneve_header = struct.pack("!BBHI", 0x01, 0, 0x6558, 0x00000100) + b"\x01\x02\x03\x04"
    geneve = udp_packet("10.9.9.1", "10.9.9.2", 55555, 6081, geneve_header + ether(INNER6, 0x86DD))
    packet, _ = decoded(1, ether(vxlan))
    assert_inner(packet)
    packet, _ = decoded(1, ether(geneve))
    assert_inner(packet, v6=True)


def test_tunnel_nesting_is_bounded():
    frame = INNER
    for _ in range(10):
        frame = outer_ipv4(47, struct.pack("!HH", 0, 0x0800) + frame)
    packet, skipped = decoded(101, frame)
    assert packet is None and skipped == Counter({"not-tcp-udp": 1})


def test_udp_packet_fields():
    raw = bytes(IP(src="192.0.2.1", dst="192.0.2.53") / UDP(sport=5353, dport=53) / Raw(b"q" * 12))
    packet, _ = decoded(101, raw)
    assert packet is not None and packet.transport == 17
    assert (packet.sport, packet.dport, packet.payload) == (5353, 53, b"q" * 12)
    assert packet.key == packet.src + packet.dst + struct.pack("!HH", 5353, 53)


def test_random_bytes_never_raise():
    import random

    rng = random.Random(5)
    skipped: Counter[str] = Counter()
    for _ in range(3000):
        frame = bytearray(ether(INNER))
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        for linktype in (0, 1, 101, 113, 276):
            decode(linktype, bytes(frame[: rng.randrange(len(frame) + 1)]), skipped)


def _general(frame: bytes) -> tuple[Packet | None, Counter[str]]:
    """What the general decoder (no IPv4 shortcut) makes of an Ethernet frame."""
    skipped: Counter[str] = Counter()
    try:
        return packets_module._ethernet(frame, 0, skipped, 0), skipped
    except (IndexError, struct.error):
        skipped["truncated-packet"] += 1
        return None, skipped


def _fields(packet: Packet | None) -> tuple[object, ...] | None:
    if packet is None:
        return None
    return tuple(getattr(packet, name) for name in Packet.__slots__)


def test_ethernet_ipv4_shortcut_matches_the_general_decoder():
    # Every cut and many single-byte changes of plain, padded, optioned and tunnel frames:
    # decode's Ethernet/IPv4 shortcut must give exactly what the general decoder gives.
    bases = [
        ether(tcp_packet("192.0.2.1", "198.51.100.2", 41000, 443, 7, "PA", b"payload" * 3)),
        ether(tcp_packet("192.0.2.1", "198.51.100.2", 41000, 443, 7, "S")) + b"\0" * 6,
        ether(udp_packet("192.0.2.1", "198.51.100.2", 5353, 53, b"\x12\x34" + b"q" * 20)),
        ether(udp_packet("192.0.2.1", "198.51.100.2", 4000, 4789, b"\x08" + b"\0" * 30)),
        ether(bytes(IP(src="192.0.2.1", dst="198.51.100.2", options=b"\x01" * 4) / TCP())),
    ]
    rng = random.Random(5)
    frames = []
    for base in bases:
        frames += [base[:cut] for cut in range(len(base) + 1)]
        # Every IPv4 total length, up to past the frame (padding, snap-length cuts).
        frames += [base[:16] + struct.pack("!H", n) + base[18:] for n in range(len(base) + 8)]
        for _ in range(300):
            mutated = bytearray(base)
            mutated[rng.randrange(12, min(len(base), 60))] = rng.randrange(256)
            frames.append(bytes(mutated))
    fast_taken = 0
    for frame in frames:
        fast, fast_skipped = decoded(1, frame)
        general, general_skipped = _general(frame)
        assert _fields(fast) == _fields(general), frame.hex()
        assert fast_skipped == general_skipped, frame.hex()
        fast_taken += fast is not None
    assert fast_taken > 1000


def test_address_texts_are_kept_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packets_module, "_address_texts", {})
    monkeypatch.setattr(packets_module, "_ADDRESS_TEXTS_MAX", 2)
    addresses = [bytes([192, 0, 2, n]) for n in (1, 2, 3)] + [bytes(15) + b"\x01"]
    for _ in range(2):
        assert [address_text(a) for a in addresses] == [
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "::1",
        ]
        assert len(packets_module._address_texts) <= 2
