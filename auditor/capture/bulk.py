"""The fast engine's bulk path: classic pcap read in large chunks, bulk packets counted with numpy.

    capture file -> reader (chunks) -> [this module] -> engine per-packet path -> observations

Most packets of a capture are bulk data on flows whose handshake is already parsed: all they
change is their direction's packet and byte counters and its ``last_seen``. The engine's
per-packet loop (``engine._pcap_loop``) takes them on an inlined fast path; this module takes
the same packets, with exactly the same rule, a chunk (``BULK_CHUNK`` bytes) at a time:

1. a tight loop finds where each record starts (the only per-packet Python);
2. numpy gathers, for every record at once, the fields the fast path reads: Ethernet type
   (one 802.1Q tag allowed), IPv4 without options and not a fragment, or IPv6 without
   extension headers, TCP/UDP, TCP flags, IP payload length, the flow-table key;
3. packets are grouped by key (a stable sort), and each key's direction is looked up once;
4. the packets the per-packet path must see (no known direction, flags, data on a direction
   still collecting, anything not plain Ethernet/IP/TCP/UDP) are handed to ``_Engine.packet``
   in capture order, as events; the bulk packets between them are added to their direction in
   one step (count, sum of bytes, time of the last one) just before anything can read those
   counters: before a packet of the same flow is handed over, and before an idle sweep or an
   eviction (which read every flow).

A direction's state changes only when a packet of its own flow is handed over, or when its
flow is removed from the table (``FlowTable.removed`` reports those); after each handed-over
packet those keys are looked up again and their next event is re-planned. So the decisions,
the counters and the order of observations are those of ``engine._pcap_loop``, packet for
packet; ``tests/test_capture_bulk.py`` checks it on generated and sample captures.
"""

from __future__ import annotations

import heapq
import struct
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from auditor.capture.flows import Direction
from auditor.capture.packets import IPPROTO_TCP, IPPROTO_UDP, Packet, decode
from auditor.capture.reader import Capture
from auditor.model import Observation

if TYPE_CHECKING:
    from auditor.capture.engine import _Engine

# Bytes of the file handled at a time: large enough that numpy's per-call cost vanishes, small
# enough to stay in memory comfortably (the reader adds what a record needs beyond it).
BULK_CHUNK = 16 << 20

# What a key's direction lets through without the per-packet path (see ``_Chunk.plan``).
_EVERY_PACKET_SLOW = 0  # no direction yet, or a UDP direction still collecting
_FLAGS_SLOW = 1  # the direction needs no more bytes: only SYN/FIN/RST packets are handed over
_DATA_SLOW = 2  # a TCP direction still collecting: pure ACKs are bulk, data is handed over


def bulk_pcap_loop(
    engine: _Engine, capture: Capture, chunk_size: int | None = None
) -> Iterator[Observation]:
    """Observations of a classic pcap (any link type; only Ethernet has a bulk path)."""
    chunk_size = chunk_size or BULK_CHUNK
    caplen_at = struct.Struct(capture.byte_order + "8xI").unpack_from
    buf: bytes | None = b""
    pos = 0
    packets = 0
    captured = 0
    try:
        while True:
            buf = capture.refill(buf, pos, chunk_size)  # type: ignore[arg-type]
            if buf is None:
                break
            starts, pos = _record_starts(buf, caplen_at)
            if not starts:
                continue
            chunk = _Chunk(engine, capture, buf, starts)
            packets += len(starts)
            captured += chunk.captured
            yield from chunk.run()
    finally:
        engine.stats.packets += packets
        engine.stats.bytes += captured


def _record_starts(buf: bytes, caplen_at: object) -> tuple[list[int], int]:
    """Offsets of the complete records in ``buf`` and where the first incomplete one starts."""
    unpack = caplen_at  # struct unpack_from reading the caplen field of a record header
    starts: list[int] = []
    add = starts.append
    pos = 0
    size = len(buf)
    limit = size - 16
    while pos <= limit:
        end = pos + 16 + unpack(buf, pos)[0]  # type: ignore[operator]
        if end > size:
            break
        add(pos)
        pos = end
    return starts, pos


def _byte_strided(buf: bytes, dtype: str) -> np.ndarray:
    """A view of ``buf`` with an item starting at every byte: ``view[i]`` reads ``buf[i:]``."""
    width = np.dtype(dtype).itemsize
    return np.ndarray((len(buf) - width + 1,), dtype=dtype, buffer=buf, strides=(1,))


