"""The fast offline engine: a capture file in, observations out, in capture order.

    capture file -> reader -> packets -> flows -> [this module: TLS/DNS/HTTP parsing] -> pipeline

``read_observations(path, stats, progress=None)`` glues the reader (``reader.py``), packet
decoding (``packets.py``), the flow table (``flows.py``) and the parsers (``tls.py``,
``quic.py``, ``dns.py``, ``http.py``). It yields, as soon as each is known:

- ``DNSMessage`` for every DNS query/response (UDP 53/5353, TCP 53), so the pipeline learns
  names before the flows that use them;
- ``TLSHandshake`` once per TLS flow (both sides parsed, or the flow ended), over TCP or QUIC,
  also inside an HTTP CONNECT or SOCKS tunnel;
- ``HTTPRequest`` for every cleartext HTTP/1.x request, once its response is read (attached as
  ``response``: an LLM answer names the served model) or its flow ends;
- ``Connection`` when its flow ends (FIN/RST both ways, idle timeout, table full, end of file).

The protocol of a TCP flow is told from its first client bytes, never from the port.

Speed: most packets of a capture are bulk data on flows whose handshake is already parsed: all
they change is their direction's packet and byte counters and its ``last_seen``. Those packets
take a fast path (Ethernet, optionally one 802.1Q tag, + IPv4 without options or IPv6 without
extension headers, on a known flow that needs no more bytes, or a pure ACK: a dictionary lookup
and three counter updates). For classic pcap it runs in C (``_fastpath.c``, built by ``pip
install -e .``), which also does the SYN+ACK and the first FIN of a connection itself and hands
only the other packets to the per-packet path, decoded (``_Engine.decoded``); without the C
extension (or with ``native=False``) ``_pcap_loop`` runs the fast path in Python and hands the
rest to ``_Engine.packet``. pcapng takes the Python loop ``_record_loop``. Nothing in a packet
can raise out of the engine: bad packets and streams are counted in ``CaptureStats.skipped``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from auditor.capture import CaptureStats
from auditor.capture import quic as quic_parser
from auditor.capture import tls as tls_parser
from auditor.capture.dns import DNSParseError, parse_dns
from auditor.capture.flows import (
    CLIENT_STREAM_CAP,
    MAX_FLOWS,
    SERVER_STREAM_CAP,
    TCP_IDLE_TIMEOUT,
    UDP_IDLE_TIMEOUT,
    Direction,
    Flow,
    FlowTable,
)
from auditor.capture.http import (
    HTTPParseError,
    host_without_port,
    looks_like_http_request,
    may_become_http_request,
    parse_request,
    parse_response,
)
from auditor.capture.packets import (
    IPPROTO_TCP,
    LINKTYPE_ETHERNET,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Packet,
    decode,
)
from auditor.capture.reader import Capture, open_capture
from auditor.model import (
    ClientHello,
    Connection,
    DNSAnswer,
    DNSMessage,
    HTTPRequest,
    HTTPResponse,
    Observation,
    TLSHandshake,
)

try:
    # The fast path in C: optional, built from _fastpath.c when a compiler is available.
    from auditor.capture import _fastpath
except ImportError:  # not built: _pcap_loop runs the same loop in Python
    _fastpath = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DNS_PORTS = frozenset((53, 5353))
# Capture seconds between idle sweeps of the flow table.
SWEEP_INTERVAL = 5.0
# Client datagrams of a UDP flow tried as QUIC Initials before giving up (Chrome may spread its
# ClientHello over two or three).
QUIC_MAX_INITIALS = 4
# Fraction of the flow table ended early when it is full (ending one at a time would thrash).
EVICT_FRACTION = 8
# Server->client bytes buffered for HTTP responses (an LLM answer names the served model).
HTTP_RESPONSE_CAP = CLIENT_STREAM_CAP
# Requests waiting for their responses; past this the oldest is emitted without one.
MAX_UNANSWERED_REQUESTS = 32
# HTTP requests / DNS messages a Connection refers to; a long-lived flow (a DNS forwarder's
# fixed port, a keep-alive connection) must not hold every message it ever carried.
MAX_MESSAGES_PER_CONNECTION = 100
# DNS messages remembered by their bytes after the transaction id (see ``_Engine.dns_facts``);
# past this the memo starts over.
DNS_MEMO_SIZE = 4096
# Bytes of a SOCKS handshake looked through for the TLS record that follows it.
SOCKS_HANDSHAKE_MAX = 1024
# TLS 1.3: the certificate is encrypted, so the ServerHello is all the server side shows.
TLS_1_3 = 0x0304

ProgressCallback = Callable[[int], None]


def read_observations(
    path: str | Path,
    stats: CaptureStats,
    progress: ProgressCallback | None = None,
    *,
    max_flows: int = MAX_FLOWS,
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
    udp_idle_timeout: float = UDP_IDLE_TIMEOUT,
    native: bool = True,
) -> Iterator[Observation]:
    """Observations of one capture file, in capture order.

    Raises ``CaptureError`` at once when the file cannot be read at all; counts everything
    else in ``stats``. ``progress`` is called now and then with the bytes of the file read.
    ``native=False`` reads classic pcap with the Python loop (``_pcap_loop``) even when the C
    fast path is built: the same results, slower; kept to check the C loop against.
    """
    path = Path(path)
    capture = open_capture(path, stats.skipped, progress)
    engine = _Engine(path, stats, FlowTable(max_flows, tcp_idle_timeout, udp_idle_timeout))
    return _observations(engine, capture, native and _fastpath is not None)


def _observations(engine: _Engine, capture: Capture, native: bool) -> Iterator[Observation]:
    try:
        if capture.kind == "pcap" and native:
            yield from _native_pcap_loop(engine, capture)
        elif capture.kind == "pcap":
            yield from _pcap_loop(engine, capture)
        else:
            yield from _record_loop(engine, capture.records())
        engine.finish()
        yield from engine.out
        engine.out.clear()
    finally:
        capture.close()


# The loops below carry the same fast path (see the module doc): bulk packets of known flows
# that need no more bytes only bump three counters. ``_fastpath.walk`` runs it in C; the two
# Python loops have it inlined, not called, because a function call per packet would cost as
# much as the whole fast path. Each loop tells the flow table when a packet is older than one
# before it (``FlowTable.time_went_back``: its idle timers count on time going forward).
# Ethernet (optionally one 802.1Q tag) + IPv4 with a 20-byte header (0x45); offsets from the IP
# header: total length 2-3, flags and fragment offset 6-7, protocol 9, [12:24] src, dst,
# sport, dport (the flow-table key), TCP data offset 32, TCP flags 33 (& 7: FIN, SYN and RST
# take the slow path). Ethernet + IPv6 without extension headers: payload length 4-5, next
# header 6, [8:44] the key, TCP data offset 52, flags 53.


def _native_pcap_loop(engine: _Engine, capture: Capture) -> Iterator[Observation]:
    """Classic pcap through the C fast path: Python sees only the packets it hands over."""
    walk = _fastpath.walk
    table = engine.table
    tcp = table.tcp
    udp = table.udp
    out = engine.out
    slow_path = engine.packet
    decoded = engine.decoded
    linktype = capture.linktype
    little_endian = capture.byte_order == "<"
    ethernet = linktype == LINKTYPE_ETHERNET
    frac_scale = capture.frac_scale
    packets = 0
    captured = 0
    newest = 0.0
    buf: bytes | None = b""
    pos = 0
    try:
        while True:
            buf = capture.refill(buf, pos)  # type: ignore[arg-type]
            if buf is None:
                break
            pos = 0
            while True:
                pos, slow, ts, walked, walked_bytes, newest, went_back, packet = walk(
                    buf,
                    pos,
                    little_endian,
                    ethernet,
                    frac_scale,
                    tcp,
                    udp,
                    newest,
                    engine.next_sweep,
                )
                packets += walked
                captured += walked_bytes
                if went_back:
                    table.time_went_back()
                if slow < 0:
                    break  # the rest of the buffer is an incomplete record
                try:
                    if packet is not None:
                        decoded(ts, packet)  # C read its headers already
                    else:
                        slow_path(ts, linktype, buf[slow + 16 : pos])
                except Exception:  # a parser bug must not end the analysis of the file
                    engine.internal_error()
                if out:
                    yield from out
                    out.clear()
    finally:
        engine.stats.packets += packets
        engine.stats.bytes += captured


def _pcap_loop(engine: _Engine, capture: Capture) -> Iterator[Observation]:
    """Classic pcap: record headers read straight from the reader's buffer."""
    table = engine.table
    tcp = table.tcp
    udp = table.udp
    out = engine.out
    slow_path = engine.packet
    record_header = capture.record_header
    linktype = capture.linktype
    frac_scale = capture.frac_scale
    ethernet = linktype == LINKTYPE_ETHERNET
    packets = 0
    captured = 0
    newest = 0.0
    buf: bytes | None = b""
    pos = 0
    try:
        while True:
            buf = capture.refill(buf, pos)  # type: ignore[arg-type]
            if buf is None:
                break
            pos = 0
            end_buf = len(buf)
            while pos + 16 <= end_buf:
                sec, frac, caplen, _origlen = record_header(buf, pos)
                start = pos + 16
                end = start + caplen
                if end > end_buf:
                    break
                pos = end
                packets += 1
                captured += caplen
                ts = sec + frac * frac_scale
                if ts < newest:
                    table.time_went_back()
                else:
                    newest = ts
                if ethernet and caplen >= 54:
                    if buf[start + 12 : start + 15] == b"\x08\x00\x45":
                        ip = start + 14
                    elif (
                        buf[start + 12 : start + 14] == b"\x81\x00"
                        and buf[start + 16 : start + 19] == b"\x08\x00\x45"
                    ):
                        ip = start + 18  # one 802.1Q tag, as on most mirror ports
                    else:
                        ip = 0
                    if ip and not (buf[ip + 6] & 0x3F or buf[ip + 7]):
                        protocol = buf[ip + 9]
                        if protocol == 6:
                            direction = tcp.get(buf[ip + 12 : ip + 24])
                            if direction is not None and not buf[ip + 33] & 7:
                                ip_payload = ((buf[ip + 2] << 8) | buf[ip + 3]) - 20
                                # A pure ACK has nothing to reassemble even while collecting.
                                if (
                                    not direction.collecting
                                    or ip_payload == (buf[ip + 32] >> 4) * 4
                                ):
                                    direction.packets += 1
                                    direction.bytes += ip_payload
                                    direction.last_seen = ts
                                    continue
                        elif protocol == 17:
                            direction = udp.get(buf[ip + 12 : ip + 24])
                            if direction is not None and not direction.collecting:
                                direction.packets += 1
                                direction.bytes += ((buf[ip + 2] << 8) | buf[ip + 3]) - 20
                                direction.last_seen = ts
                                continue
                    elif buf[start + 12 : start + 14] == b"\x86\xdd" and caplen >= 74:
                        # IPv6 without extension headers: [8:44] is src, dst, sport, dport.
                        ip = start + 14
                        protocol = buf[ip + 6]
                        if protocol == 6:
                            direction = tcp.get(buf[ip + 8 : ip + 44])
                            if direction is not None and not buf[ip + 53] & 7:
                                ip_payload = (buf[ip + 4] << 8) | buf[ip + 5]
                                if (
                                    not direction.collecting
                                    or ip_payload == (buf[ip + 52] >> 4) * 4
                                ):
                                    direction.packets += 1
                                    direction.bytes += ip_payload
                                    direction.last_seen = ts
                                    continue
                        elif protocol == 17:
                            direction = udp.get(buf[ip + 8 : ip + 44])
                            if direction is not None and not direction.collecting:
                                direction.packets += 1
                                direction.bytes += (buf[ip + 4] << 8) | buf[ip + 5]
                                direction.last_seen = ts
                                continue
                try:
                    slow_path(ts, linktype, buf[start:end])
                except Exception:  # a parser bug must not end the analysis of the file
                    engine.internal_error()
                if out:
                    yield from out
                    out.clear()
    finally:
        engine.stats.packets += packets
        engine.stats.bytes += captured


