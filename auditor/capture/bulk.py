"""The fast engine's bulk path: classic pcap read in large chunks, bulk packets counted with numpy.

    capture file -> reader (chunks) -> [this module] -> engine per-packet path -> observations

Most packets of a capture are bulk data on flows whose handshake is already parsed: all they
change is their direction's packet and byte counters and its ``last_seen``. The engine's
per-packet loop (``engine._pcap_loop``) takes them on an inlined fast path; this module takes
the same packets, with exactly the same rule, a chunk (``BULK_CHUNK`` bytes) at a time:

1. a tight loop finds where each record starts: in C (``_record_walk.c``, built by
   ``pip install -e .``) or, when that is not built, the Python ``_record_starts``;
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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from auditor.capture.flows import Direction
from auditor.capture.packets import IPPROTO_TCP, IPPROTO_UDP, LINKTYPE_ETHERNET, Packet, decode
from auditor.capture.reader import Capture
from auditor.model import Observation

try:
    # The record walk in C: optional, built from _record_walk.c when a compiler is available.
    from auditor.capture import _record_walk as _native_walk
except ImportError:  # not built: the Python walk below does the same
    _native_walk = None

if TYPE_CHECKING:
    from auditor.capture.engine import _Engine

# Bytes of the file handled at a time: large enough that numpy's per-call cost vanishes, small
# enough to stay in memory comfortably (the reader adds what a record needs beyond it).
BULK_CHUNK = 8 << 20

# What a key's direction lets through without the per-packet path (see ``_Chunk.plan``).
_EVERY_PACKET_SLOW = 0  # no direction yet, or a UDP direction still collecting
_FLAGS_SLOW = 1  # the direction needs no more bytes: only SYN/FIN/RST packets are handed over
_DATA_SLOW = 2  # a TCP direction still collecting: pure ACKs are bulk, data is handed over


def bulk_pcap_loop(
    engine: _Engine, capture: Capture, chunk_size: int | None = None
) -> Iterator[Observation]:
    """Observations of a classic pcap (any link type; only Ethernet has a bulk path)."""
    chunk_size = chunk_size or BULK_CHUNK
    record_starts = record_walker(capture.byte_order)
    buf: bytes | None = b""
    pos = 0
    packets = 0
    captured = 0
    try:
        while True:
            buf = capture.refill(buf, pos, chunk_size)  # type: ignore[arg-type]
            if buf is None:
                break
            starts, pos = record_starts(buf)
            if not starts:
                continue
            chunk = _Chunk(engine, capture, buf, starts)
            packets += chunk.count
            captured += chunk.captured
            yield from chunk.run()
    finally:
        engine.stats.packets += packets
        engine.stats.bytes += captured


def record_walker(byte_order: str, native: bool = True) -> Callable[[bytes], tuple[list[int], int]]:
    """``walk(buf)`` -> (offsets of the complete records in ``buf``, where the first incomplete
    one starts), for pcap record headers in ``byte_order`` ("<" or ">"). The C walk when it is
    built and ``native``, else the Python one: same results."""
    if native and _native_walk is not None:
        little_endian = byte_order == "<"
        native_starts = _native_walk.record_starts
        return lambda buf: native_starts(buf, little_endian)  # type: ignore[no-any-return]
    caplen_at = struct.Struct(byte_order + "8xI").unpack_from
    return lambda buf: _record_starts(buf, caplen_at)


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
        frame = record + 16
        # Records are back to back: a frame ends where the next record starts.
        self.record_start = starts
        self.count = len(starts)
        starts.append(int(record[-1] + 16 + caplen[-1]))
        self.key_count = 0
        self.keyed_positions = np.zeros(0, dtype=np.int64)
        if self.linktype == LINKTYPE_ETHERNET and len(buf) >= 64:
            self._parse_ethernet(buf, frame, caplen)

    # -- numpy: fields of every record ------------------------------------------------------

    def _parse_ethernet(self, buf: bytes, frame: np.ndarray, caplen: np.ndarray) -> None:
        be16 = _byte_strided(buf, ">u2")
        be32 = _byte_strided(buf, ">u4")
        le32 = _byte_strided(buf, "<u4")
        le64 = _byte_strided(buf, "<u8")
        # The conditions of engine._pcap_loop's fast path, as masks (see the comment there).
        index = np.flatnonzero(caplen >= 54)
        start = frame[index]
        head = be32[start + 12]  # Ethernet type and the first IP byte (and one more)
        is_v4 = (head >> 8) == 0x080045
        tagged = np.flatnonzero((head >> 16) == 0x8100)
        if len(tagged):  # one 802.1Q tag, then IPv4 without options
            inner = (be32[start[tagged] + 16] >> 8) == 0x080045
            is_v4[tagged[inner]] = True
        ip4 = np.where((head >> 16) == 0x8100, start + 18, start + 14)[is_v4]
        index4 = index[is_v4]
        flags_ttl_proto = be32[ip4 + 6]  # fragment field, TTL, protocol
        proto4 = (flags_ttl_proto & 0xFF).astype(np.uint8)
        keep4 = ((flags_ttl_proto & 0x3FFF0000) == 0) & (
            (proto4 == IPPROTO_TCP) | (proto4 == IPPROTO_UDP)
        )
        ip4, index4, proto4 = ip4[keep4], index4[keep4], proto4[keep4]
        is_v6 = ~is_v4 & ((head >> 16) == 0x86DD) & (caplen[index] >= 74)
        ip6 = start[is_v6] + 14
        index6 = index[is_v6]
        proto6 = (be16[ip6 + 6] >> 8).astype(np.uint8)
        keep6 = (proto6 == IPPROTO_TCP) | (proto6 == IPPROTO_UDP)
        ip6, index6, proto6 = ip6[keep6], index6[keep6], proto6[keep6]
        count4, count6 = len(ip4), len(ip6)
        if not count4 + count6:
            return
        if count6:
            positions = np.concatenate((index4, index6))
            proto = np.concatenate((proto4, proto6))
            payload = np.concatenate(
                (be16[ip4 + 2].astype(np.int64) - 20, be16[ip6 + 4].astype(np.int64))
            )
            offset_flags = np.concatenate((be16[ip4 + 32], be16[ip6 + 52]))
            key_at = np.concatenate((ip4 + 12, ip6 + 8))
        else:
            positions, proto = index4, proto4
            payload = be16[ip4 + 2].astype(np.int64) - 20
            offset_flags = be16[ip4 + 32]
            key_at = ip4 + 12
        is_tcp = proto == IPPROTO_TCP
        flagged = is_tcp & ((offset_flags & 7) != 0)  # FIN, SYN or RST
        pure_ack = is_tcp & (payload == (offset_flags >> 12).astype(np.int64) * 4)
        # Group by flow-table key (src, dst, sport, dport bytes) read as 8- and 4-byte words;
        # the protocol is folded into the last word so TCP and UDP keys never group together.
        tail = np.concatenate((le32[ip4 + 20], le32[ip6 + 40])).astype(np.uint64)
        tail |= proto.astype(np.uint64) << np.uint64(32)
        if count6:
            zeros4 = np.zeros(count4, dtype=np.uint64)
            words = [
                np.concatenate((le64[ip4 + 12], le64[ip6 + 8])),
                np.concatenate((zeros4, le64[ip6 + 16])),
                np.concatenate((zeros4, le64[ip6 + 24])),
                np.concatenate((zeros4, le64[ip6 + 32])),
                np.concatenate((zeros4, np.ones(count6, dtype=np.uint64))),  # v4 apart from v6
            ]
        else:
            words = [le64[ip4 + 12]]
        order = np.lexsort((tail, *reversed(words)))  # stable: capture order within a key
        total = len(order)
        tail = tail[order]
        new_key = np.empty(total, dtype=bool)
        new_key[0] = True
        np.not_equal(tail[1:], tail[:-1], out=new_key[1:])
        for word in words:
            word = word[order]
            new_key[1:] |= word[1:] != word[:-1]
        key_start = np.flatnonzero(new_key)
        self.key_count = len(key_start)
        self.keyed_positions = positions
        self.position: list[int] = positions[order].tolist()
        self.bytes_before: list[int] = np.concatenate(([0], np.cumsum(payload[order]))).tolist()
        self.key_start: list[int] = key_start.tolist()
        self.key_end: list[int] = [*self.key_start[1:], total]
        # Sorted packets a direction hands over: always those with FIN/SYN/RST; while it
        # still collects TCP bytes, also those with data.
        self.flagged_at: list[int] = np.flatnonzero(flagged[order]).tolist()
        self.data_at: list[int] = np.flatnonzero((flagged | ~pure_ack)[order]).tolist()
        first = order[key_start]
        self.protocol: list[int] = proto[first].tolist()
        self.keys: list[bytes] = [
            buf[at : at + (12 if v4 else 36)]
            for at, v4 in zip(key_at[first].tolist(), (first < count4).tolist(), strict=True)
        ]
        # Per key: first sorted packet not yet counted or handed over; the direction and state
        # its plan was made with; the record and sorted index planned to be handed over next
        # (-1: none; the heap holds record * key_count + key number, stale ones skipped); the
        # other direction's key number (-2: not looked up yet, -1: not in this chunk).
        self.cursor: list[int] = list(self.key_start)
        self.direction: list[Direction | None] = [None] * self.key_count
        self.state: list[int] = [-1] * self.key_count
        self.planned: list[int] = [-1] * self.key_count
        self.planned_index: list[int] = [0] * self.key_count
        self.reverse: list[int] = (
            [-2] * self.key_count if count6 else _reverse_numbers(words[0][first], tail[key_start])
        )
        self.heap: list[int] = []
        self._number_of: dict[tuple[int, bytes], int] | None = None
        self.count_before: Callable[[int, int], None] = lambda number, at: None  # set by run

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
        record_start = self.record_start
        key_count = self.key_count
        # Records without a key (not plain Ethernet/IP/TCP/UDP) always go the per-packet way.
        unkeyed = np.ones(self.count, dtype=bool)
        unkeyed[self.keyed_positions] = False
        others: list[int] = np.flatnonzero(unkeyed).tolist()
        others.append(self.count)  # sentinel
        if not key_count:
            for at in others[:-1]:
                try:
                    slow_path(ts[at], linktype, buf[record_start[at] + 16 : record_start[at + 1]])
                except Exception:  # a parser bug must not end the analysis of the file
                    engine.internal_error()
                if out:
                    yield from out
                    out.clear()
            return
        keys, protocols = self.keys, self.protocol
        cursor = self.cursor
        reverse_of = self.reverse
        position, key_end = self.position, self.key_end
        flows = table.flows
        planned, planned_index = self.planned, self.planned_index
        heap = self.heap
        heappop = heapq.heappop
        plan, count_until, count_before = self._counting()
        self.count_before = count_before
        for number in range(key_count):
            plan(number, -1, True)
        other_index = 0
        removed: list[tuple[int, bytes]] = []
        table.removed = removed
        try:
            while True:
                while heap:
                    at = heap[0] // key_count
                    number = heap[0] - at * key_count
                    if planned[number] == at:
                        break
                    heappop(heap)  # superseded by a later plan
                else:
                    at = number = -1
                other = others[other_index]
                if number >= 0 and at < other:
                    heappop(heap)
                    planned[number] = -1
                    sorted_index = planned_index[number]
                    if sorted_index > cursor[number]:
                        count_until(number, sorted_index)
                    cursor[number] = sorted_index + 1  # this one goes the slow way
                    reverse = reverse_of[number]
                    if reverse == -2:
                        reverse = self.reverse_of(number)
                    if reverse >= 0:
                        cursor_r = cursor[reverse]
                        if cursor_r < key_end[reverse] and position[cursor_r] < at:
                            count_before(reverse, at)
                else:
                    if other >= self.count:
                        break
                    at = other
                    other_index += 1
                    number = reverse = -1
                    self.count_flow_of(at)
                now = ts[at]
                next_sweep = engine.next_sweep
                if (next_sweep is not None and now >= next_sweep) or len(flows) >= table.max_flows:
                    # An idle sweep or an eviction reads (and ends) any flow.
                    for each in range(key_count):
                        count_before(each, at)
                engine.last_packet = None
                try:
                    slow_path(now, linktype, buf[record_start[at] + 16 : record_start[at + 1]])
                except Exception:  # a parser bug must not end the analysis of the file
                    engine.internal_error()
                if out:
                    yield from out
                    out.clear()
                # What the packet may have changed: its own flow (both directions), and any
                # flow removed from the table.
                if number >= 0:
                    plan(number, at, True)
                    if reverse >= 0:
                        plan(reverse, at, False)
                packet = engine.last_packet
                if packet is not None and (
                    number < 0
                    or packet.key != keys[number]
                    or packet.transport != protocols[number]
                ):
                    for touched in self.numbers_of_packet(packet):
                        plan(touched, at, False)
                if removed:
                    number_of = self.number_of()
                    for key in removed:
                        plan(number_of.get(key, -1), at, False)
                    removed.clear()
            for number in range(key_count):
                count_until(number, self.key_end[number])
        finally:
            table.removed = None

    def _counting(
        self,
    ) -> tuple[
        Callable[[int, int, bool], None], Callable[[int, int], None], Callable[[int, int], None]
    ]:
        """``plan``, ``count_until`` and ``count_before`` for this chunk: closures over its lists
        (called a few times per handed-over packet, so attribute look-ups are kept out)."""
        engine_table = self.engine.table
        tcp_flows, udp_flows = engine_table.tcp, engine_table.udp
        keys, protocols = self.keys, self.protocol
        cursors, key_end, position = self.cursor, self.key_end, self.position
        directions, states = self.direction, self.state
        planned, planned_index = self.planned, self.planned_index
        flagged_at, data_at = self.flagged_at, self.data_at
        bytes_before, ts = self.bytes_before, self.ts
        heap, key_count = self.heap, self.key_count
        heappush = heapq.heappush

        def count_until(number: int, sorted_index: int) -> None:
            """Add the key's bulk packets before ``sorted_index`` to its direction."""
            cursor = cursors[number]
            if sorted_index > cursor:
                direction = directions[number]
                assert direction is not None  # only a known direction has bulk packets
                direction.packets += sorted_index - cursor
                direction.bytes += bytes_before[sorted_index] - bytes_before[cursor]
                direction.last_seen = ts[position[sorted_index - 1]]
                cursors[number] = sorted_index

        def count_before(number: int, at: int) -> None:
            """Add the key's bulk packets captured before record ``at``."""
            if number >= 0:
                cursor = cursors[number]
                end = key_end[number]
                if cursor < end and position[cursor] < at:
                    count_until(number, bisect_left(position, at, cursor, end))

        def plan(number: int, at: int, cursor_moved: bool) -> None:
            """Look the key's direction up again and, if it changed (or the key's cursor
            moved), schedule its next handed-over packet. Bulk packets before record ``at``
            are counted first, on the direction they belong to."""
            if number < 0:
                return
            cursor = cursors[number]
            end = key_end[number]
            if cursor >= end:
                return  # no packet of this key left in the chunk: nothing to plan or count
            protocol = protocols[number]
            if protocol == IPPROTO_TCP:
                direction = tcp_flows.get(keys[number])
                if direction is None:
                    state = _EVERY_PACKET_SLOW
                elif direction.collecting:
                    state = _DATA_SLOW
                else:
                    state = _FLAGS_SLOW
            else:
                direction = udp_flows.get(keys[number])
                if direction is None or direction.collecting:
                    state = _EVERY_PACKET_SLOW
                else:
                    state = _FLAGS_SLOW
            if not cursor_moved and direction is directions[number] and state == states[number]:
                return  # the plan made before still holds
            if position[cursor] < at:
                count_until(number, bisect_left(position, at, cursor, end))
                cursor = cursors[number]
            directions[number] = direction
            states[number] = state
            if state == _EVERY_PACKET_SLOW:
                next_slow = cursor
            else:
                handed_over = flagged_at if state == _FLAGS_SLOW else data_at
                found = bisect_left(handed_over, cursor)
                next_slow = handed_over[found] if found < len(handed_over) else end
            if next_slow < end:
                record = position[next_slow]
                planned[number] = record
                planned_index[number] = next_slow
                heappush(heap, record * key_count + number)
            else:
                planned[number] = -1

        return plan, count_until, count_before

    def reverse_of(self, number: int) -> int:
        """Key number of the other direction of the flow (-1: no packet of it in the chunk)."""
        reverse = self.reverse[number]
        if reverse == -2:
            reverse = self.number_of().get(
                (self.protocol[number], _reverse_key(self.keys[number])), -1
            )
            self.reverse[number] = reverse
        return reverse

    def number_of(self) -> dict[tuple[int, bytes], int]:
        """Key numbers by (protocol, key), built when first needed."""
        if self._number_of is None:
            self._number_of = {
                (protocol, key): number
                for number, (protocol, key) in enumerate(zip(self.protocol, self.keys, strict=True))
            }
        return self._number_of

    def numbers_of_packet(self, packet: Packet | None) -> tuple[int, int]:
        """Key numbers of a decoded packet's flow in this chunk (this direction, the other);
        -1 where the chunk has no packet with that key."""
        if packet is None:
            return -1, -1
        number_of = self.number_of()
        number = number_of.get((packet.transport, packet.key), -1)
        if number >= 0:
            return number, self.reverse_of(number)
        return -1, number_of.get((packet.transport, _reverse_key(packet.key)), -1)

    def count_flow_of(self, at: int) -> None:
        """Before a record without a key is handed over: its flow's counters brought up to
        date (it may still decode to a flow, e.g. IPv4 with options)."""
        frame = self.buf[self.record_start[at] + 16 : self.record_start[at + 1]]
        for number in self.numbers_of_packet(decode(self.linktype, frame, Counter())):
            self.count_before(number, at)


