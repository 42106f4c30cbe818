"""The tshark engine (``--engine tshark``): observations from Wireshark's full dissection.

    capture file -> tshark -T ek -> [this module] -> observations -> pipeline -> findings

It yields the same observation types as the fast engine (``auditor.capture.engine``):
``DNSMessage``, ``TLSHandshake`` (``ClientHello``/``ServerHello``/``Certificate``s),
``HTTPRequest`` (with its response when one was seen) and one ``Connection`` per flow that
refers to them, so detectors cannot tell which engine ran. It is the second opinion: slower,
but it sees what Wireshark sees (tunnels, reassembly, QUIC Initial decryption, every link
layer Wireshark knows), and ``tests/test_engines_agree.py`` checks the two engines against
each other.

Why a ``tshark -T ek -e FIELD ...`` subprocess and not pyshark: pyshark asks tshark for PDML
(XML of every field of every layer) and builds Python objects for all of it: merely iterating
a 3,000-packet capture with it took 8.8 s here, this whole engine 0.5 s. ``-T ek`` with ``-e``
prints one JSON object per packet on one line, with every occurrence of a field as a list, so
the output streams (memory stays flat on our side), needs no escaping rules of our own
(unlike ``-T fields``, whose separators can occur inside HTTP bodies), and keeps each field's
occurrences in wire order, which JA4 and JA3 need.

Wireshark's view differs from the fast engine's in a few documented ways:
- A field that occurs in several layers (tunnels: GRE, VXLAN, Geneve) is a list; the innermost
  occurrence (the last one) is the one the flow is made of.
- ``tls.handshake.sig_hash_alg`` holds the algorithms of signature_algorithms,
  signature_algorithms_cert and delegated_credentials alike; the list is split with
  ``tls.handshake.sig_hash_alg_len`` so that only signature_algorithms is kept.
- ALPN values are strings to Wireshark: bytes that are not UTF-8 come out as U+FFFD, so the
  JA4 ALPN characters of such a ClientHello can differ from the fast engine's.
- ``http.file_data`` is a string in tshark 4.0: a binary body stops at its first NUL byte.
- TLS on a port Wireshark does not associate with TLS is only dissected with a decode-as
  (``decode_as=["tcp.port==8443,tls"]``) or the TLS heuristic, which this engine turns on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.capture import CaptureError, CaptureStats
from auditor.capture.dns import type_name
from auditor.capture.flows import (
    CLOSED_LINGER,
    TCP_IDLE_TIMEOUT,
    UDP_IDLE_TIMEOUT,
    _server_port_side,
)
from auditor.capture.http import host_without_port
from auditor.capture.tls import ALERT_DESCRIPTIONS, ALERT_LEVELS
from auditor.model import (
    Certificate,
    ClientHello,
    Connection,
    DNSAnswer,
    DNSMessage,
    FlowTuple,
    HTTPRequest,
    HTTPResponse,
    Observation,
    ServerHello,
    TLSHandshake,
)

_PROGRESS_EVERY = 10_000  # packets between progress calls
_SWEEP_EVERY = 5.0  # capture seconds between idle sweeps
TSHARK_ENV = "AUDITOR_TSHARK"  # path of the tshark binary, when it is not on PATH

# Every field this engine reads, in the order they are asked for. Names checked against
# ``tshark -G fields`` (Wireshark 4.0).
TSHARK_FIELDS: tuple[str, ...] = (
    "frame.number",
    "frame.time_epoch",
    "frame.cap_len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.len",
    "ip.hdr_len",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.plen",
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "udp.stream",
    "udp.srcport",
    "udp.dstport",
    "tls.record.version",
    "tls.record.content_type",
    "tls.handshake.type",
    "tls.handshake.version",
    "tls.handshake.ciphersuite",
    "tls.handshake.extension.type",
    "tls.handshake.extensions_server_name",
    "tls.handshake.extensions_alpn_str",
    "tls.handshake.extensions.supported_version",
    "tls.handshake.sig_hash_alg",
    "tls.handshake.sig_hash_alg_len",
    "tls.handshake.extensions_supported_group",
    "tls.handshake.extensions_ec_point_format",
    "tls.handshake.certificate",
    "tls.alert_message.level",
    "tls.alert_message.desc",
    "dns.id",
    "dns.flags.response",
    "dns.flags.rcode",
    "dns.qry.name",
    "dns.qry.type",
    "dns.count.answers",
    "dns.resp.name",
    "dns.resp.type",
    "dns.resp.ttl",
    "dns.a",
    "dns.aaaa",
    "dns.cname",
    "dns.ns",
    "dns.ptr.domain_name",
    "dns.mx.preference",
    "dns.mx.mail_exchange",
    "http.request.method",
    "http.host",
    "http.request.uri",
    "http.request.version",
    "http.request.line",
    "http.file_data",
    "http.response.code",
    "http.response.line",
    "http.request_in",
)

# TLS handshake message types and record content types (RFC 8446 section 4, 5.1).
_CLIENT_HELLO = 1
_SERVER_HELLO = 2
_RECORD_CHANGE_CIPHER_SPEC = 20
_RECORD_APPLICATION_DATA = 23
# Extensions whose body is a signature-algorithm list dissected as tls.handshake.sig_hash_alg:
# signature_algorithms (13), delegated_credentials (34), signature_algorithms_cert (50).
_SIGNATURE_ALGORITHMS = 13
_SIG_HASH_LIST_EXTENSIONS = frozenset({13, 34, 50})

# TCP flag bits (RFC 9293).
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10


def find_tshark() -> str | None:
    """Path of the tshark binary ($AUDITOR_TSHARK, else PATH), or None when absent."""
    configured = os.environ.get(TSHARK_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("tshark")


def tshark_command(tshark: str, path: str | Path, decode_as: Sequence[str] = ()) -> list[str]:
    """The tshark command line that prints our fields for every packet of ``path``."""
    command = [
        tshark,
        "-r",
        str(path),
        "-n",  # no name resolution: it is slow and would put names where addresses belong
        "-T",
        "ek",
        # TLS on ports Wireshark has no registration for (8443, 4433, ...).
        "--enable-heuristic",
        "tls_tcp",
        # Reassemble TLS records and HTTP bodies split across segments, like the fast engine.
        "-o",
        "tcp.desegment_tcp_streams:TRUE",
        "-o",
        "tls.desegment_ssl_records:TRUE",
        "-o",
        "http.desegment_body:TRUE",
    ]
    for rule in decode_as:
        command += ["-d", rule]
    for name in TSHARK_FIELDS:
        command += ["-e", name]
    return command


# --- reading tshark's values -----------------------------------------------------------------


def _all(layers: dict[str, Any], name: str) -> list[str]:
    value = layers.get(name.replace(".", "_"))
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _last(layers: dict[str, Any], name: str) -> str | None:
    values = _all(layers, name)
    return values[-1] if values else None


def _first(layers: dict[str, Any], name: str) -> str | None:
    values = _all(layers, name)
    return values[0] if values else None


def _number(text: str | None) -> int | None:
    """tshark prints integers in their display base: "23", "0x0303"."""
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _numbers(layers: dict[str, Any], name: str) -> list[int]:
    return [n for n in (_number(v) for v in _all(layers, name)) if n is not None]


def _flag(text: str | None) -> bool:
    return text in ("1", "true", "True")


# --- per-flow state --------------------------------------------------------------------------


@dataclass
class _Flow:
    """What is known about one tcp.stream / udp.stream while it is being read."""

    flow_tuple: FlowTuple  # oriented client -> server
    first_seen: float
    last_seen: float
    direction_guessed: bool
    origin: str
    packets_out: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    tls: TLSHandshake | None = None
    tls_emitted: bool = False
    http: list[HTTPRequest] = field(default_factory=list)
    pending_http: dict[int, HTTPRequest] = field(default_factory=dict)  # frame -> request
    dns: list[DNSMessage] = field(default_factory=list)
    app_protocol: str | None = None
    tunnel_host: str | None = None  # target of an accepted HTTP CONNECT on this flow
    fins: set[bool] = field(default_factory=set)  # directions (is_out) that sent FIN

    def connection(self) -> Connection:
        server_name = None
        if self.tls and self.tls.client and self.tls.client.server_name:
            server_name = self.tls.client.server_name
        elif self.tunnel_host:
            server_name = self.tunnel_host
        elif self.http and self.http[0].host:
            server_name = self.http[0].host
        return Connection(
            flow=self.flow_tuple,
            ts=self.first_seen,
            server_name=server_name,
            origin=self.origin,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            packets_out=self.packets_out,
            packets_in=self.packets_in,
            bytes_out=self.bytes_out,
            bytes_in=self.bytes_in,
            tls=self.tls,
            http=list(self.http),
            dns=list(self.dns),
            app_protocol=self.app_protocol,
            client_direction_guessed=self.direction_guessed,
        )


@dataclass(frozen=True, slots=True)
class _Packet:
    """The transport facts of one packet, innermost layer."""

    transport: str
    stream: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    flags: int
    ip_payload: int


def _packet(layers: dict[str, Any]) -> _Packet | None:
    """The innermost TCP or UDP packet of a frame, or None when there is none."""
    protocols = (_first(layers, "frame.protocols") or "").split(":")
    if "icmp" in protocols or "icmpv6" in protocols:
        return None  # an ICMP error quoting a packet's headers is not a packet of that flow
    network = next((p for p in reversed(protocols) if p in ("ip", "ipv6")), None)
    if network is None:
        return None
    src_ip = _last(layers, f"{network}.src")
    dst_ip = _last(layers, f"{network}.dst")
    if network == "ip":
        total, header = _number(_last(layers, "ip.len")), _number(_last(layers, "ip.hdr_len"))
        ip_payload = (total - header) if total is not None and header is not None else 0
    else:
        ip_payload = _number(_last(layers, "ipv6.plen")) or 0
    after_ip = protocols[len(protocols) - 1 - protocols[::-1].index(network) :]
    transport = next((p for p in after_ip if p in ("tcp", "udp")), None)
    if transport is None or src_ip is None or dst_ip is None:
        return None
    stream = _number(_last(layers, f"{transport}.stream"))
    src_port = _number(_last(layers, f"{transport}.srcport"))
    dst_port = _number(_last(layers, f"{transport}.dstport"))
    if stream is None or src_port is None or dst_port is None:
        return None
    flags = (_number(_last(layers, "tcp.flags")) or 0) if transport == "tcp" else 0
    return _Packet(transport, stream, src_ip, src_port, dst_ip, dst_port, flags, ip_payload)


def _orient(packet: _Packet) -> tuple[FlowTuple, bool]:
    """(client -> server tuple, guessed) for the first packet seen of a flow, by the fast
    engine's rules: a SYN comes from the client, a SYN-ACK from the server; otherwise the ports
    decide (well-known vs not, ephemeral vs not), and failing that the first sender is the
    client. Only a TCP orientation without a SYN counts as guessed."""
    forward = FlowTuple(
        packet.transport, packet.src_ip, packet.src_port, packet.dst_ip, packet.dst_port
    )
    if packet.transport == "tcp" and packet.flags & _SYN:
        return (forward.reversed() if packet.flags & _ACK else forward), False
    sender_is_client = _server_port_side(packet.src_port, packet.dst_port)
    oriented = forward if sender_is_client is None or sender_is_client else forward.reversed()
    return oriented, packet.transport == "tcp"


# --- building observations -------------------------------------------------------------------


def _client_hello(layers: dict[str, Any], over_quic: bool) -> ClientHello:
    extensions = _numbers(layers, "tls.handshake.extension.type")
    return ClientHello(
        record_version=_number(_first(layers, "tls.record.version")) or 0,
        legacy_version=_number(_first(layers, "tls.handshake.version")) or 0,
        cipher_suites=_numbers(layers, "tls.handshake.ciphersuite"),
        extensions=extensions,
        supported_versions=_numbers(layers, "tls.handshake.extensions.supported_version"),
        server_name=_first(layers, "tls.handshake.extensions_server_name"),
        alpn=_all(layers, "tls.handshake.extensions_alpn_str"),
        signature_algorithms=_signature_algorithms(layers, extensions),
        supported_groups=_numbers(layers, "tls.handshake.extensions_supported_group"),
        ec_point_formats=_numbers(layers, "tls.handshake.extensions_ec_point_format"),
        over_quic=over_quic,
    )


def _signature_algorithms(layers: dict[str, Any], extensions: list[int]) -> list[int]:
    """The signature_algorithms list alone, out of every list dissected as sig_hash_alg."""
    algorithms = _numbers(layers, "tls.handshake.sig_hash_alg")
    lengths = _numbers(layers, "tls.handshake.sig_hash_alg_len")
    owners = [t for t in extensions if t in _SIG_HASH_LIST_EXTENSIONS]
    if len(owners) != len(lengths) or sum(lengths) != 2 * len(algorithms):
        # Not the shape we expect (truncated hello): keep everything rather than guess.
        return algorithms if _SIGNATURE_ALGORITHMS in extensions else []
    start = 0
    for owner, length in zip(owners, lengths, strict=True):
        count = length // 2
        if owner == _SIGNATURE_ALGORITHMS:
            return algorithms[start : start + count]
        start += count
    return []


def _server_hello(layers: dict[str, Any]) -> ServerHello:
    versions = _numbers(layers, "tls.handshake.extensions.supported_version")
    alpn = _all(layers, "tls.handshake.extensions_alpn_str")
    return ServerHello(
        legacy_version=_number(_first(layers, "tls.handshake.version")) or 0,
        cipher_suite=_number(_first(layers, "tls.handshake.ciphersuite")) or 0,
        extensions=_numbers(layers, "tls.handshake.extension.type"),
        selected_version=versions[0] if versions else None,
        alpn=alpn[0] if alpn else None,
    )


def _certificates(layers: dict[str, Any]) -> list[Certificate]:
    from auditor.capture.x509 import parse_certificate

    certificates = []
    for hex_der in _all(layers, "tls.handshake.certificate"):
        try:
            der = bytes.fromhex(hex_der.replace(":", ""))
        except ValueError:
            continue
        certificates.append(parse_certificate(der))
    return certificates


def _fingerprint(hello: ClientHello) -> None:
    """Fill JA4 and JA3 with the same functions the fast engine uses."""
    from auditor.enrich.fingerprints import ja3, ja4

    hello.ja4, hello.ja4_r = ja4(hello, transport="q" if hello.over_quic else "t")
    hello.ja3, hello.ja3_hash = ja3(hello)


def _dns_message(
    layers: dict[str, Any], flow: FlowTuple, ts: float, origin: str
) -> DNSMessage | None:
    query_name = _first(layers, "dns.qry.name")
    if query_name is None:
        return None
    is_response = _flag(_first(layers, "dns.flags.response"))
    answers: list[DNSAnswer] = []
    if is_response:
        answers = _dns_answers(layers)
    query_type = _number(_first(layers, "dns.qry.type")) or 0
    return DNSMessage(
        flow=flow,
        ts=ts,
        server_name=query_name.rstrip(".").lower() or None,  # as the fast engine names it
        origin=origin,
        query_name=query_name,
        query_type=type_name(query_type),
        transaction_id=_number(_first(layers, "dns.id")) or 0,
        is_response=is_response,
        rcode=_number(_first(layers, "dns.flags.rcode")) if is_response else None,
        answers=answers,
    )


def _dns_answers(layers: dict[str, Any]) -> list[DNSAnswer]:
    """The answer section. dns.resp.* covers answer, authority and additional records in order,
    with each type's data in its own list; the answer records come first. Data is read for the
    types the pipeline uses (A, AAAA, CNAME) and NS, PTR, MX; other types get "" (the fast
    engine writes their rdata in hex)."""
    names = _all(layers, "dns.resp.name")
    types = _numbers(layers, "dns.resp.type")
    ttls = _numbers(layers, "dns.resp.ttl")
    data_by_type = {
        1: iter(_all(layers, "dns.a")),
        28: iter(_all(layers, "dns.aaaa")),
        5: iter(_all(layers, "dns.cname")),
        2: iter(_all(layers, "dns.ns")),
        12: iter(_all(layers, "dns.ptr.domain_name")),
        15: iter(
            f"{preference} {exchange}"
            for preference, exchange in zip(
                _all(layers, "dns.mx.preference"),
                _all(layers, "dns.mx.mail_exchange"),
                strict=False,
            )
        ),
    }
    answer_count = _number(_first(layers, "dns.count.answers")) or 0
    answers = []
    for index, (name, rtype) in enumerate(zip(names, types, strict=False)):
        values = data_by_type.get(rtype)
        data = next(values, "") if values is not None else ""
        if index >= answer_count:
            continue  # authority / additional: read to keep the data lists aligned
        ttl = ttls[index] if index < len(ttls) else 0
        answers.append(DNSAnswer(name, type_name(rtype), data, ttl))
    return answers


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        name, sep, value = line.rstrip("\r\n").partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return headers


def _body(layers: dict[str, Any]) -> bytes:
    data = _all(layers, "http.file_data")
    return data[0].encode("utf-8", "surrogateescape") if data else b""


# --- the engine ------------------------------------------------------------------------------


class _Reader:
    """Turns tshark's packets into observations, keeping per-flow state until the flow ends."""

    def __init__(self, path: Path, stats: CaptureStats) -> None:
        self.origin = f"pcap:{path.name}"
        self.stats = stats
        self.flows: dict[tuple[str, int], _Flow] = {}
        # Streams already reported (FIN both ways or RST) -> when: their trailing ACKs are
        # absorbed instead of starting a flow, as the fast engine's tombstones do.
        self.ended: dict[tuple[str, int], float] = {}
        self.next_sweep = 0.0

    def packet(self, layers: dict[str, Any]) -> Iterator[Observation]:
        ts = float(_first(layers, "frame.time_epoch") or 0.0)
        packet = _packet(layers)
        if packet is None:
            self.stats.skipped["not-tcp-udp"] += 1
            return
        if ts >= self.next_sweep:
            yield from self._sweep(ts)
        key = (packet.transport, packet.stream)
        if key in self.ended:
            return
        flow = self.flows.get(key)
        if flow is None:
            self.stats.flows += 1
            oriented, guessed = _orient(packet)
            flow = _Flow(oriented, ts, ts, guessed, self.origin)
            self.flows[key] = flow
        is_out = (
            packet.src_ip == flow.flow_tuple.src_ip and packet.src_port == flow.flow_tuple.src_port
        )
        flow.last_seen = max(flow.last_seen, ts)
        if is_out:
            flow.packets_out += 1
            flow.bytes_out += packet.ip_payload
        else:
            flow.packets_in += 1
            flow.bytes_in += packet.ip_payload
        protocols = set((_first(layers, "frame.protocols") or "").split(":"))
        if "dns" in protocols or "mdns" in protocols:
            yield from self._dns(layers, flow, ts)
        if "tls" in protocols:
            yield from self._tls(layers, flow, ts, "quic" in protocols, is_out)
        if "http" in protocols:
            yield from self._http(layers, flow, ts)
        if packet.transport == "tcp":
            if packet.flags & _FIN:
                flow.fins.add(is_out)
            if packet.flags & _RST or len(flow.fins) == 2:
                self.ended[key] = ts
                yield from self._finish(key)

    def _sweep(self, now: float) -> Iterator[Observation]:
        """End flows idle past the fast engine's timeouts; forget old tombstones."""
        self.next_sweep = now + _SWEEP_EVERY
        for key, ended_at in list(self.ended.items()):
            if now - ended_at >= CLOSED_LINGER:
                del self.ended[key]
        for key, flow in list(self.flows.items()):
            timeout = TCP_IDLE_TIMEOUT if key[0] == "tcp" else UDP_IDLE_TIMEOUT
            if now - flow.last_seen >= timeout:
                yield from self._finish(key)

    def _dns(self, layers: dict[str, Any], flow: _Flow, ts: float) -> Iterator[Observation]:
        message = _dns_message(layers, flow.flow_tuple, ts, self.origin)
        if message is None:
            self.stats.skipped["malformed-dns"] += 1
            return
        flow.app_protocol = flow.app_protocol or "dns"
        flow.dns.append(message)
        yield message

    def _tls(
        self, layers: dict[str, Any], flow: _Flow, ts: float, over_quic: bool, from_client: bool
    ) -> Iterator[Observation]:
        flow.app_protocol = "quic" if over_quic else "tls"
        types = _numbers(layers, "tls.handshake.type")
        handshake = flow.tls
        if _CLIENT_HELLO in types and (handshake is None or handshake.client is None):
            hello = _client_hello(layers, over_quic)
            _fingerprint(hello)
            handshake = flow.tls = TLSHandshake(
                flow=flow.flow_tuple,
                ts=ts,
                # Through a proxy without SNI, the CONNECT target is the best name there is.
                server_name=hello.server_name or flow.tunnel_host,
                origin=self.origin,
                client=hello,
            )
        levels = _numbers(layers, "tls.alert_message.level")
        descriptions = _numbers(layers, "tls.alert_message.desc")
        server_alert = not from_client and bool(levels and descriptions)
        if handshake is None:
            if _SERVER_HELLO not in types and not server_alert:
                return  # records of a flow whose handshake was not captured: nothing to report
            handshake = flow.tls = TLSHandshake(flow=flow.flow_tuple, ts=ts, origin=self.origin)
        if _SERVER_HELLO in types:
            handshake.server = _server_hello(layers)
        if _all(layers, "tls.handshake.certificate"):
            handshake.certificates = _certificates(layers)
        if server_alert and handshake.alert is None:
            # The first cleartext alert from the server, written as the fast engine does.
            level = ALERT_LEVELS.get(levels[0], f"level_{levels[0]}")
            handshake.alert = (
                f"{level}:{ALERT_DESCRIPTIONS.get(descriptions[0], f'alert_{descriptions[0]}')}"
            )
        if not flow.tls_emitted and (
            handshake.alert is not None
            or (handshake.server is not None and self._handshake_seen(layers, handshake, types))
        ):
            flow.tls_emitted = True
            yield handshake

    @staticmethod
    def _handshake_seen(layers: dict[str, Any], handshake: TLSHandshake, types: list[int]) -> bool:
        """Whether nothing more of the handshake will be visible on the wire."""
        server = handshake.server
        if server is not None and server.version >= 0x0304:
            return True  # TLS 1.3: everything after the ServerHello is encrypted
        if handshake.certificates:
            return True
        records = _numbers(layers, "tls.record.content_type")
        return _SERVER_HELLO not in types and any(
            r in (_RECORD_CHANGE_CIPHER_SPEC, _RECORD_APPLICATION_DATA) for r in records
        )

    def _http(self, layers: dict[str, Any], flow: _Flow, ts: float) -> Iterator[Observation]:
        method = _first(layers, "http.request.method")
        if method is not None:
            target = _first(layers, "http.request.uri") or ""
            host = host_without_port(_first(layers, "http.host"))
            if host is None and target.startswith(("http://", "https://")):
                host = host_without_port(target.split("/", 3)[2])  # absolute-form (proxy)
            request = HTTPRequest(
                flow=flow.flow_tuple,
                ts=ts,
                server_name=host,
                origin=self.origin,
                method=method,
                host=host,
                path=target,
                http_version=_first(layers, "http.request.version") or "",
                headers=_headers(_all(layers, "http.request.line")),
                body=_body(layers),
                encrypted=False,
            )
            flow.app_protocol = flow.app_protocol or "http"
            flow.http.append(request)
            frame = _number(_first(layers, "frame.number"))
            if frame is not None:
                flow.pending_http[frame] = request
        status = _number(_first(layers, "http.response.code"))
        request_frame = _number(_first(layers, "http.request_in"))
        if status is not None and request_frame is not None:
            answered = flow.pending_http.pop(request_frame, None)
            if answered is not None:
                answered.response = HTTPResponse(
                    status=status,
                    headers=_headers(_all(layers, "http.response.line")),
                    body=_body(layers) if method is None else b"",
                    ts=ts,
                )
                if answered.method == "CONNECT" and 200 <= status < 300:
                    flow.tunnel_host = host_without_port(answered.path)
                yield answered
        return

    def _finish(self, key: tuple[str, int]) -> Iterator[Observation]:
        flow = self.flows.pop(key)
        # Requests never answered, then a handshake that never completed, then the summary.
        yield from sorted(flow.pending_http.values(), key=lambda r: r.ts)
        if flow.tls is not None and not flow.tls_emitted:
            yield flow.tls
        yield flow.connection()

    def finish_all(self) -> Iterator[Observation]:
        for key in sorted(self.flows, key=lambda k: self.flows[k].first_seen):
            yield from self._finish(key)