def _record_loop(
    engine: _Engine, records: Iterator[tuple[float, int, bytes]]
) -> Iterator[Observation]:
    """pcapng (and anything else): one ``(ts, linktype, frame)`` record at a time."""
    table = engine.table
    tcp = table.tcp
    udp = table.udp
    out = engine.out
    slow_path = engine.packet
    packets = 0
    captured = 0
    newest = 0.0
    try:
        for ts, linktype, frame in records:
            packets += 1
            captured += len(frame)
            if ts < newest:
                table.time_went_back()
            else:
                newest = ts
            if linktype == LINKTYPE_ETHERNET and len(frame) >= 54:
                if frame[12:15] == b"\x08\x00\x45":
                    ip = 14
                elif frame[12:14] == b"\x81\x00" and frame[16:19] == b"\x08\x00\x45":
                    ip = 18
                else:
                    ip = 0
                if ip and not (frame[ip + 6] & 0x3F or frame[ip + 7]):
                    protocol = frame[ip + 9]
                    if protocol == 6:
                        direction = tcp.get(frame[ip + 12 : ip + 24])
                        if direction is not None and not frame[ip + 33] & 7:
                            ip_payload = ((frame[ip + 2] << 8) | frame[ip + 3]) - 20
                            if not direction.collecting or ip_payload == (frame[ip + 32] >> 4) * 4:
                                direction.packets += 1
                                direction.bytes += ip_payload
                                direction.last_seen = ts
                                continue
                    elif protocol == 17:
                        direction = udp.get(frame[ip + 12 : ip + 24])
                        if direction is not None and not direction.collecting:
                            direction.packets += 1
                            direction.bytes += ((frame[ip + 2] << 8) | frame[ip + 3]) - 20
                            direction.last_seen = ts
                            continue
                elif frame[12:14] == b"\x86\xdd" and len(frame) >= 74:
                    protocol = frame[20]
                    if protocol == 6:
                        direction = tcp.get(frame[22:58])
                        if direction is not None and not frame[67] & 7:
                            ip_payload = (frame[18] << 8) | frame[19]
                            if not direction.collecting or ip_payload == (frame[66] >> 4) * 4:
                                direction.packets += 1
                                direction.bytes += ip_payload
                                direction.last_seen = ts
                                continue
                    elif protocol == 17:
                        direction = udp.get(frame[22:58])
                        if direction is not None and not direction.collecting:
                            direction.packets += 1
                            direction.bytes += (frame[18] << 8) | frame[19]
                            direction.last_seen = ts
                            continue
            try:
                slow_path(ts, linktype, frame)
            except Exception:  # a parser bug must not end the analysis of the file
                engine.internal_error()
            if out:
                yield from out
                out.clear()
    finally:
        engine.stats.packets += packets
        engine.stats.bytes += captured