class _Chunk:
    """One buffer of complete pcap records: what numpy tells of them, and the event loop."""

    def __init__(self, engine: _Engine, capture: Capture, buf: bytes, starts: list[int]) -> None:
        self.engine = engine
        self.buf = buf
        self.linktype = capture.linktype
        record = np.array(starts, dtype=np.int64)
        header_u32 = _byte_strided(buf, capture.byte_order + "u4")
        seconds = header_u32[record].astype(np.float64)
        fraction = header_u32[record + 4].astype(np.float64)
        caplen = header_u32[record + 8].astype(np.int64)
        self.captured = int(caplen.sum())
        # The same float arithmetic as the per-packet loop, so timestamps are bit-identical.
        self.ts: list[float] = (seconds + fraction * capture.frac_scale).tolist()
        self.frame_start: list[int] = (record + 16).tolist()
        self.frame_end: list[int] = (record + 16 + caplen).tolist()
        self.count = len(starts)
        if self.linktype == 1 and len(buf) >= 64:  # LINKTYPE_ETHERNET
            self._parse_ethernet(buf, record + 16, caplen)
        else:
            self._no_keys()

    # -- numpy: fields of every record ------------------------------------------------------

    def _no_keys(self) -> None:
        self.keyed_positions = np.zeros(0, dtype=np.int64)
        self.key_count = 0

    def _parse_ethernet(self, buf: bytes, frame: np.ndarray, caplen: np.ndarray) -> None:
        data = np.frombuffer(buf, dtype=np.uint8)
        be16 = _byte_strided(buf, ">u2")
        le32 = _byte_strided(buf, "<u4")
        le64 = _byte_strided(buf, "<u8")
        # The conditions of engine._pcap_loop's fast path, as masks (see the comment there).
        index = np.flatnonzero(caplen >= 54)
        start = frame[index]
        ethertype = be16[start + 12]
        plain_v4 = (ethertype == 0x0800) & (data[start + 14] == 0x45)
        tagged_v4 = (
            (ethertype == 0x8100) & (be16[start + 16] == 0x0800) & (data[start + 18] == 0x45)
        )
        is_v4 = plain_v4 | tagged_v4
        ip4 = np.where(plain_v4, start + 14, start + 18)[is_v4]
        index4 = index[is_v4]
        not_fragment = ((data[ip4 + 6] & 0x3F) | data[ip4 + 7]) == 0
        proto4 = data[ip4 + 9]
        keep4 = not_fragment & ((proto4 == IPPROTO_TCP) | (proto4 == IPPROTO_UDP))
        ip4, index4, proto4 = ip4[keep4], index4[keep4], proto4[keep4]
        is_v6 = ~is_v4 & (ethertype == 0x86DD) & (caplen[index] >= 74)
        ip6 = start[is_v6] + 14
        index6 = index[is_v6]
        proto6 = data[ip6 + 6]
        keep6 = (proto6 == IPPROTO_TCP) | (proto6 == IPPROTO_UDP)
        ip6, index6, proto6 = ip6[keep6], index6[keep6], proto6[keep6]

        positions = np.concatenate((index4, index6))
        proto = np.concatenate((proto4, proto6))
        is_tcp = proto == IPPROTO_TCP
        payload = np.concatenate(
            (be16[ip4 + 2].astype(np.int64) - 20, be16[ip6 + 4].astype(np.int64))
        )
        flags = np.concatenate((data[ip4 + 33], data[ip6 + 53]))
        data_offset = np.concatenate((data[ip4 + 32], data[ip6 + 52]))
        flagged = is_tcp & ((flags & 7) != 0)  # FIN, SYN or RST
        pure_ack = is_tcp & (payload == (data_offset >> 4).astype(np.int64) * 4)
        # The flow-table key (src, dst, sport, dport bytes) in 8- and 4-byte words; the
        # protocol is folded into the last word so TCP and UDP keys never group together.
        count6 = len(ip6)
        tail = np.concatenate((le32[ip4 + 20], le32[ip6 + 40])).astype(np.uint64)
        tail |= proto.astype(np.uint64) << np.uint64(32)
        if count6:
            zeros4 = np.zeros(len(ip4), dtype=np.uint64)
            words = [
                np.concatenate((le64[ip4 + 12], le64[ip6 + 8])),
                np.concatenate((zeros4, le64[ip6 + 16])),
                np.concatenate((zeros4, le64[ip6 + 24])),
                np.concatenate((zeros4, le64[ip6 + 32])),
            ]
            version = np.concatenate((np.zeros(len(ip4), np.uint8), np.ones(count6, np.uint8)))
            order = np.lexsort((tail, *reversed(words), version))
        else:
            words = [le64[ip4 + 12]]
            version = np.zeros(len(ip4), np.uint8)
            order = np.lexsort((tail, words[0]))
        total = len(order)
        if not total:
            self._no_keys()
            return
        tail = tail[order]
        words = [word[order] for word in words]
        version = version[order]
        new_key = np.zeros(total, dtype=bool)
        new_key[0] = True
        new_key[1:] |= tail[1:] != tail[:-1]
        for word in words:
            new_key[1:] |= word[1:] != word[:-1]
        new_key[1:] |= version[1:] != version[:-1]
        key_start = np.flatnonzero(new_key)
        key_end = np.append(key_start[1:], total)
        key_of = np.cumsum(new_key) - 1  # key number of each sorted packet
        end_of = key_end[key_of]
        ordinal = np.arange(total)
        # Next sorted packet of the same key (from each one on) that a direction in the
        # given state hands over; the key's end when there is none.
        flagged = flagged[order]
        slow_if_collecting = flagged | ~pure_ack[order]
        self.next_flagged = _next_marked(flagged, ordinal, end_of)
        self.next_data = _next_marked(slow_if_collecting, ordinal, end_of)
        self.keyed_positions = positions
        self.position: list[int] = positions[order].tolist()
        self.bytes_before: list[int] = np.concatenate(([0], np.cumsum(payload[order]))).tolist()
        self.key_start: list[int] = key_start.tolist()
        self.key_end: list[int] = key_end.tolist()
        self.key_count = len(key_start)
        # Key bytes as the flow table holds them.
        first = key_start
        word0 = words[0][first].astype("<u8").tobytes()
        rest = [word[first].astype("<u8").tobytes() for word in words[1:]]
        ports = (tail[first] & np.uint64(0xFFFFFFFF)).astype("<u4").tobytes()
        key_proto = (tail[first] >> np.uint64(32)).tolist()
        key_version = version[first].tolist()
        self.keys: list[tuple[int, bytes]] = []
        for number in range(self.key_count):
            w, p = number * 8, number * 4
            if key_version[number]:
                key = word0[w : w + 8] + b"".join(r[w : w + 8] for r in rest) + ports[p : p + 4]
            else:
                key = word0[w : w + 8] + ports[p : p + 4]
            self.keys.append((key_proto[number], key))
        self.number_of = {key: number for number, key in enumerate(self.keys)}
        self.reverse = [self.number_of.get(_reverse(key), -1) for key in self.keys]
        # Per key: first sorted packet not yet counted or handed over, the direction and the
        # state its plan was made with, and that plan's version (older heap entries are stale).
        self.cursor: list[int] = list(self.key_start)
        self.direction: list[Direction | None] = [None] * self.key_count
        self.state: list[int] = [-1] * self.key_count
        self.version: list[int] = [0] * self.key_count
        # Planned hand-overs: (record, key number, plan version, sorted index).
        self.heap: list[tuple[int, int, int, int]] = []

    # -- the event loop -----------------------------------------------------------------------

    def run(self) -> Iterator[Observation]:
        """Hand the packets that need it to the per-packet path, in order; count the rest."""
        engine = self.engine
        table = engine.table
        out = engine.out
        slow_path = engine.packet
        ts = self.ts
        buf = self.buf
        linktype = self.linktype
        frame_start, frame_end = self.frame_start, self.frame_end
        key_count = self.key_count
        # Records without a key (not plain Ethernet/IP/TCP/UDP) always go the per-packet way.
        unkeyed = np.ones(self.count, dtype=bool)
        unkeyed[self.keyed_positions] = False
        others: list[int] = np.flatnonzero(unkeyed).tolist()
        others.append(self.count)  # sentinel
        if not key_count:
            for at in others[:-1]:
                try:
                    slow_path(ts[at], linktype, buf[frame_start[at] : frame_end[at]])
                except Exception:  # a parser bug must not end the analysis of the file
                    engine.internal_error()
                if out:
                    yield from out
                    out.clear()
            return
        key_end = self.key_end
        keys = self.keys
        reverse_of = self.reverse
        cursor = self.cursor
        version_of = self.version
        heap = self.heap
        heappop = heapq.heappop
        for number in range(key_count):
            self.plan(number, -1, True)
        plan = self.plan
        count_before = self.count_before
        other_index = 0
        removed: list[tuple[int, bytes]] = []
        table.removed = removed
        try:
            while True:
                while heap and heap[0][2] != version_of[heap[0][1]]:
                    heappop(heap)  # superseded by a later plan
                other = others[other_index]
                if heap and heap[0][0] < other:
                    at, number, _version, sorted_index = heappop(heap)
                    if sorted_index > cursor[number]:
                        self.count_until(number, sorted_index)
                    cursor[number] = sorted_index + 1  # this one goes the slow way
                    reverse = reverse_of[number]
                    if reverse >= 0:
                        count_before(reverse, at)
                    own_key = keys[number]
                else:
                    if other >= self.count:
                        break
                    at = other
                    other_index += 1
                    number = -1
                    own_key = None
                    for touched in self.numbers_of_packet(
                        decode(linktype, buf[frame_start[at] : frame_end[at]], Counter())
                    ):
                        count_before(touched, at)
                now = ts[at]
                if (engine.next_sweep is not None and now >= engine.next_sweep) or len(
                    table
                ) >= table.max_flows:
                    # An idle sweep or an eviction reads (and ends) any flow.
                    for each in range(key_count):
                        count_before(each, at)
                engine.last_packet = None
                try:
                    slow_path(now, linktype, buf[frame_start[at] : frame_end[at]])
                except Exception:  # a parser bug must not end the analysis of the file
                    engine.internal_error()
                if out:
                    yield from out
                    out.clear()
                # Which keys the packet may have changed: its own flow's (both directions),
                # and any flow removed from the table.
                if number >= 0:
                    plan(number, at, True)
                    if reverse >= 0:
                        plan(reverse, at, False)
                packet = engine.last_packet
                if packet is not None and (packet.transport, packet.key) != own_key:
                    for touched in self.numbers_of_packet(packet):
                        plan(touched, at, False)
                if removed:
                    for key in removed:
                        plan(self.number_of.get(key, -1), at, False)
                    removed.clear()
            for number in range(key_count):
                self.count_until(number, key_end[number])
        finally:
            table.removed = None

    def plan(self, number: int, at: int, cursor_moved: bool) -> None:
        """Look the key's direction up again and, if it changed (or the key's cursor moved),
        schedule its next handed-over packet. Bulk packets before record ``at`` are counted
        first, on the direction they belong to."""
        if number < 0:
            return
        protocol, key = self.keys[number]
        flows = self.engine.table.tcp if protocol == IPPROTO_TCP else self.engine.table.udp
        direction = flows.get(key)
        if direction is None or (protocol != IPPROTO_TCP and direction.collecting):
            state = _EVERY_PACKET_SLOW
        elif not direction.collecting:
            state = _FLAGS_SLOW
        else:
            state = _DATA_SLOW
        if not cursor_moved and direction is self.direction[number] and state == self.state[number]:
            return  # the plan made before still holds
        cursor = self.cursor[number]
        end = self.key_end[number]
        if cursor < end and self.position[cursor] < at:
            self.count_until(number, bisect_left(self.position, at, cursor, end))
            cursor = self.cursor[number]
        self.direction[number] = direction
        self.state[number] = state
        self.version[number] += 1
        if cursor >= end:
            return
        if state == _EVERY_PACKET_SLOW:
            next_slow = cursor
        elif state == _FLAGS_SLOW:
            next_slow = self.next_flagged[cursor]
        else:
            next_slow = self.next_data[cursor]
        if next_slow < end:
            heapq.heappush(
                self.heap, (self.position[next_slow], number, self.version[number], next_slow)
            )

    def count_until(self, number: int, sorted_index: int) -> None:
        """Add the key's bulk packets up to (not including) ``sorted_index`` to its direction."""
        cursor = self.cursor[number]
        if sorted_index > cursor:
            direction = self.direction[number]
            assert direction is not None  # only a known direction has bulk packets
            direction.packets += sorted_index - cursor
            direction.bytes += self.bytes_before[sorted_index] - self.bytes_before[cursor]
            direction.last_seen = self.ts[self.position[sorted_index - 1]]
            self.cursor[number] = sorted_index

    def count_before(self, number: int, at: int) -> None:
        """Add the key's bulk packets captured before record ``at``."""
        if number < 0:
            return
        cursor = self.cursor[number]
        end = self.key_end[number]
        if cursor < end and self.position[cursor] < at:
            self.count_until(number, bisect_left(self.position, at, cursor, end))

    def numbers_of_packet(self, packet: Packet | None) -> tuple[int, int]:
        """Key numbers of a decoded packet's flow in this chunk (this direction, the other);
        -1 where the chunk has no packet with that key."""
        if packet is None:
            return -1, -1
        key = (packet.transport, packet.key)
        number = self.number_of.get(key, -1)
        if number >= 0:
            return number, self.reverse[number]
        return -1, self.number_of.get(_reverse(key), -1)


def _next_marked(marked: np.ndarray, ordinal: np.ndarray, end_of: np.ndarray) -> list[int]:
    """For each sorted packet: the first marked one at or after it within its key, or the
    key's end (keys are contiguous, so a running minimum from the right, capped at the end)."""
    candidate = np.where(marked, ordinal, len(marked))
    following = np.minimum.accumulate(candidate[::-1])[::-1]
    return np.minimum(following, end_of).tolist()


def _reverse(key: tuple[int, bytes]) -> tuple[int, bytes]:
    """The other direction's key: addresses and ports swapped."""
    protocol, raw = key
    half = (len(raw) - 4) // 2
    return protocol, raw[half : 2 * half] + raw[:half] + raw[-2:] + raw[-4:-2]