def _reverse_numbers(address_words: np.ndarray, tail_words: np.ndarray) -> list[int]:
    """IPv4 keys sorted by (addresses, ports and protocol) words: each one's other direction's
    key number, -1 when the chunk has none. Source and destination swap places in both words;
    the pair is matched through one sortable word: rank of the addresses << 40 | tail."""
    u64 = np.uint64
    swapped_addresses = (address_words >> u64(32)) | (address_words << u64(32))
    ports = tail_words & u64(0xFFFFFFFF)
    swapped_ports = (ports >> u64(16)) | ((ports & u64(0xFFFF)) << u64(16))
    swapped_tail = (tail_words & ~u64(0xFFFFFFFF)) | swapped_ports
    distinct, rank = np.unique(address_words, return_inverse=True)
    combined = (rank.astype(u64) << u64(40)) | tail_words  # ascending, like the keys
    found_rank = np.minimum(np.searchsorted(distinct, swapped_addresses), len(distinct) - 1)
    swapped_combined = (found_rank.astype(u64) << u64(40)) | swapped_tail
    found = np.minimum(np.searchsorted(combined, swapped_combined), len(combined) - 1)
    matched = (distinct[found_rank] == swapped_addresses) & (combined[found] == swapped_combined)
    return np.where(matched, found, -1).tolist()


def _reverse_key(raw: bytes) -> bytes:
    """The other direction's key: addresses and ports swapped."""
    half = (len(raw) - 4) // 2
    return raw[half : 2 * half] + raw[:half] + raw[-2:] + raw[-4:-2]