def _find_tls_record(data: bytearray, handshake_type: int) -> int:
    """Offset of the first TLS handshake record starting with message ``handshake_type`` (1:
    ClientHello, 2: ServerHello) in the first ``SOCKS_HANDSHAKE_MAX`` bytes; -1: none."""
    limit = min(len(data), SOCKS_HANDSHAKE_MAX + 6)
    position = data.find(b"\x16\x03", 0, limit)
    while position >= 0 and position + 6 <= len(data):
        if data[position + 2] <= 4 and data[position + 5] == handshake_type:
            return position
        position = data.find(b"\x16\x03", position + 1, limit)
    return -1


def _looks_like_socks(data: bytearray) -> bool:
    """A SOCKS 5 greeting (version, method count, methods) or a SOCKS 4/4a CONNECT request."""
    if data[0] == 5:
        return len(data) >= 3 and 1 <= data[1] <= 16 and len(data) >= 2 + data[1]
    return data[0] == 4 and len(data) >= 9 and data[1] in (1, 2)


def _complete_records(data: bytearray) -> tuple[int, bool]:
    """(bytes of complete TLS records at the start, whether a non-handshake record is among
    them: after ChangeCipherSpec, application data or an alert nothing cleartext follows)."""
    position = 0
    size = len(data)
    while position + 5 <= size:
        end = position + 5 + ((data[position + 3] << 8) | data[position + 4])
        if end > size:
            break
        if data[position] != 22:
            return end, True
        position = end
    return position, False