def read_observations_tshark(
    path: str | Path,
    stats: CaptureStats,
    progress: Callable[[int], None] | None = None,
    *,
    decode_as: Sequence[str] = (),
) -> Iterator[Observation]:
    """Observations of the capture at ``path`` as Wireshark dissects it.

    ``stats`` is updated as packets are read; ``progress`` is called now and then with an
    estimate of the bytes of the file read (exact at the end). ``decode_as`` takes tshark
    ``-d`` rules (``"tcp.port==8443,tls"``). Raises ``CaptureError`` when tshark is missing or
    cannot read the file.
    """
    path = Path(path)
    tshark = find_tshark()
    if tshark is None:
        raise CaptureError(
            f"{path}: tshark not found; install Wireshark's tshark (Debian: apt-get install "
            f"tshark) or set {TSHARK_ENV}, or use --engine fast"
        )
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    reader = _Reader(path, stats)
    command = tshark_command(tshark, path, decode_as)
    # stderr goes to a file, not a pipe: a pipe nobody reads while stdout streams could fill
    # up and stall tshark.
    with (
        tempfile.TemporaryFile() as stderr_file,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr_file, stdin=subprocess.DEVNULL
        ) as process,
    ):
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if line.startswith(b'{"index"'):
                    continue  # the bulk-API header line ek writes before every packet
                try:
                    layers = json.loads(line)["layers"]
                except (ValueError, KeyError, TypeError):
                    stats.skipped["unreadable-tshark-record"] += 1
                    continue
                stats.packets += 1
                stats.bytes += _number(_first(layers, "frame.cap_len")) or 0
                if progress is not None and stats.packets % _PROGRESS_EVERY == 0:
                    # tshark does not say where in the file it is: estimate it from the pcap
                    # layout (24-byte file header, 16-byte record headers).
                    progress(24 + 16 * stats.packets + stats.bytes)
                try:
                    for obs in reader.packet(layers):
                        stats.observations[type(obs).__name__] += 1
                        yield obs
                except (ValueError, KeyError, TypeError, IndexError):
                    # A packet Wireshark dissected into something we cannot use: skip it.
                    stats.skipped["malformed-packet"] += 1
        finally:
            if process.poll() is None:  # the consumer stopped early: do not leave tshark behind
                process.kill()
            process.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", "replace")
    if process.returncode != 0:
        reason = _tshark_reason(stderr, process.returncode)
        if stats.packets == 0:
            raise CaptureError(f"{path}: {reason}")
        # tshark stopped part-way (a cut-short or corrupt record): keep what it read, as the
        # fast engine does, and count why the rest is missing.
        stats.skipped["truncated-file" if "cut short" in reason else "corrupt-record"] += 1
    if stats.packets == 0 and path.stat().st_size == 0:
        raise CaptureError(f"{path}: empty file, not a capture")
    for obs in reader.finish_all():
        stats.observations[type(obs).__name__] += 1
        yield obs
    if progress is not None:
        progress(path.stat().st_size)


def _tshark_reason(stderr: str, returncode: int) -> str:
    """tshark's one-line reason, without its banner about running as root."""
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith("Running as user"):
            return line.removeprefix("tshark: ")
    return f"tshark exited with status {returncode}"
