"""Flow table and first-bytes reassembly: packets grouped into oriented TCP/UDP flows.

Third stage of the capture source (``reader -> packets -> flows -> parsers -> engine``). The
table maps each direction's key (``src + dst + sport + dport`` bytes) to a ``Direction``, so a
packet finds its flow and its direction in one dictionary lookup (the engine's fast path relies
on it). Each TCP direction reassembles, in order, only what the parsers need (the first
``CLIENT_STREAM_CAP`` / ``SERVER_STREAM_CAP`` bytes): out-of-order segments are buffered inside
that window, retransmissions ignored. Once a direction needs nothing more, ``collecting`` is
False and its packets only bump counters.

Memory does not grow with the capture: ended flows leave a small tombstone (so trailing ACKs do
not start a new flow) that the idle sweep removes, idle flows are swept in capture time, and the
table holds at most ``max_flows`` flows (the oldest are ended early when it is full).

The idle sweep does not visit every flow: a timer says, for each flow, from when it may be idle
for too long (its last packet so far + its timeout); timers are kept in buckets of
``TIMER_BUCKET`` capture seconds. As long as capture time never goes back, a flow's last packet
only gets later, so a flow whose timer's bucket is still ahead cannot be due; the sweep looks
only at the flows of the buckets reached. The packet loops report a timestamp earlier than one
before it (``time_went_back``); the timers are then rebuilt from every flow at the next sweep,
which gives the same flows as looking at all of them.

A capture holds thousands of flows at once, most of which never buffer anything: per-flow lists
(segment times, a flow's HTTP and DNS messages) are created on first use, so an idle flow costs
three objects the garbage collector has to walk, not seven.
"""

from __future__ import annotations

from auditor.capture.packets import IPPROTO_TCP, TCP_ACK, TCP_SYN, Packet, address_text
from auditor.model import FlowTuple

# Client -> server bytes kept per buffered request: HTTP request head + the start of its body
# (an LLM prompt), or a ClientHello split over several segments.
CLIENT_STREAM_CAP = 64 * 1024
# Server -> client bytes kept: ServerHello + certificate chain (TLS <= 1.2) fit in 16 KiB.
SERVER_STREAM_CAP = 16 * 1024
# Flows without a packet for this long (capture time) are ended: Zeek's defaults.
TCP_IDLE_TIMEOUT = 300.0
UDP_IDLE_TIMEOUT = 60.0
# Ended flows stay as tombstones this long to absorb their last ACKs / retransmitted FINs.
CLOSED_LINGER = 10.0
# Most flows held at once; past it the oldest flows are ended early (memory bound).
MAX_FLOWS = 100_000
# Ports below this are taken as the server side when no SYN says otherwise.
WELL_KNOWN_PORT_LIMIT = 1024
# Ports from here up are ephemeral (IANA dynamic range): the other side is the server.
EPHEMERAL_PORT_START = 49152

# Idle timers are set this many seconds early: ``last_seen + timeout`` is rounded, the idle test
# ``now - last_seen >= timeout`` is rounded differently, and a timer must never be late.
TIMER_SLACK = 1.0
# Capture seconds of timers per bucket: the idle sweep's interval (engine.SWEEP_INTERVAL).
TIMER_BUCKET = 5.0
# Timers of removed flows are dropped lazily; past this many per flow they are rebuilt.
MAX_TIMERS_PER_FLOW = 4

# Out-of-order segments held per direction while waiting for a gap to fill.
MAX_PENDING_SEGMENTS = 256

_SEQ_MOD = 1 << 32
_SEQ_HALF = 1 << 31