class _HTTPState:
    """Requests of one HTTP flow that wait for their response (answered in order)."""

    __slots__ = ("awaiting_tunnel", "unanswered")

    def __init__(self) -> None:
        self.unanswered: deque[HTTPRequest] = deque()
        self.awaiting_tunnel = False  # a CONNECT was sent: no requests until its answer


class _TLSState:
    """What has been parsed of one flow's TLS handshake so far."""

    __slots__ = (
        "alert",
        "certificates",
        "client",
        "client_done",
        "server",
        "server_done",
        "server_parsed",
        "server_prefix",
        "ts",
    )

    def __init__(self) -> None:
        self.client: ClientHello | None = None
        self.server = None  # ServerHello | None
        self.certificates: list = []  # type: ignore[type-arg]
        self.alert: str | None = None
        self.client_done = False
        self.server_done = False
        self.server_parsed = 0  # server bytes in complete records when last parsed
        self.server_prefix = False  # a tunnel handshake precedes the server's TLS records
        self.ts: float | None = None  # time of the ClientHello


# A parsed DNS message without its id: server name (the query name, lower case, without the
# final dot), query name, query type, is_response, rcode (responses only), answers.
_DNSFacts = tuple[str | None, str, str, bool, int | None, tuple[DNSAnswer, ...]]


