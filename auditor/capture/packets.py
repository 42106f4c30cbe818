"""Packet decoding: link layer, IP and TCP/UDP headers of one captured frame.

Second stage of the capture source (``reader -> packets -> flows -> parsers -> engine``). It
turns ``(link type, frame bytes)`` into a ``Packet`` (addresses, ports, TCP flags and sequence
number, payload) with plain ``struct`` reads, or ``None`` with the reason counted in
``skipped``. It never raises on bad bytes.

Link layers: Ethernet (with 802.1Q / QinQ tags 0x8100, 0x88a8, 0x9100, MPLS and PPPoE), Linux
cooked SLL (113) and SLL2 (276), raw IP (101, 228, 229), BSD loopback/null (0, 108).
Network: IPv4 with options (non-first fragments skipped and counted) and IPv6 (extension
headers walked). Tunnels are opened so the inner traffic is analysed: GRE (incl. ERSPAN I, II,
III), VXLAN (UDP 4789), Geneve (UDP 6081), IP-in-IP.

The engine's fast path (``engine._pcap_loop`` / ``_record_loop``, and ``_fastpath.c``) looks
known flows up by key bytes sliced straight from the frame (Ethernet, IPv4 or IPv6);
``Packet.key`` is built so that it equals them (``src + dst + sport + dport``).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter

# Link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
ETHERTYPE_ERSPAN_I_II = 0x88BE
ETHERTYPE_ERSPAN_III = 0x22EB
ETHERTYPE_MPLS = (0x8847, 0x8848)
ETHERTYPE_PPPOE_SESSION = 0x8864
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)

IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47

VXLAN_PORT = 4789
GENEVE_PORT = 6081

# IPv6 extension headers walked to reach the transport header (RFC 8200 section 4).
_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_FRAGMENT, _IPV6_AH, _IPV6_NO_NEXT, _IPV6_DEST_OPTS = (
    0,
    43,
    44,
    51,
    59,
    60,
)
_IPV6_EXTENSIONS = frozenset((0, 43, 44, 51, 60, 135, 139, 140))
# BSD loopback address family values meaning IPv6 (OpenBSD/NetBSD 24, FreeBSD 28, macOS 30,
# Linux 10); IPv4 is 2 everywhere.
_NULL_AF_INET = 2
_NULL_AF_INET6 = frozenset((10, 24, 28, 30))

# Tunnels inside tunnels are opened up to this depth; deeper nesting is malformed or hostile.
MAX_ENCAPSULATION_DEPTH = 4
_MAX_VLAN_TAGS = 4
_MAX_IPV6_EXTENSIONS = 16

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_u16 = struct.Struct("!H").unpack_from
_tcp_header = struct.Struct("!HHII").unpack_from
_udp_header = struct.Struct("!HHH").unpack_from
_ports = struct.Struct("!HH").pack


class Packet:
    """One TCP or UDP packet, decoded as far as needed for flows and reassembly."""

    __slots__ = (
        "dport",
        "dst",
        "flags",
        "ip_payload_len",
        "key",
        "payload",
        "seq",
        "sport",
        "src",
        "transport",
        "truncated",
    )

    def __init__(
        self,
        transport: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        flags: int,
        seq: int,
        payload: bytes,
        ip_payload_len: int,
        truncated: bool = False,
    ) -> None:
        self.transport = transport  # IPPROTO_TCP or IPPROTO_UDP
        self.src = src  # 4 or 16 address bytes
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.flags = flags  # TCP flags, 0 for UDP
        self.seq = seq
        self.payload = payload  # as captured (may be cut short by the snap length)
        self.ip_payload_len = ip_payload_len  # from the IP header: what crossed the wire
        self.truncated = truncated  # the snap length cut the payload short
        self.key = src + dst + _ports(sport, dport)  # this direction's flow-table key


# Address texts by address bytes: the same few clients, resolvers and servers open most flows,
# and inet_ntop costs ten times a lookup. Emptied when full.
_address_texts: dict[bytes, str] = {}
_ADDRESS_TEXTS_MAX = 65536


def address_text(raw: bytes) -> str:
    """'192.0.2.1' or '2001:db8::1' from 4 or 16 address bytes."""
    text = _address_texts.get(raw)
    if text is None:
        if len(_address_texts) >= _ADDRESS_TEXTS_MAX:
            _address_texts.clear()
        text = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        _address_texts[raw] = text
    return text


def decode(linktype: int, frame: bytes, skipped: Counter[str]) -> Packet | None:
    """The TCP/UDP packet in ``frame``, or None (reason counted in ``skipped``)."""
    try:
        if linktype == LINKTYPE_ETHERNET:
            if frame[12:14] == b"\x08\x00":  # IPv4 straight away: most frames, two calls fewer
                return _ipv4(frame, 14, skipped, 0)
            return _ethernet(frame, 0, skipped, 0)
        if linktype == LINKTYPE_LINUX_SLL:
            if len(frame) < 16:
                skipped["truncated-packet"] += 1
                return None
            return _ethertype(_u16(frame, 14)[0], frame, 16, skipped, 0)
        if linktype == LINKTYPE_LINUX_SLL2:
            if len(frame) < 20:
                skipped["truncated-packet"] += 1
                return None
            return _ethertype(_u16(frame, 0)[0], frame, 20, skipped, 0)
        if linktype == LINKTYPE_RAW:
            return _ip_by_version(frame, 0, skipped, 0)
        if linktype == LINKTYPE_IPV4:
            return _ipv4(frame, 0, skipped, 0)
        if linktype == LINKTYPE_IPV6:
            return _ipv6(frame, 0, skipped, 0)
        if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            return _null(linktype, frame, skipped)
    except (IndexError, struct.error):
        # Every length is checked before it is read; this is the last line of defence.
        skipped["truncated-packet"] += 1
        return None
    skipped[f"unsupported-linktype-{linktype}"] += 1
    return None


def _null(linktype: int, frame: bytes, skipped: Counter[str]) -> Packet | None:
    if len(frame) < 4:
        skipped["truncated-packet"] += 1
        return None
    # DLT_NULL stores the family in the capturing host's byte order, LOOP in network order.
    if linktype == LINKTYPE_LOOP:
        family = int.from_bytes(frame[:4], "big")
    else:
        family = int.from_bytes(frame[:4], "little")
        if family > 0xFFFF:
            family = int.from_bytes(frame[:4], "big")
    if family == _NULL_AF_INET:
        return _ipv4(frame, 4, skipped, 0)
    if family in _NULL_AF_INET6:
        return _ipv6(frame, 4, skipped, 0)
    skipped["not-ip"] += 1
    return None


def _ethernet(frame: bytes, off: int, skipped: Counter[str], depth: int) -> Packet | None:
    if len(frame) < off + 14:
        skipped["truncated-packet"] += 1
        return None
    return _ethertype(_u16(frame, off + 12)[0], frame, off + 14, skipped, depth)


def _ethertype(
    ethertype: int, frame: bytes, off: int, skipped: Counter[str], depth: int
) -> Packet | None:
    tags = 0
    while ethertype in VLAN_TPIDS:
        tags += 1
        if tags > _MAX_VLAN_TAGS or len(frame) < off + 4:
            skipped["truncated-packet" if tags <= _MAX_VLAN_TAGS else "malformed-vlan"] += 1
            return None
        ethertype = _u16(frame, off + 2)[0]
        off += 4
    if ethertype == ETHERTYPE_IPV4:
        return _ipv4(frame, off, skipped, depth)
    if ethertype == ETHERTYPE_IPV6:
        return _ipv6(frame, off, skipped, depth)
    if ethertype in ETHERTYPE_MPLS:
        # Pop labels to the bottom of the stack, then guess IPv4/IPv6 from the version nibble.
        for _ in range(8):
            if len(frame) < off + 4:
                skipped["truncated-packet"] += 1
                return None
            bottom = frame[off + 2] & 0x01
            off += 4
            if bottom:
                return _ip_by_version(frame, off, skipped, depth)
        skipped["malformed-mpls"] += 1
        return None
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        if len(frame) < off + 8:
            skipped["truncated-packet"] += 1
            return None
        ppp_protocol = _u16(frame, off + 6)[0]
        if ppp_protocol == 0x0021:
            return _ipv4(frame, off + 8, skipped, depth)
        if ppp_protocol == 0x0057:
            return _ipv6(frame, off + 8, skipped, depth)
    skipped["not-ip"] += 1
    return None


def _ip_by_version(frame: bytes, off: int, skipped: Counter[str], depth: int) -> Packet | None:
    if len(frame) <= off:
        skipped["truncated-packet"] += 1
        return None
    version = frame[off] >> 4
    if version == 4:
        return _ipv4(frame, off, skipped, depth)
    if version == 6:
        return _ipv6(frame, off, skipped, depth)
    skipped["not-ip"] += 1
    return None


def _ipv4(frame: bytes, off: int, skipped: Counter[str], depth: int) -> Packet | None:
    if len(frame) < off + 20:
        skipped["truncated-packet"] += 1
        return None
    version_ihl = frame[off]
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < 20:
        skipped["malformed-ip"] += 1
        return None
    total_length = _u16(frame, off + 2)[0]
    if _u16(frame, off + 6)[0] & 0x1FFF:
        # Only the first fragment carries the transport header; reassembling IP fragments is
        # not worth it for handshakes (they fit in one packet) and is a classic attack surface.
        skipped["non-first-fragment"] += 1
        return None
    # total_length 0 happens with TCP segmentation offload on the capturing host.
    end = off + total_length if total_length >= ihl else len(frame)
    truncated = end > len(frame)  # snap length shorter than the packet
    end = min(end, len(frame))  # Ethernet padding beyond total_length is not payload
    start = off + ihl
    if start > len(frame):
        skipped["truncated-packet"] += 1
        return None
    ip_payload_len = (total_length or (len(frame) - off)) - ihl
    return _transport(
        frame[off + 9],
        frame,
        start,
        end,
        frame[off + 12 : off + 16],
        frame[off + 16 : off + 20],
        ip_payload_len,
        truncated,
        skipped,
        depth,
    )


def _ipv6(frame: bytes, off: int, skipped: Counter[str], depth: int) -> Packet | None:
    if len(frame) < off + 40:
        skipped["truncated-packet"] += 1
        return None
    if frame[off] >> 4 != 6:
        skipped["malformed-ip"] += 1
        return None
    payload_length = _u16(frame, off + 4)[0]
    next_header = frame[off + 6]
    pos = off + 40
    # payload_length 0: jumbogram or offload; take what was captured.
    truncated = pos + payload_length > len(frame)
    end = min(pos + payload_length, len(frame)) if payload_length else len(frame)
    ip_payload_len = payload_length or (len(frame) - pos)
    walked = 0
    while next_header in _IPV6_EXTENSIONS:
        walked += 1
        if walked > _MAX_IPV6_EXTENSIONS:
            skipped["malformed-ip"] += 1
            return None
        if pos + 8 > end:
            skipped["truncated-packet"] += 1
            return None
        if next_header == _IPV6_FRAGMENT:
            if _u16(frame, pos + 2)[0] >> 3:
                skipped["non-first-fragment"] += 1
                return None
            next_header = frame[pos]
            pos += 8
        elif next_header == _IPV6_AH:
            next_header, length = frame[pos], frame[pos + 1]
            pos += (length + 2) * 4
        else:
            next_header, length = frame[pos], frame[pos + 1]
            pos += (length + 1) * 8
    if next_header == _IPV6_NO_NEXT:
        return None
    if pos > end:
        skipped["truncated-packet"] += 1
        return None
    return _transport(
        next_header,
        frame,
        pos,
        end,
        frame[off + 8 : off + 24],
        frame[off + 24 : off + 40],
        ip_payload_len,
        truncated,
        skipped,
        depth,
    )


def _transport(
    protocol: int,
    frame: bytes,
    off: int,
    end: int,
    src: bytes,
    dst: bytes,
    ip_payload_len: int,
    truncated: bool,
    skipped: Counter[str],
    depth: int,
) -> Packet | None:
    if protocol == IPPROTO_TCP:
        if end < off + 20:
            skipped["truncated-packet"] += 1
            return None
        sport, dport, seq, _ack = _tcp_header(frame, off)
        data_offset = (frame[off + 12] >> 4) * 4
        if data_offset < 20:
            skipped["malformed-tcp"] += 1
            return None
        flags = frame[off + 13]
        payload = frame[off + data_offset : end] if off + data_offset < end else b""
        return Packet(
            IPPROTO_TCP, src, dst, sport, dport, flags, seq, payload, ip_payload_len, truncated
        )
    if protocol == IPPROTO_UDP:
        if end < off + 8:
            skipped["truncated-packet"] += 1
            return None
        sport, dport, udp_length = _udp_header(frame, off)
        if udp_length >= 8:
            end = min(end, off + udp_length)
        payload = frame[off + 8 : end]
        if depth < MAX_ENCAPSULATION_DEPTH:
            if dport == VXLAN_PORT and len(payload) >= 8 and payload[0] & 0x08:
                return _ethernet(payload, 8, skipped, depth + 1)
            if dport == GENEVE_PORT and len(payload) >= 8 and payload[0] >> 6 == 0:
                inner = 8 + (payload[0] & 0x3F) * 4
                inner_type = _u16(payload, 2)[0]
                if inner_type == ETHERTYPE_TEB:
                    return _ethernet(payload, inner, skipped, depth + 1)
                return _ethertype(inner_type, payload, inner, skipped, depth + 1)
        return Packet(IPPROTO_UDP, src, dst, sport, dport, 0, 0, payload, ip_payload_len, truncated)
    if depth < MAX_ENCAPSULATION_DEPTH:
        if protocol == IPPROTO_GRE:
            return _gre(frame[off:end], skipped, depth + 1)
        if protocol == IPPROTO_IPIP:
            return _ipv4(frame[off:end], 0, skipped, depth + 1)
        if protocol == IPPROTO_IPV6:
            return _ipv6(frame[off:end], 0, skipped, depth + 1)
    skipped["not-tcp-udp"] += 1
    return None


def _gre(data: bytes, skipped: Counter[str], depth: int) -> Packet | None:
    """GRE (RFC 2784/2890) and the ERSPAN mirrors carried in it."""
    if len(data) < 4:
        skipped["truncated-packet"] += 1
        return None
    flags_version, protocol = struct.unpack_from("!HH", data)
    if flags_version & 0x07 or flags_version & 0x4000:
        # Version 1 (PPTP) carries PPP; source routing (R bit) is deprecated.
        skipped["unsupported-gre"] += 1
        return None
    pos = 4
    if flags_version & 0x8000:  # checksum + reserved
        pos += 4
    if flags_version & 0x2000:  # key
        pos += 4
    sequenced = bool(flags_version & 0x1000)
    if sequenced:
        pos += 4
    if protocol == ETHERTYPE_ERSPAN_I_II:
        # Type I has no sequence number and no ERSPAN header; type II has an 8-byte header.
        return _ethernet(data, pos + 8 if sequenced else pos, skipped, depth)
    if protocol == ETHERTYPE_ERSPAN_III:
        if len(data) < pos + 12:
            skipped["truncated-packet"] += 1
            return None
        frame_type = (data[pos + 10] >> 2) & 0x1F
        has_subheader = data[pos + 11] & 0x01
        inner = pos + 12 + (8 if has_subheader else 0)
        if frame_type == 0:
            return _ethernet(data, inner, skipped, depth)
        return _ip_by_version(data, inner, skipped, depth)
    if protocol == ETHERTYPE_TEB:
        return _ethernet(data, pos, skipped, depth)
    return _ethertype(protocol, data, pos, skipped, depth)
