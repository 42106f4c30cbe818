"""The fast engine end to end: capture files in, observations out (TLS, HTTP, DNS, Connection).

Captures are built in the tests (scapy packets, hand-written pcap); the JA4 reference corpus in
``../shared/corpus/ja4`` is read when present.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import struct
from pathlib import Path

import pytest
from capture_helpers import (
    dns_query_bytes,
    dns_response_bytes,
    ether,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    real_tls_flights,
    tcp_packet,
    tcp_session,
    udp_packet,
    write_pcap,
)

from auditor.capture import CaptureError, CaptureStats
from auditor.capture import flows as flows_module
from auditor.capture.engine import read_observations
from auditor.model import Connection, DNSMessage, HTTPRequest, Observation, TLSHandshake

CLIENT = ("10.0.0.5", 50123)
SERVER = ("203.0.113.10", 443)


@pytest.fixture(scope="module")
def tls12_flights() -> tuple[bytes, bytes]:
    return real_tls_flights("api.example.com")


def run(path: Path, **options) -> tuple[list[Observation], CaptureStats]:
    stats = CaptureStats()
    return list(read_observations(path, stats, **options)), stats


def capture(tmp_path: Path, packets: list[tuple[float, bytes]], name: str = "c.pcap", **kw) -> Path:
    return write_pcap(tmp_path / name, [(ts, ether(raw)) for ts, raw in packets], **kw)


def of_type(observations: list[Observation], kind: type) -> list:
    return [o for o in observations if isinstance(o, kind)]


def split(data: bytes, *cuts: int) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_tls_handshake_split_over_segments(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    packets = tcp_session(
        CLIENT, SERVER, split(hello, 10, 100), split(server_flight, 700, 1400, 2100)
    )
    observations, stats = run(capture(tmp_path, packets))
    (handshake,) = of_type(observations, TLSHandshake)
    assert handshake.server_name == "api.example.com"
    assert handshake.client is not None and handshake.client.ja4
    assert handshake.server is not None and handshake.server.version == 0x0303
    assert handshake.certificates and "api.example.com" in handshake.certificates[0].sans
    assert handshake.origin == "pcap:c.pcap"
    assert handshake.ts == pytest.approx(packets[3][0], abs=1e-6)  # first ClientHello segment
    (connection,) = of_type(observations, Connection)
    assert observations[-1] is connection
    assert connection.tls is handshake and connection.app_protocol == "tls"
    assert connection.server_name == "api.example.com"
    assert (connection.flow.src_ip, connection.flow.dst_port) == ("10.0.0.5", 443)
    # SYN, ACK, 3 data, FIN out; SYN-ACK, 4 data, FIN in. The ACK of the last FIN comes after
    # the flow ended: its tombstone absorbs it.
    assert (connection.packets_out, connection.packets_in) == (6, 6)
    assert connection.bytes_out == 6 * 20 + len(hello)
    assert connection.bytes_in == 6 * 20 + len(server_flight)
    assert not connection.client_direction_guessed
    assert stats.flows == 1 and stats.packets == len(packets) and not stats.skipped


def test_tls_segments_out_of_order_and_retransmitted(tmp_path: Path, tls12_flights):
    hello, _ = tls12_flights
    packets = tcp_session(CLIENT, SERVER, split(hello, 50, 120, 200))
    data = packets[3:7]
    # Order on the wire: 3rd, 1st, 1st again (retransmission), 4th, 2nd.
    reordered = [data[2], data[0], data[0], data[3], data[1]]
    times = [ts for ts, _ in packets[3:8]]
    packets[3:7] = [(t, raw) for t, (_, raw) in zip(times, reordered, strict=False)]
    observations, _ = run(capture(tmp_path, packets))
    (handshake,) = of_type(observations, TLSHandshake)
    assert handshake.server_name == "api.example.com"


def test_tls_detected_by_bytes_not_port(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    packets = tcp_session(("10.0.0.5", 50123), ("203.0.113.10", 8443), [hello], [server_flight])
    observations, _ = run(capture(tmp_path, packets))
    assert [h.server_name for h in of_type(observations, TLSHandshake)] == ["api.example.com"]
    packets = tcp_session(CLIENT, SERVER, [b"SSH-2.0-OpenSSH_9.6\r\n"], [b"SSH-2.0-x\r\n"])
    observations, _ = run(capture(tmp_path, packets, "ssh.pcap"))
    assert not of_type(observations, TLSHandshake)
    assert of_type(observations, Connection)[0].app_protocol is None


def test_http_keep_alive_chunked_gzip_and_split_segments(tmp_path: Path):
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    first = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay.example.net:8080\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    packed = gzip.compress(body)
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    second = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay.example.net:8080\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunks
    )
    server = ("198.51.100.7", 8080)
    packets = tcp_session(CLIENT, server, [*split(first, 20, 90), *split(second, 5)])
    observations, stats = run(capture(tmp_path, packets))
    requests = of_type(observations, HTTPRequest)
    assert [(r.method, r.host, r.server_name, r.body) for r in requests] == [
        ("POST", "relay.example.net", "relay.example.net", body),
        ("POST", "relay.example.net", "relay.example.net", body),
    ]
    assert not any(r.encrypted for r in requests)
    assert [r.ts for r in requests] == pytest.approx([packets[3][0], packets[6][0]], abs=1e-6)
    (connection,) = of_type(observations, Connection)
    assert connection.http == requests and connection.app_protocol == "http"
    assert connection.server_name == "relay.example.net"
    assert observations.index(requests[-1]) < observations.index(connection)
    assert not stats.skipped


def test_http_body_larger_than_the_cap_is_cut_and_the_next_request_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(flows_module, "CLIENT_STREAM_CAP", 2048)
    big = b"x" * 10_000
    first = b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10000\r\n\r\n" + big
    second = b"GET /after HTTP/1.1\r\nHost: a.example\r\n\r\n"
    stream = first + second
    segments = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    observations, _ = run(capture(tmp_path, tcp_session(CLIENT, ("198.51.100.7", 80), segments)))
    requests = of_type(observations, HTTPRequest)
    assert [r.path for r in requests] == ["/upload", "/after"]
    assert requests[0].body_truncated and 0 < len(requests[0].body) < 10_000
    assert not requests[1].body_truncated


def test_http_responses_are_paired_with_their_requests(tmp_path: Path):
    answer_body = b'{"id": "chatcmpl-1", "model": "gpt-4o-mini-2024-07-18"}'
    requests = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\n"
        b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n{}",
        b"HEAD /health HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    ]
    packed = gzip.compress(answer_body)
    responses = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(packed), packed),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",  # HEAD: no body follows
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n",
    ]
    packets = tcp_session(CLIENT, ("198.51.100.7", 80), requests, responses)
    observations, stats = run(capture(tmp_path, packets))
    found = of_type(observations, HTTPRequest)
    assert [(r.path, r.response.status, r.response.body) for r in found] == [
        ("/v1/chat/completions", 200, answer_body),
        ("/health", 200, b""),
        ("/v1/models", 404, b"no!"),
    ]
    assert found[0].response.ts > found[0].ts
    assert not stats.skipped


def test_unanswered_requests_come_out_when_the_flow_ends(tmp_path: Path):
    request = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
    packets = tcp_session(CLIENT, ("198.51.100.7", 80), [request])
    observations, _ = run(capture(tmp_path, packets))
    kinds = [type(o).__name__ for o in observations]
    assert kinds == ["HTTPRequest", "Connection"]
    assert observations[0].response is None


def test_tls_inside_an_http_connect_tunnel(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    connect = b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n"
    established = b"HTTP/1.1 200 Connection established\r\n\r\n"
    proxy = ("198.51.100.8", 3128)
    (cip, cport), (pip, pport) = CLIENT, proxy
    packets = tcp_session(CLIENT, proxy, [connect], [established], with_fin=False)
    c_seq = 1001 + len(connect)
    s_seq = 5001 + len(established)
    packets.append((9.0, tcp_packet(cip, pip, cport, pport, c_seq, "PA", hello)))
    packets.append((9.1, tcp_packet(pip, cip, pport, cport, s_seq, "PA", server_flight)))
    observations, _ = run(capture(tmp_path, packets))
    (request,) = of_type(observations, HTTPRequest)
    assert request.method == "CONNECT" and request.response.status == 200
    (handshake,) = of_type(observations, TLSHandshake)
    assert handshake.server_name == "api.example.com" and handshake.certificates
    (connection,) = of_type(observations, Connection)
    assert connection.app_protocol == "tls" and connection.http == [request]
    assert connection.server_name == "api.example.com"


def test_dns_over_udp_and_tcp(tmp_path: Path):
    resolver = "192.0.2.53"
    query = dns_query_bytes("api.example.com", 7)
    answer = dns_response_bytes("api.example.com", "203.0.113.10", 7)
    packets = [
        (1.0, udp_packet("10.0.0.5", resolver, 40000, 53, query)),
        (1.1, udp_packet(resolver, "10.0.0.5", 53, 40000, answer)),
    ]
    tcp_dns = struct.pack("!H", len(query)) + query
    tcp_answer = struct.pack("!H", len(answer)) + answer
    packets += tcp_session(
        ("10.0.0.5", 40001), (resolver, 53), split(tcp_dns, 1), [tcp_answer], start=2.0
    )
    observations, stats = run(capture(tmp_path, packets))
    messages = of_type(observations, DNSMessage)
    assert [(m.is_response, m.flow.transport) for m in messages] == [
        (False, "udp"),
        (True, "udp"),
        (False, "tcp"),
        (True, "tcp"),
    ]
    for message in messages:
        assert message.flow.dst_ip == resolver and message.flow.dst_port == 53
        assert message.server_name == "api.example.com"
    assert messages[1].resolved_addresses() == [("203.0.113.10", "api.example.com")]
    assert {c.app_protocol for c in of_type(observations, Connection)} == {"dns"}
    assert not stats.skipped


def test_malformed_dns_is_counted(tmp_path: Path):
    packets = [(1.0, udp_packet("10.0.0.5", "192.0.2.53", 40000, 53, b"\x00\x01garbage"))]
    observations, stats = run(capture(tmp_path, packets))
    assert not of_type(observations, DNSMessage)
    assert stats.skipped["malformed-dns"] == 1


def test_repeated_dns_messages_keep_their_own_ids_and_answer_lists(tmp_path: Path):
    # The second query and answer differ from the first only in the transaction id: the engine
    # remembers what the first said, and must still give each message its own id and list.
    resolver = "192.0.2.53"
    packets = [
        (1.0 + i / 10, udp_packet(*ends, message))
        for i, (ends, message) in enumerate(
            [
                (("10.0.0.5", resolver, 40000, 53), dns_query_bytes("API.example.com", 7)),
                (
                    (resolver, "10.0.0.5", 53, 40000),
                    dns_response_bytes("api.example.com", "203.0.113.10", 7),
                ),
                (("10.0.0.5", resolver, 40000, 53), dns_query_bytes("API.example.com", 8)),
                (
                    (resolver, "10.0.0.5", 53, 40000),
                    dns_response_bytes("api.example.com", "203.0.113.10", 8),
                ),
                (("10.0.0.5", resolver, 40000, 53), b"\x00\x09" + dns_query_bytes("x")[2:11]),
            ]
        )
    ]
    observations, stats = run(capture(tmp_path, packets))
    messages = of_type(observations, DNSMessage)
    assert [(m.transaction_id, m.is_response, m.rcode) for m in messages] == [
        (7, False, None),
        (7, True, 0),
        (8, False, None),
        (8, True, 0),
    ]
    assert {m.server_name for m in messages} == {"api.example.com"}
    assert messages[0].query_name == messages[2].query_name == "API.example.com"
    assert messages[1].answers == messages[3].answers and messages[1].answers
    assert messages[1].answers is not messages[3].answers
    assert stats.skipped["malformed-dns"] == 1


def test_dns_comes_out_before_the_flow_it_names(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    packets = [
        (0.5, udp_packet("10.0.0.5", "192.0.2.53", 40000, 53, dns_query_bytes("api.example.com"))),
        (
            0.6,
            udp_packet(
                "192.0.2.53",
                "10.0.0.5",
                53,
                40000,
                dns_response_bytes("api.example.com", SERVER[0]),
            ),
        ),
        *tcp_session(CLIENT, SERVER, [hello], [server_flight], start=1.0),
    ]
    observations, _ = run(capture(tmp_path, packets))
    kinds = [type(o).__name__ for o in observations]
    assert kinds.index("DNSMessage") < kinds.index("TLSHandshake") < kinds.index("Connection")


def test_orientation_without_syn_uses_ports(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    packets = tcp_session(CLIENT, SERVER, [hello], [server_flight], with_syn=False)
    packets = packets[1:2] + packets[:1] + packets[2:]  # the server speaks first in the file
    observations, _ = run(capture(tmp_path, packets))
    (connection,) = of_type(observations, Connection)
    assert connection.flow.dst_port == 443 and connection.client_direction_guessed
    assert connection.tls is not None and connection.server_name == "api.example.com"


def test_syn_ack_first_still_orients_to_the_client(tmp_path: Path):
    packets = tcp_session(("10.0.0.5", 3000), ("10.0.0.6", 2000), [b"x"])[1:]  # no SYN
    observations, _ = run(capture(tmp_path, packets))
    (connection,) = of_type(observations, Connection)
    assert (connection.flow.src_port, connection.flow.dst_port) == (3000, 2000)
    assert not connection.client_direction_guessed


def test_trailing_ack_after_close_does_not_start_a_flow(tmp_path: Path):
    packets = tcp_session(CLIENT, SERVER, [b"hello"])
    packets.append((packets[-1][0] + 0.01, packets[-1][1]))  # the last ACK, again
    observations, stats = run(capture(tmp_path, packets))
    assert len(of_type(observations, Connection)) == 1 and stats.flows == 1


def test_port_reuse_after_close_is_a_new_flow(tmp_path: Path):
    first = tcp_session(CLIENT, SERVER, [b"one"], start=1.0)
    second = tcp_session(CLIENT, SERVER, [b"two"], start=2.0, client_isn=90000)
    observations, stats = run(capture(tmp_path, first + second))
    assert len(of_type(observations, Connection)) == 2 and stats.flows == 2


def test_idle_flows_end_in_capture_time(tmp_path: Path):
    idle = tcp_session(CLIENT, SERVER, [b"x"], with_fin=False, start=0.0)
    later = [(1000.0, udp_packet("10.0.0.5", "192.0.2.53", 40000, 53, dns_query_bytes("a.b")))]
    observations, _ = run(capture(tmp_path, idle + later), tcp_idle_timeout=60.0)
    kinds = [type(o).__name__ for o in observations]
    # The idle TCP flow's Connection comes before the DNS query seen long after.
    assert kinds[:2] == ["Connection", "DNSMessage"]


def test_flow_table_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    largest = 0
    original = flows_module.FlowTable.create

    def create(self, packet, ts):  # type: ignore[no-untyped-def]
        nonlocal largest
        largest = max(largest, len(self.flows))
        return original(self, packet, ts)

    monkeypatch.setattr(flows_module.FlowTable, "create", create)
    packets = []
    for index in range(2000):
        client = (f"10.1.{index // 250}.{index % 250 + 1}", 40000 + index % 1000)
        packets.append(
            (1.0 + index * 0.001, tcp_packet(client[0], SERVER[0], client[1], 443, 1, "S"))
        )
    observations, stats = run(capture(tmp_path, packets), max_flows=100)
    assert largest <= 100
    assert len(of_type(observations, Connection)) == 2000 == stats.flows
    assert stats.skipped["flow-table-full"] > 0


def test_fast_path_and_slow_path_count_the_same(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    packets = tcp_session(
        CLIENT,
        SERVER,
        [hello],
        [server_flight, *[b"\x17\x03\x03" + b"z" * 600] * 50],
        with_fin=True,
    )
    ethernet = write_pcap(tmp_path / "eth.pcap", [(ts, ether(raw)) for ts, raw in packets])
    raw_ip = write_pcap(tmp_path / "raw.pcap", packets, linktype=101)
    vlan = write_pcap(
        tmp_path / "vlan.pcap", [(ts, ether(raw, tags=[0x8100])) for ts, raw in packets]
    )
    v6_packets = tcp_session(
        ("2001:db8::5", 50123),
        ("2001:db8::10", 443),
        [hello],
        [server_flight, *[b"\x17\x03\x03" + b"z" * 600] * 50],
    )
    v6_ethernet = write_pcap(
        tmp_path / "eth6.pcap", [(ts, ether(raw, 0x86DD)) for ts, raw in v6_packets]
    )
    v6_raw = write_pcap(tmp_path / "raw6.pcap", v6_packets, linktype=101)
    (v6_fast,) = of_type(run(v6_ethernet)[0], Connection)
    (v6_slow,) = of_type(run(v6_raw)[0], Connection)
    assert (v6_fast.packets_in, v6_fast.bytes_in, v6_fast.packets_out, v6_fast.bytes_out) == (
        v6_slow.packets_in,
        v6_slow.bytes_in,
        v6_slow.packets_out,
        v6_slow.bytes_out,
    )
    results = []
    for path in (ethernet, raw_ip, vlan):
        (connection,) = of_type(run(path)[0], Connection)
        results.append(
            (
                connection.packets_in,
                connection.bytes_in,
                connection.packets_out,
                connection.bytes_out,
                connection.last_seen,
                connection.server_name,
            )
        )
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    ("tags", "v6", "pcapng"),
    [((), False, False), ((0x8100,), False, False), ((), True, False), ((0x8100,), False, True)],
    ids=["ethernet", "vlan", "ipv6", "pcapng-vlan"],
)
def test_bulk_packets_take_the_fast_path(
    tmp_path: Path,
    tls12_flights,
    tags: tuple[int, ...],
    v6: bool,
    pcapng: bool,
    monkeypatch: pytest.MonkeyPatch,
):
    from auditor.capture import engine as engine_module

    slow_calls = 0
    original = engine_module._Engine.packet

    def counted(self, *args):  # type: ignore[no-untyped-def]
        nonlocal slow_calls
        slow_calls += 1
        return original(self, *args)

    monkeypatch.setattr(engine_module._Engine, "packet", counted)
    hello, server_flight = tls12_flights
    data = [b"\x17\x03\x03\x02\x00" + b"z" * 512] * 200
    client, server = (("2001:db8::5", 50123), ("2001:db8::10", 443)) if v6 else (CLIENT, SERVER)
    packets = tcp_session(client, server, [hello], [server_flight, *data])
    ethertype = 0x86DD if v6 else 0x0800
    frames = [(ts, ether(raw, ethertype, tags=tags)) for ts, raw in packets]
    if pcapng:
        path = tmp_path / "bulk.pcapng"
        path.write_bytes(
            pcapng_section()
            + pcapng_interface(1)
            + b"".join(pcapng_packet(0, round(ts * 1e6), frame) for ts, frame in frames)
        )
    else:
        path = write_pcap(tmp_path / "bulk.pcap", frames)
    observations, stats = run(path)
    assert of_type(observations, TLSHandshake)
    assert stats.packets == len(packets)
    assert slow_calls <= 10  # handshake and FINs; the 200 data packets are only counted


def test_snap_length_cut_handshake_does_not_stall(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    data = [b"\x17\x03\x03\x05\xa0" + b"z" * 1440] * 30
    packets = tcp_session(CLIENT, SERVER, [hello], [server_flight, *data])
    observations, stats = run(capture(tmp_path, packets, snaplen=200))
    (connection,) = of_type(observations, Connection)
    assert connection.packets_in == 1 + 1 + 30 + 1
    assert connection.bytes_in == 33 * 20 + len(server_flight) + 30 * 1445
    assert stats.packets == len(packets)


def test_garbage_frames_never_raise(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    rng = random.Random(11)
    packets = tcp_session(CLIENT, SERVER, split(hello, 40), [server_flight])
    frames = []
    for index in range(400):
        ts, raw = packets[index % len(packets)]
        frame = bytearray(ether(raw))
        for _ in range(rng.randint(0, 8)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frames.append((ts + index, bytes(frame[: rng.randint(10, len(frame))])))
    path = write_pcap(tmp_path / "garbage.pcap", frames)
    _, stats = run(path)
    assert stats.packets == 400
    assert stats.skipped["internal-error"] == 0


def test_a_parser_bug_is_counted_and_the_flow_still_reported(
    tmp_path: Path, tls12_flights, monkeypatch: pytest.MonkeyPatch
):
    from auditor.capture import engine as engine_module

    def broken(data: bytes):  # type: ignore[no-untyped-def]
        raise RuntimeError("parser bug")

    monkeypatch.setattr(engine_module.tls_parser, "parse_client_stream", broken)
    hello, server_flight = tls12_flights
    packets = tcp_session(CLIENT, SERVER, split(hello, 30, 60), [server_flight])
    observations, stats = run(capture(tmp_path, packets))
    assert stats.skipped["malformed-tls"] == 1 and stats.skipped["internal-error"] == 1
    (connection,) = of_type(observations, Connection)
    assert connection.tls is not None and connection.tls.client is None
    assert connection.tls.certificates  # the server side was still read


def test_gzip_capture_and_truncated_tail(tmp_path: Path, tls12_flights):
    hello, server_flight = tls12_flights
    plain = capture(tmp_path, tcp_session(CLIENT, SERVER, [hello], [server_flight]))
    packed = tmp_path / "c.pcap.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    observations, _ = run(packed)
    assert [h.server_name for h in of_type(observations, TLSHandshake)] == ["api.example.com"]
    assert all(o.origin == "pcap:c.pcap.gz" for o in observations)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(plain.read_bytes()[:-30])
    observations, stats = run(cut)
    assert stats.skipped["truncated-file"] == 1 and of_type(observations, Connection)


def test_unreadable_file_raises_before_iteration(tmp_path: Path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty file"):
        read_observations(path, CaptureStats())


def test_quic_initial_from_the_corpus(ja4_corpus: Path):
    observations, _ = run(ja4_corpus / "pcap" / "quic-tls-handshake.pcapng")
    (handshake,) = of_type(observations, TLSHandshake)
    assert handshake.client is not None and handshake.client.over_quic
    assert handshake.flow.transport == "udp"
    assert of_type(observations, Connection)[0].app_protocol == "quic"


def test_ja4_corpus_never_raises_and_finds_the_snis(ja4_corpus: Path):
    for path in sorted((ja4_corpus / "pcap").iterdir()):
        observations, stats = run(path)
        assert stats.packets > 0, path.name
        assert stats.skipped["internal-error"] == 0, path.name
        expected_file = ja4_corpus / "expected" / f"{path.name}.json"
        if not expected_file.exists():
            continue
        expected = {s["domain"] for s in json.loads(expected_file.read_text()) if s.get("domain")}
        found = {h.server_name for h in of_type(observations, TLSHandshake)}
        assert expected <= found, f"{path.name}: missing {expected - found}"
        for connection in of_type(observations, Connection):
            assert connection.last_seen >= connection.first_seen


def test_connect_target_names_a_tunnelled_handshake_without_sni(ja4_corpus: Path):
    observations, _ = run(ja4_corpus / "pcap" / "https-connect.pcap")
    (request,) = of_type(observations, HTTPRequest)
    assert request.method == "CONNECT"
    (handshake,) = of_type(observations, TLSHandshake)
    assert handshake.client is not None and handshake.client.server_name is None
    assert handshake.server_name == request.path.rsplit(":", 1)[0].lower()