class _Engine:
    """Per-file state: the flow table, the observations waiting to be yielded, the stats."""

    def __init__(self, path: Path, stats: CaptureStats, table: FlowTable) -> None:
        self.origin = f"pcap:{path.name}"
        self.stats = stats
        self.skipped = stats.skipped
        self.table = table
        self.out: list[Observation] = []
        # Capture time of the next idle sweep; the first packet sets it (its sweep finds none).
        self.next_sweep = -math.inf
        self._internal_errors_logged = 0
        # What a DNS message says apart from its id (``_DNSFacts``), by its bytes after the
        # id: clients ask the same questions again and again, and get the same answers while
        # the TTL stands, so most messages need not be parsed again. The answers are shared.
        self.dns_facts: dict[bytes, _DNSFacts] = {}

    # -- packets ------------------------------------------------------------------------------

    def packet(self, ts: float, linktype: int, frame: bytes) -> None:
        """Everything the fast path does not take: new flows, handshakes, flags, other links."""
        packet = decode(linktype, frame, self.skipped)
        if packet is not None:
            self.decoded(ts, packet)

    def decoded(self, ts: float, packet: Packet) -> None:
        """A packet for the per-packet path, decoded (by ``packet``, or by the C walk)."""
        if ts >= self.next_sweep:
            self._sweep(ts)
            self.next_sweep = ts + SWEEP_INTERVAL
        if packet.transport == IPPROTO_TCP:
            self._tcp(ts, packet)
        else:
            self._udp(ts, packet)

    def _parser_failed(self, reason: str, exc: Exception, expected: type[Exception]) -> None:
        """A parser gave up on a stream: malformed input, or (logged) a bug in the parser.
        Either way the stream is done with, so the same bytes are not tried again."""
        self.skipped[reason] += 1
        if not isinstance(exc, expected):
            self.internal_error()

    def internal_error(self) -> None:
        self.skipped["internal-error"] += 1
        if self._internal_errors_logged < 5:
            self._internal_errors_logged += 1
            log.warning("%s: packet processing failed", self.origin, exc_info=True)

    def _new_flow(self, ts: float, packet: Packet) -> Direction:
        if len(self.table) >= self.table.max_flows:
            self._make_room()
        direction = self.table.create(packet, ts)
        self.stats.flows += 1
        flow = direction.flow
        if flow.tuple.dst_port in DNS_PORTS or (
            flow.transport != IPPROTO_TCP and flow.tuple.src_port in DNS_PORTS
        ):
            flow.app = "dns"
        return direction

    def _tcp(self, ts: float, packet: Packet) -> None:
        flags = packet.flags
        opening = flags & TCP_SYN and not flags & TCP_ACK
        direction = self.table.tcp.get(packet.key)
        if direction is not None:
            flow = direction.flow
            if flow.closed:
                if not opening:
                    return  # trailing ACK/FIN of an ended flow: absorbed by its tombstone
                self.table.remove(flow)  # the tuple is reused by a new connection
                direction = None
            elif (
                opening
                and direction.next_seq is not None
                and direction.next_seq != (packet.seq + 1) & 0xFFFFFFFF
            ):
                # A new SYN (not a retransmission) on a live tuple: the old flow is over.
                self._end(flow)
                self.table.remove(flow)
                direction = None
        if direction is None:
            direction = self._new_flow(ts, packet)
        flow = direction.flow
        direction.packets += 1
        direction.bytes += packet.ip_payload_len
        direction.last_seen = ts
        seq = packet.seq
        if flags & TCP_SYN:
            seq = (seq + 1) & 0xFFFFFFFF  # the SYN takes one sequence number
            direction.start(seq)
        if packet.payload and direction.collecting:
            news = direction.add_segment(seq, packet.payload, ts)
            if packet.truncated and news:
                direction.gap = True  # cut by the snap length: the bytes after it are unknown
            if news:
                self._stream_data(flow, final=False)
        if flags & TCP_RST:
            self._end(flow)
        elif flags & TCP_FIN:
            direction.fin = True
            if flow.client.fin and flow.server.fin:
                self._end(flow)

    def _udp(self, ts: float, packet: Packet) -> None:
        direction = self.table.udp.get(packet.key)
        if direction is None:
            direction = self._new_flow(ts, packet)
        flow = direction.flow
        direction.packets += 1
        direction.bytes += packet.ip_payload_len
        direction.last_seen = ts
        if not direction.collecting:
            return
        payload = packet.payload
        if flow.app == "dns":
            self._dns_message(flow, payload, ts)
        elif direction.from_client and flow.app is None and payload and payload[0] & 0x80:
            self._quic(flow, payload, ts)
        else:
            direction.stop()  # nothing to read in it

    # -- application layers -------------------------------------------------------------------

    def _stream_data(self, flow: Flow, final: bool) -> None:
        """New in-order bytes on a TCP flow (or its end): run the parser its protocol needs."""
        if flow.app is None:
            self._decide_app(flow, final)
            if flow.app is None:
                return
        if flow.app == "tls":
            self._tls(flow, final)
        elif flow.app == "http":
            self._http(flow, final)
        elif flow.app == "socks":
            self._socks(flow, final)
        elif flow.app == "dns":
            self._dns_stream(flow, flow.client, final)
            self._dns_stream(flow, flow.server, final)

    def _decide_app(self, flow: Flow, final: bool) -> None:
        """Tell the protocol from the first client bytes (never from the port number)."""
        data = flow.client.data
        final = final or flow.client.gap
        if not data:
            if flow.server.full or flow.server.gap or (final and flow.server.data):
                self._give_up(flow)  # the server talks first and alone: not TLS or HTTP
            return
        if tls_parser.looks_like_tls(bytes(data[:16])):
            flow.app = "tls"
            flow.app_state = _TLSState()
        elif looks_like_http_request(data):
            flow.app = "http"
            flow.app_state = _HTTPState()
            flow.server.cap = HTTP_RESPONSE_CAP  # responses carry the served model
        elif _looks_like_socks(data):
            flow.app = "socks"
        elif final or flow.client.full:
            self._give_up(flow)
        elif may_become_http_request(data):
            return  # "GE": wait for the rest of the method
        elif len(data) < 5 and (data[0] == 0x16 or data[0] & 0x80):
            return  # the start of a TLS record header: wait for all five bytes
        else:
            self._give_up(flow)

    def _give_up(self, flow: Flow) -> None:
        flow.app = "other"
        flow.client.stop()
        flow.server.stop()

    def _tls(self, flow: Flow, final: bool) -> None:
        state: _TLSState = flow.app_state  # type: ignore[assignment]
        client, server = flow.client, flow.server
        client_final = final or client.gap or client.full
        server_final = final or server.gap or server.full
        if not state.client_done and (client.data or client_final):
            try:
                hello = tls_parser.parse_client_stream(bytes(client.data))
            except Exception as exc:  # TLSParseError, or a parser bug on hostile bytes
                self._parser_failed("malformed-tls", exc, tls_parser.TLSParseError)
                hello = None
                state.client_done = True
            else:
                if hello is not None:
                    state.client = hello
                    state.ts = client.time_at(client.buffer_offset)
                    state.client_done = True
                elif client_final:
                    state.client_done = True
            if state.client_done:
                client.stop()
        if state.server_prefix and server.data and not state.server_done:
            # After a SOCKS handshake: the server's TLS starts at its first TLS record.
            start = _find_tls_record(server.data, 2)
            if start < 0 and not server_final:
                return
            server.consume(max(start, 0) if start >= 0 else len(server.data))
            state.server_prefix = False
        if not state.server_done and (server.data or server_final):
            # Parse again only when a record was completed: a certificate chain arrives in
            # several segments, and parsing it once per segment would be quadratic.
            complete, cleartext_over = _complete_records(server.data)
            if complete > state.server_parsed or server_final:
                state.server_parsed = complete
                try:
                    parsed = tls_parser.parse_server_stream(bytes(server.data))
                except Exception as exc:
                    self._parser_failed("malformed-tls", exc, tls_parser.TLSParseError)
                    state.server_done = True
                else:
                    state.server = parsed.server
                    state.certificates = parsed.certificates
                    state.alert = parsed.alert
                    hello_done = parsed.server is not None and (
                        bool(parsed.certificates) or parsed.server.version >= TLS_1_3
                    )
                    if hello_done or parsed.alert or cleartext_over or server_final:
                        state.server_done = True
                if state.server_done:
                    server.stop()
        if state.client_done and state.server_done and flow.tls is None:
            self._emit_tls(flow, state)

    def _emit_tls(self, flow: Flow, state: _TLSState) -> None:
        if state.client is None and state.server is None and state.alert is None:
            return  # looked like TLS but nothing could be read: counted as malformed
        handshake = TLSHandshake(
            flow=flow.tuple,
            ts=state.ts if state.ts is not None else (flow.server.first_data_ts or flow.first_seen),
            # Through a proxy without SNI, the CONNECT target is the best name there is.
            server_name=(state.client.server_name if state.client else None) or flow.tunnel_host,
            origin=self.origin,
            client=state.client,
            server=state.server,
            certificates=state.certificates,
            alert=state.alert,
        )
        flow.tls = handshake
        self._emit(handshake)

    def _quic(self, flow: Flow, payload: bytes, ts: float) -> None:
        tried: list[bytes] = flow.app_state if isinstance(flow.app_state, list) else []
        flow.app_state = tried
        tried.append(bytes(payload))
        try:
            hello = quic_parser.parse_quic_initial(payload)
            if hello is None and len(tried) > 1:
                hello = quic_parser.parse_quic_initials(tried)
        except Exception as exc:
            self._parser_failed("malformed-quic", exc, tls_parser.TLSParseError)
            flow.client.stop()
            flow.server.stop()
            flow.app_state = None
            return
        if hello is not None:
            hello.over_quic = True
            flow.app = "quic"
            flow.app_state = None
            flow.client.stop()
            flow.server.stop()
            handshake = TLSHandshake(
                flow=flow.tuple,
                ts=ts,
                server_name=hello.server_name,
                origin=self.origin,
                client=hello,
            )
            flow.tls = handshake
            self._emit(handshake)
        elif len(tried) >= QUIC_MAX_INITIALS:
            flow.app_state = None
            flow.client.stop()
            flow.server.stop()

    def _http(self, flow: Flow, final: bool) -> None:
        """Requests from the client stream, each emitted once its response is read."""
        state: _HTTPState = flow.app_state  # type: ignore[assignment]
        client = flow.client
        while client.collecting and not state.awaiting_tunnel:
            if not client.data:
                if client.gap:
                    client.stop()
                break
            try:
                parsed = parse_request(client.data, final or client.full or client.gap)
            except HTTPParseError:
                self.skipped["malformed-http"] += 1
                client.stop()
                break
            if parsed is None:
                break
            request = parsed.request
            observation = HTTPRequest(
                flow=flow.tuple,
                ts=client.time_at(client.buffer_offset),
                server_name=request.host,
                origin=self.origin,
                method=request.method,
                host=request.host,
                path=request.target,
                http_version=request.version,
                headers=request.headers,
                body=request.body,
                body_truncated=request.body_truncated,
                body_error=request.body_error,
                encrypted=False,
            )
            flow.add_http(observation, MAX_MESSAGES_PER_CONNECTION)
            state.unanswered.append(observation)
            if len(state.unanswered) > MAX_UNANSWERED_REQUESTS:
                self._emit(state.unanswered.popleft())  # its answer is too far behind
            client.consume(parsed.consumed)
            client.skip += parsed.skip
            if request.method == "CONNECT":
                state.awaiting_tunnel = True  # the stream becomes a tunnel if the proxy agrees
            elif not parsed.in_sync:
                client.stop()  # where the next request starts is unknown (cut chunked body)
        self._http_responses(flow, state, final)
        if flow.app != "http":
            return  # entered a tunnel
        if final:
            while state.unanswered:
                self._emit(state.unanswered.popleft())
        if not client.collecting and not state.unanswered:
            flow.server.stop()

    def _http_responses(self, flow: Flow, state: _HTTPState, final: bool) -> None:
        server = flow.server
        server_final = final or server.full or server.gap
        while server.collecting and state.unanswered and (server.data or server_final):
            if not server.data:
                server.stop()
                return
            request = state.unanswered[0]
            try:
                parsed = parse_response(server.data, server_final, request.method)
            except HTTPParseError:
                self.skipped["malformed-http"] += 1
                server.stop()
                return
            if parsed is None:
                return
            ts = server.time_at(server.buffer_offset)
            server.consume(parsed.consumed)
            server.skip += parsed.skip
            answer = parsed.response
            if 100 <= answer.status < 200 and answer.status != 101:
                continue  # 100 Continue and friends: the real response follows
            request.response = HTTPResponse(
                status=answer.status,
                headers=answer.headers,
                body=answer.body,
                body_truncated=answer.body_truncated,
                ts=ts,
            )
            state.unanswered.popleft()
            self._emit(request)
            if request.method == "CONNECT":
                state.awaiting_tunnel = False
                if 200 <= answer.status < 300:
                    flow.tunnel_host = host_without_port(request.path)
                    self._enter_tunnel(flow, final)
                    return
            if answer.status == 101 or not parsed.in_sync:
                server.stop()  # upgraded (WebSocket), or the body ran to the end
                return

    def _enter_tunnel(self, flow: Flow, final: bool) -> None:
        """After a successful CONNECT: what follows is another protocol (TLS, usually)."""
        while isinstance(flow.app_state, _HTTPState) and flow.app_state.unanswered:
            self._emit(flow.app_state.unanswered.popleft())
        flow.app = None
        flow.app_state = None
        flow.server.cap = SERVER_STREAM_CAP
        self._stream_data(flow, final)

    def _socks(self, flow: Flow, final: bool) -> None:
        """SOCKS 4/5: skip the proxy handshake to the client's first TLS record, if any."""
        client = flow.client
        start = _find_tls_record(client.data, 1)
        if start < 0:
            too_long = len(client.data) > SOCKS_HANDSHAKE_MAX or flow.server.full
            if final or client.gap or too_long:
                self._give_up(flow)  # not a SOCKS handshake followed by TLS
            return
        client.consume(start)
        flow.app = "tls"
        state = _TLSState()
        state.server_prefix = True
        flow.app_state = state
        self._tls(flow, final)

    def _dns_stream(self, flow: Flow, direction: Direction, final: bool) -> None:
        """DNS over TCP: messages with a two-byte length prefix (RFC 1035 4.2.2)."""
        data = direction.data
        while direction.collecting and len(data) >= 2:
            length = (data[0] << 8) | data[1]
            if len(data) < 2 + length:
                break
            self._dns_message(flow, bytes(data[2 : 2 + length]), direction.last_seen)
            direction.consume(2 + length)
            data = direction.data
        if direction.collecting and (direction.full or direction.gap or final):
            direction.stop()

    def _dns_message(self, flow: Flow, message: bytes, ts: float) -> None:
        rest = message[2:]  # all but the transaction id
        facts = self.dns_facts.get(rest)
        if facts is None:
            try:
                parsed = parse_dns(message)
            except (DNSParseError, ValueError, IndexError):
                self.skipped["malformed-dns"] += 1
                return
            facts = (
                parsed.query_name.rstrip(".").lower() or None,
                parsed.query_name,
                parsed.query_type,
                parsed.is_response,
                parsed.rcode if parsed.is_response else None,
                tuple(parsed.answers),
            )
            if len(self.dns_facts) >= DNS_MEMO_SIZE:
                self.dns_facts.clear()
            self.dns_facts[rest] = facts
        server_name, query_name, query_type, is_response, rcode, answers = facts
        observation = DNSMessage(
            flow=flow.tuple,
            ts=ts,
            server_name=server_name,
            origin=self.origin,
            query_name=query_name,
            query_type=query_type,
            transaction_id=(message[0] << 8) | message[1],
            is_response=is_response,
            rcode=rcode,
            answers=list(answers),
        )
        # All are emitted; the Connection refers to the first few.
        flow.add_dns(observation, MAX_MESSAGES_PER_CONNECTION)
        self._emit(observation)

    # -- flow ends ----------------------------------------------------------------------------

    def _end(self, flow: Flow) -> None:
        """Finish parsing what the flow buffered and emit its observations and Connection."""
        if flow.closed:
            return
        if flow.transport == IPPROTO_TCP and flow.app != "other":
            try:
                self._stream_data(flow, final=True)
            except Exception:
                self.internal_error()
        if flow.app == "tls" and flow.tls is None and isinstance(flow.app_state, _TLSState):
            self._emit_tls(flow, flow.app_state)
        tls = flow.tls if isinstance(flow.tls, TLSHandshake) else None
        http = [h for h in flow.http if isinstance(h, HTTPRequest)] if flow.http else []
        server_name = None
        if tls is not None and tls.client is not None:
            server_name = tls.client.server_name
        if server_name is None:
            server_name = flow.tunnel_host
        if server_name is None and http:
            server_name = http[0].host
        app = flow.app if flow.app in ("tls", "http", "dns", "quic") else None
        self._emit(
            Connection(
                flow=flow.tuple,
                ts=flow.first_seen,
                server_name=server_name,
                origin=self.origin,
                first_seen=flow.first_seen,
                last_seen=flow.last_seen,
                packets_out=flow.client.packets,
                packets_in=flow.server.packets,
                bytes_out=flow.client.bytes,
                bytes_in=flow.server.bytes,
                tls=tls,
                http=http,
                dns=[d for d in flow.dns if isinstance(d, DNSMessage)] if flow.dns else [],
                app_protocol=app,
                client_direction_guessed=flow.direction_guessed,
            )
        )
        self.table.close(flow)
        flow.app_state = None
        flow.client.stop()
        flow.server.stop()

    def _sweep(self, now: float) -> None:
        for flow in self.table.sweep(now):
            self._end(flow)
            self.table.remove(flow)

    def _make_room(self) -> None:
        for flow in self.table.oldest_open(max(1, self.table.max_flows // EVICT_FRACTION)):
            self.skipped["flow-table-full"] += 1
            self._end(flow)
            self.table.remove(flow)

    def finish(self) -> None:
        """End of input: every open flow ends now, oldest first."""
        for flow in self.table.open_flows():
            self._end(flow)
            self.table.remove(flow)

    def _emit(self, observation: Observation) -> None:
        self.stats.observations[type(observation).__name__] += 1
        self.out.append(observation)