class Direction:
    """One direction of a flow: counters and the in-order prefix of its byte stream."""

    __slots__ = (
        "buffer_offset",
        "bytes",
        "cap",
        "collecting",
        "data",
        "fin",
        "first_data_ts",
        "flow",
        "from_client",
        "gap",
        "last_seen",
        "next_seq",
        "packets",
        "pending",
        "segment_times",
        "skip",
    )

    def __init__(self, flow: Flow, from_client: bool, cap: int) -> None:
        self.flow = flow
        self.from_client = from_client
        self.packets = 0
        self.bytes = 0  # IP payload bytes
        self.last_seen = 0.0
        self.collecting = True  # False: the parsers need nothing more from this direction
        self.cap = cap  # most bytes buffered at once
        self.data = bytearray()  # in-order stream bytes not yet consumed by a parser
        self.buffer_offset = 0  # stream offset of data[0]
        self.next_seq: int | None = None  # TCP sequence number of the next in-order byte
        # Out-of-order segments (payload, capture time) by sequence number.
        self.pending: dict[int, tuple[bytes, float]] = {}
        # (stream offset, capture time) of buffered segments; None until the first one.
        self.segment_times: list[tuple[int, float]] | None = None
        self.skip = 0  # stream bytes to drop before buffering again (rest of a long body)
        self.fin = False
        # A hole that will not be filled (lost or snap-length-cut segment): nothing after it can
        # be put in order, so the parsers must make do with what came before.
        self.gap = False
        self.first_data_ts: float | None = None

    @property
    def full(self) -> bool:
        return len(self.data) >= self.cap

    def start(self, seq: int) -> None:
        """The sequence number of the first stream byte (ISN + 1 after a SYN)."""
        if self.next_seq is None:
            self.next_seq = seq & 0xFFFFFFFF

    def add_segment(self, seq: int, payload: bytes, ts: float) -> bool:
        """Add a TCP segment; True when the parsers have something new to look at: in-order
        bytes reached ``data``, or the stream broke at a gap (``gap``)."""
        if self.next_seq is None:
            self.next_seq = seq  # picked up mid-stream: the first segment seen starts it
        relative = (seq - self.next_seq) % _SEQ_MOD
        if relative >= _SEQ_HALF:
            relative -= _SEQ_MOD
        if relative < 0:
            if relative + len(payload) <= 0:
                return False  # retransmission of bytes already taken
            payload = payload[-relative:]  # overlap: keep only the new part
        elif relative > 0:
            # Ahead of a gap: keep it if it falls inside the window we would buffer.
            room = self.cap - len(self.data) + self.skip
            if relative < room and len(self.pending) < MAX_PENDING_SEGMENTS:
                previous = self.pending.get(seq)
                if previous is None or len(previous[0]) < len(payload):
                    self.pending[seq] = (payload, ts)
                return False
            # Past what we would keep and the hole is still open: it will not be filled in time.
            self.gap = True
            return True
        self._append(payload, ts)
        while self.pending and self.collecting:
            if not self._drain_one():
                break
        return True

    def _drain_one(self) -> bool:
        assert self.next_seq is not None
        for seq in list(self.pending):
            relative = (seq - self.next_seq) % _SEQ_MOD
            if relative >= _SEQ_HALF:
                relative -= _SEQ_MOD
            if relative <= 0:
                payload, ts = self.pending.pop(seq)
                if relative + len(payload) > 0:
                    self._append(payload[-relative:] if relative else payload, ts)
                return True
        return False

    def _append(self, payload: bytes, ts: float) -> None:
        assert self.next_seq is not None
        self.next_seq = (self.next_seq + len(payload)) % _SEQ_MOD
        if self.skip:
            dropped = min(self.skip, len(payload))
            self.skip -= dropped
            self.buffer_offset += dropped
            payload = payload[dropped:]
            if not payload:
                return
        if self.first_data_ts is None:
            self.first_data_ts = ts
        if len(self.data) >= self.cap:
            return  # full: the parsers decide what happens (they stop or consume)
        entry = (self.buffer_offset + len(self.data), ts)
        if self.segment_times is None:
            self.segment_times = [entry]
        else:
            self.segment_times.append(entry)
        # The whole segment is kept (the buffer may pass the cap by one segment) so that the
        # stream offsets stay exact: an HTTP parser skipping the rest of a body relies on it.
        self.data += payload

    def time_at(self, offset: int) -> float:
        """Capture time of the segment holding stream offset ``offset``."""
        found = self.first_data_ts or self.last_seen
        for start, ts in self.segment_times or ():
            if start > offset:
                break
            found = ts
        return found

    def consume(self, count: int) -> None:
        """Drop the first ``count`` buffered bytes (a parser is done with them)."""
        del self.data[:count]
        self.buffer_offset += count
        times = self.segment_times
        if not times:
            return
        keep_from = 0
        # Keep the entry covering the new start, drop those wholly before it.
        while keep_from + 1 < len(times) and times[keep_from + 1][0] <= self.buffer_offset:
            keep_from += 1
        if keep_from:
            del times[:keep_from]

    def stop(self) -> None:
        """Nothing more is needed from this direction: free the buffers."""
        self.collecting = False
        self.data = bytearray()
        self.pending = {}
        self.segment_times = None


class Flow:
    """A TCP or UDP conversation, oriented client -> server, and what the parsers made of it."""

    __slots__ = (
        "app",
        "app_state",
        "client",
        "closed",
        "direction_guessed",
        "dns",
        "first_seen",
        "http",
        "id",
        "keys",
        "server",
        "tls",
        "transport",
        "tunnel_host",
        "tuple",
    )

    def __init__(
        self,
        flow_id: int,
        transport: int,
        flow_tuple: FlowTuple,
        keys: tuple[bytes, bytes],
        first_seen: float,
        direction_guessed: bool,
    ) -> None:
        self.id = flow_id
        self.transport = transport
        self.tuple = flow_tuple
        self.keys = keys  # (client -> server key, server -> client key)
        self.first_seen = first_seen
        self.direction_guessed = direction_guessed
        cap_out, cap_in = (
            (CLIENT_STREAM_CAP, SERVER_STREAM_CAP) if transport == IPPROTO_TCP else (65535, 65535)
        )
        self.client = Direction(self, True, cap_out)
        self.server = Direction(self, False, cap_in)
        self.closed = False  # ended and reported; kept as a tombstone until swept
        self.app: str | None = None  # "tls", "http", "dns", "quic", "other"; None: undecided
        self.app_state: object = None  # parser state owned by the engine
        self.tls: object = None  # the TLSHandshake emitted or being built
        # The flow's HTTP requests / DNS messages (see ``add_http`` / ``add_dns``); None: none yet.
        self.http: list[object] | None = None
        self.dns: list[object] | None = None
        self.tunnel_host: str | None = None  # CONNECT target when the flow became a tunnel

    @property
    def last_seen(self) -> float:
        return max(self.client.last_seen, self.server.last_seen, self.first_seen)

    def detach(self) -> None:
        """Drop the links to the directions (the flow is out of the table and reported).

        Flow and directions point at each other; without this, every removed flow would be a
        reference cycle left for the garbage collector's full passes (about 0.25 s CPU on a
        1M-packet capture). Detached, reference counting frees them as soon as they are
        unused.
        """
        if hasattr(self, "client"):
            del self.client, self.server

    def add_http(self, request: object, limit: int) -> None:
        """Keep ``request`` for the flow's Connection, up to ``limit`` of them."""
        if self.http is None:
            self.http = []
        if len(self.http) < limit:
            self.http.append(request)

    def add_dns(self, message: object, limit: int) -> None:
        """Keep ``message`` for the flow's Connection, up to ``limit`` of them."""
        if self.dns is None:
            self.dns = []
        if len(self.dns) < limit:
            self.dns.append(message)


def _server_port_side(src_port: int, dst_port: int) -> bool | None:
    """True when the ports say the sender is the client, False if the server, None: no idea."""
    if src_port == dst_port:
        return None
    src_low, dst_low = src_port < WELL_KNOWN_PORT_LIMIT, dst_port < WELL_KNOWN_PORT_LIMIT
    if src_low != dst_low:
        return dst_low
    src_eph, dst_eph = src_port >= EPHEMERAL_PORT_START, dst_port >= EPHEMERAL_PORT_START
    if src_eph != dst_eph:
        return src_eph
    return None


class FlowTable:
    """Directions by key, flows by creation order; bounded, swept in capture time."""

    def __init__(
        self,
        max_flows: int = MAX_FLOWS,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        udp_idle_timeout: float = UDP_IDLE_TIMEOUT,
    ) -> None:
        self.tcp: dict[bytes, Direction] = {}
        self.udp: dict[bytes, Direction] = {}
        self.flows: dict[int, Flow] = {}  # insertion order = creation order
        self.max_flows = max_flows
        self.tcp_idle_timeout = tcp_idle_timeout
        self.udp_idle_timeout = udp_idle_timeout
        self._next_id = 0
        # Flow ids by the bucket of the capture time from which each may be idle too long (its
        # timer): see the module doc. A flow may have stale timers; the sweep checks each.
        self._timers: dict[int, list[int]] = {}
        self._timer_count = 0
        self._timers_valid = True

    def __len__(self) -> int:
        return len(self.flows)

    def create(self, packet: Packet, ts: float) -> Direction:
        """A new flow for ``packet``; returns the packet's direction in it."""
        sender_is_client: bool
        guessed = False
        if packet.transport == IPPROTO_TCP and packet.flags & TCP_SYN:
            # SYN alone comes from the client, SYN+ACK from the server.
            sender_is_client = not packet.flags & TCP_ACK
        else:
            by_ports = _server_port_side(packet.sport, packet.dport)
            # No port hint: the first packet seen comes from the client.
            sender_is_client = True if by_ports is None else by_ports
            guessed = packet.transport == IPPROTO_TCP
        reverse_key = packet.dst + packet.src + packet.key[-2:] + packet.key[-4:-2]
        if sender_is_client:
            flow_tuple = FlowTuple(
                "tcp" if packet.transport == IPPROTO_TCP else "udp",
                address_text(packet.src),
                packet.sport,
                address_text(packet.dst),
                packet.dport,
            )
            keys = (packet.key, reverse_key)
        else:
            flow_tuple = FlowTuple(
                "tcp" if packet.transport == IPPROTO_TCP else "udp",
                address_text(packet.dst),
                packet.dport,
                address_text(packet.src),
                packet.sport,
            )
            keys = (reverse_key, packet.key)
        self._next_id += 1
        flow = Flow(self._next_id, packet.transport, flow_tuple, keys, ts, guessed)
        table = self.tcp if packet.transport == IPPROTO_TCP else self.udp
        table[keys[0]] = flow.client
        table[keys[1]] = flow.server
        self.flows[flow.id] = flow
        self._set_timer(ts + self._idle_limit(flow), flow.id)
        return flow.client if sender_is_client else flow.server

    def remove(self, flow: Flow) -> None:
        """Forget a flow (ended and reported, or a tombstone past its linger).

        The flow is detached from its directions (``Flow.detach``), so it can no longer be
        asked for them or for ``last_seen``; its id, tuple and parser results stay readable.
        """
        table = self.tcp if flow.transport == IPPROTO_TCP else self.udp
        for key in flow.keys:
            direction = table.get(key)
            if direction is not None and direction.flow is flow:
                del table[key]
        self.flows.pop(flow.id, None)
        flow.detach()

    def close(self, flow: Flow) -> None:
        """The flow is ended and reported: it stays as a tombstone for ``CLOSED_LINGER``."""
        flow.closed = True
        self._set_timer(flow.last_seen + CLOSED_LINGER, flow.id)

    def time_went_back(self) -> None:
        """A packet is older than one before it: a last_seen may have gone back, so the idle
        timers (set from earlier last_seen values) may be late; rebuild them at the next sweep."""
        self._timers_valid = False

    def sweep(self, now: float) -> list[Flow]:
        """Flows to end now, oldest first: idle too long (tombstones past their linger are
        just dropped). Only the flows whose timer's bucket has come are looked at."""
        if not self._timers_valid or self._timer_count > MAX_TIMERS_PER_FLOW * max(len(self), 16):
            self._rebuild_timers()
        last_bucket = now // TIMER_BUCKET
        due: dict[int, Flow] = {}
        rearm: list[tuple[float, int]] = []
        for bucket in sorted(bucket for bucket in self._timers if bucket <= last_bucket):
            flow_ids = self._timers.pop(bucket)
            self._timer_count -= len(flow_ids)
            for flow_id in flow_ids:
                flow = self.flows.get(flow_id)
                if flow is None or flow_id in due:
                    continue  # removed since its timer was set, or due by another timer
                limit = self._idle_limit(flow)
                last_seen = flow.last_seen
                idle = now - last_seen >= limit
                if idle and flow.closed:
                    self.remove(flow)
                    continue
                if idle:
                    due[flow_id] = flow
                # Set again (until the flow is removed), after the loop: it may be in a
                # bucket looked at already.
                rearm.append((last_seen + limit, flow_id))
        for deadline, flow_id in rearm:
            self._set_timer(deadline, flow_id)
        return [due[flow_id] for flow_id in sorted(due)]  # ids grow with creation order

    def _idle_limit(self, flow: Flow) -> float:
        if flow.closed:
            return CLOSED_LINGER
        return self.tcp_idle_timeout if flow.transport == IPPROTO_TCP else self.udp_idle_timeout

    def _set_timer(self, deadline: float, flow_id: int) -> None:
        bucket = int((deadline - TIMER_SLACK) // TIMER_BUCKET)
        flow_ids = self._timers.get(bucket)
        if flow_ids is None:
            self._timers[bucket] = [flow_id]
        else:
            flow_ids.append(flow_id)
        self._timer_count += 1

    def _rebuild_timers(self) -> None:
        self._timers = {}
        self._timer_count = 0
        for flow in self.flows.values():
            self._set_timer(flow.last_seen + self._idle_limit(flow), flow.id)
        self._timers_valid = True

    def oldest_open(self, count: int) -> list[Flow]:
        """Up to ``count`` open flows, oldest first (to end early when the table is full);
        tombstones met on the way are dropped."""
        found: list[Flow] = []
        for flow in list(self.flows.values()):
            if flow.closed:
                self.remove(flow)
                continue
            found.append(flow)
            if len(found) >= count:
                break
        return found

    def open_flows(self) -> list[Flow]:
        return [flow for flow in self.flows.values() if not flow.closed]
