"""The engine's C fast path (``auditor/capture/_fastpath.c``) gives exactly what the Python
loop (``engine._pcap_loop``) gives: every observation (all fields, same order) and the same
stats, on the benchmark generator's traffic, the sample and corpus captures, and hand-made edge
cases (VLAN, IPv6, UDP, tuple reuse, resets, snap-length cuts, IP options, fragments, non-IP
frames, both byte orders, nanosecond timestamps), with small read chunks (records cut at every
buffer end), idle sweeps and a small flow table.
"""

from __future__ import annotations

import gzip
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from auditor.capture import CaptureStats, engine
from auditor.capture.engine import read_observations
from auditor.capture.flows import FlowTable
from auditor.capture.packets import Packet, decode
from auditor.capture.reader import Capture, open_capture
from auditor.model import Connection, Observation
from tests.capture_helpers import (
    dns_query_bytes,
    dns_response_bytes,
    ether,
    tcp_packet,
    tcp_session,
    udp_packet,
    write_pcap,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import make_capture  # noqa: E402  (bench/ is a directory of scripts, not a package)

CORPUS = Path("/work/shared/corpus/ja4/pcap")

pytestmark = pytest.mark.skipif(
    engine._fastpath is None, reason="C fast path not built (pip install -e . builds it)"
)


def _both_paths(
    path: Path, **options: float
) -> tuple[tuple[list[Observation], CaptureStats], tuple[list[Observation], CaptureStats]]:
    results = []
    for native in (True, False):
        stats = CaptureStats()
        observations = list(read_observations(path, stats, native=native, **options))  # type: ignore[arg-type]
        results.append((observations, stats))
    return results[0], results[1]


def _assert_same(path: Path, **options: float) -> list[Observation]:
    (fast, fast_stats), (reference, reference_stats) = _both_paths(path, **options)
    assert len(fast) == len(reference)
    for index, (got, want) in enumerate(zip(fast, reference, strict=True)):
        assert got == want, f"{path.name}: observation {index} differs"
    assert fast_stats == reference_stats
    return reference


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fastpath") / "bench-50000.pcap"
    make_capture.write_capture(path, 50_000, 7, ROOT / "signatures")
    return path


def test_benchmark_traffic_same_as_per_packet_path(generated: Path) -> None:
    observations = _assert_same(generated)
    kinds = {type(o).__name__ for o in observations}
    assert {"Connection", "TLSHandshake", "DNSMessage", "HTTPRequest"} <= kinds


@pytest.fixture(params=[4096, None], ids=["small-chunks", "default-chunks"])
def read_chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small reads leave an incomplete record at the end of almost every buffer."""
    if request.param is not None:
        refill = Capture.refill
        monkeypatch.setattr(
            Capture, "refill", lambda self, buf, pos, chunk_size=0: refill(self, buf, pos, 4096)
        )


def test_chunks_sweeps_and_evictions_same(generated: Path, read_chunk: None) -> None:
    # Idle sweeps (short timeouts) read every flow; a 40-flow table evicts all the time.
    for options in (
        {"tcp_idle_timeout": 1.5, "udp_idle_timeout": 0.5},
        {"max_flows": 40},
    ):
        assert _assert_same(generated, **options)


def test_gzip_input_same(generated: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "bench.pcap.gz"
    compressed.write_bytes(gzip.compress(generated.read_bytes()[: 3 << 20], compresslevel=1))
    _assert_same(compressed)


def _corpus_files() -> list[Path]:
    files = [ROOT / "samples" / "egress-demo.pcap"]
    if CORPUS.is_dir():
        files += sorted(CORPUS.glob("*.pcap"))
    return files


@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.name)
def test_samples_and_corpus_same(path: Path) -> None:
    _assert_same(path)


def _edge_case_frames(rng: random.Random) -> list[tuple[float, bytes]]:
    """Interleaved flows of every shape the fast path must tell apart."""
    flows: list[list[tuple[float, bytes]]] = []
    payload = b"\x17\x03\x03\x00\x20" + bytes(32)
    for number in range(12):
        client = (f"10.1.0.{number + 1}", 40000 + number)
        server = ("192.0.2.10", 443)
        tags = (0x8100,) if number % 3 == 0 else ()
        session = tcp_session(
            client,
            server,
            [b"\x16\x03\x01\x00\x05hello"] + [payload] * 30,
            [payload] * 40,
            start=1_700_000_000.0 + number * 0.05,
            with_fin=number % 4 != 1,
        )
        flows.append([(ts, ether(raw, tags=tags)) for ts, raw in session])
    # The same 5-tuple used again after its FIN (a new SYN reuses the tombstone's keys).
    again = tcp_session(
        ("10.1.0.5", 40004),
        ("192.0.2.10", 443),
        [payload] * 10,
        [payload] * 10,
        start=1_700_000_003.0,
    )
    flows.append([(ts, ether(raw)) for ts, raw in again])
    # IPv6, cleartext HTTP, and a reset in the middle of bulk data.
    v6 = tcp_session(
        ("2001:db8::1", 50000),
        ("2001:db8::2", 80),
        [b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"] + [b"y" * 100] * 20,
        [b"HTTP/1.1 200 OK\r\n\r\n"] + [b"z" * 200] * 20,
        start=1_700_000_000.5,
    )
    flows.append([(ts, ether(raw, ethertype=0x86DD)) for ts, raw in v6])
    reset = [
        (
            1_700_000_001.0 + i * 0.01,
            ether(tcp_packet("10.2.0.1", "192.0.2.20", 41000, 443, 1 + i * 32, "PA", payload)),
        )
        for i in range(20)
    ]
    reset.append((1_700_000_001.3, ether(tcp_packet("192.0.2.20", "10.2.0.1", 443, 41000, 7, "R"))))
    reset += [
        (
            1_700_000_001.4 + i * 0.01,
            ether(tcp_packet("10.2.0.1", "192.0.2.20", 41000, 443, 700 + i * 32, "PA", payload)),
        )
        for i in range(10)
    ]
    flows.append(reset)
    # UDP: DNS, a non-DNS stream (stops collecting at once), and IPv6 UDP.
    dns = []
    for i in range(15):
        ts = 1_700_000_000.2 + i * 0.1
        dns.append(
            (
                ts,
                ether(
                    udp_packet(
                        "10.1.0.1",
                        "10.0.0.53",
                        5000 + i,
                        53,
                        dns_query_bytes(f"n{i}.example.com", i),
                    )
                ),
            )
        )
        dns.append(
            (
                ts + 0.01,
                ether(
                    udp_packet(
                        "10.0.0.53",
                        "10.1.0.1",
                        53,
                        5000 + i,
                        dns_response_bytes(f"n{i}.example.com", "192.0.2.10", i),
                    )
                ),
            )
        )
    flows.append(dns)
    flows.append(
        [
            (
                1_700_000_000.3 + i * 0.02,
                ether(udp_packet("10.3.0.1", "198.51.100.1", 60000, 9999, b"media" * 20)),
            )
            for i in range(40)
        ]
    )
    flows.append(
        [
            (
                1_700_000_000.3 + i * 0.02,
                ether(
                    udp_packet("2001:db8::5", "2001:db8::6", 60000, 9999, b"media" * 20),
                    ethertype=0x86DD,
                ),
            )
            for i in range(30)
        ]
    )
    # Frames the fast path must not take: IP options, a non-first fragment, ARP, runts.
    with_options = bytearray(tcp_packet("10.1.0.2", "192.0.2.10", 40001, 443, 99999, "A", payload))
    with_options[0] = 0x46
    odd = [
        (
            1_700_000_000.6,
            ether(bytes(with_options[:20]) + b"\x01\x01\x01\x01" + bytes(with_options[20:])),
        ),
        (
            1_700_000_000.7,
            ether(b"\x45\x00\x00\x30" + b"\x00\x01\x00\x10" + b"\x40\x06\x00\x00" + bytes(36)),
        ),
        (1_700_000_000.8, ether(bytes(28), ethertype=0x0806)),
        (1_700_000_000.9, b"\x00" * 20),
    ]
    flows.append(odd)
    frames = sorted((frame for flow in flows for frame in flow), key=lambda f: f[0])
    # Some reordering, as on a real mirror port.
    for _ in range(40):
        i = rng.randrange(len(frames) - 1)
        frames[i], frames[i + 1] = frames[i + 1], frames[i]
    return frames


@pytest.mark.parametrize(
    ("big_endian", "nanoseconds", "snaplen"),
    [(False, False, 0), (True, True, 0), (False, False, 60)],
)
def test_edge_cases_same(
    tmp_path: Path, big_endian: bool, nanoseconds: bool, snaplen: int, read_chunk: None
) -> None:
    frames = _edge_case_frames(random.Random(3))
    path = write_pcap(
        tmp_path / "edge.pcap",
        frames,
        big_endian=big_endian,
        nanoseconds=nanoseconds,
        snaplen=snaplen,
    )
    for options in ({}, {"max_flows": 4, "tcp_idle_timeout": 0.3, "udp_idle_timeout": 0.2}):
        observations = _assert_same(path, **options)
        assert any(type(o).__name__ == "Connection" for o in observations)


def _fields(packet: Packet) -> dict[str, object]:
    return {name: getattr(packet, name) for name in Packet.__slots__}


def _odd_frames() -> list[tuple[bytes, bool]]:
    """(frame, whether the C decoder reads it): shapes it must read exactly as Python does, and
    shapes it must leave to Python."""
    payload = b"\x16\x03\x01\x00\x05hello"
    syn = tcp_packet("10.1.0.1", "192.0.2.10", 40000, 443, 7, "S")
    data = tcp_packet("10.1.0.1", "192.0.2.10", 40000, 443, 0xFFFFFFF0, "PA", payload)
    dns = udp_packet("10.1.0.1", "10.0.0.53", 5000, 53, dns_query_bytes("a.example.com"))
    v6 = tcp_packet("2001:db8::1", "2001:db8::2", 50000, 443, 1, "PA", payload)
    v6_udp = udp_packet("2001:db8::1", "2001:db8::2", 50000, 53, b"q" * 20)

    def patched(raw: bytes, offset: int, value: bytes) -> bytes:
        return raw[:offset] + value + raw[offset + len(value) :]

    with_options = bytes([0x46]) + data[1:20] + b"\x01\x01\x01\x01" + data[20:]
    vxlan = udp_packet("10.1.0.1", "10.1.0.2", 5000, 4789, b"\x08" + bytes(7) + bytes(60))
    return [
        (ether(syn), True),
        (ether(data), True),
        (ether(data + b"\x00" * 6), True),  # Ethernet padding past the IP total length
        (ether(data)[:60], True),  # cut by the snap length
        (ether(data)[:40], False),  # cut inside the TCP header
        (ether(dns), True),
        (ether(dns, tags=(0x8100,)), True),
        (ether(dns, tags=(0x88A8, 0x8100)), False),  # QinQ
        (ether(v6, ethertype=0x86DD), True),
        (ether(v6, ethertype=0x86DD, tags=(0x8100,)), True),
        (ether(v6_udp, ethertype=0x86DD), True),
        (ether(patched(v6, 4, b"\x00\x00"), ethertype=0x86DD), True),  # payload length 0
        (ether(patched(v6, 6, b"\x00"), ethertype=0x86DD), False),  # a hop-by-hop header
        (ether(with_options), False),
        (ether(patched(data, 2, b"\x00\x00")), False),  # total length 0 (offload)
        (ether(patched(data, 2, b"\x00\x10")), False),  # total length below the header's
        (ether(patched(data, 6, b"\x20\x00")), True),  # a first fragment
        (ether(patched(data, 6, b"\x00\x10")), False),  # a later fragment
        (ether(patched(data, 32, b"\x40")), False),  # TCP data offset 16
        (ether(patched(dns, 24, b"\x00\x04")), True),  # UDP length below its header's
        (ether(patched(dns, 24, b"\x00\x0c")), True),  # UDP length short of the datagram
        (ether(vxlan), False),
        (ether(udp_packet("10.1.0.1", "10.1.0.2", 5000, 6081, bytes(68))), False),  # Geneve
        (ether(patched(data, 9, b"\x2f")), False),  # GRE
        (ether(bytes(28), ethertype=0x0806), False),
        (ether(b""), False),
        (b"\x00" * 10, False),
    ]


def _bench_frames(path: Path) -> list[bytes]:
    stats = CaptureStats()
    capture = open_capture(path, stats.skipped, None)
    try:
        return [frame for _ts, _linktype, frame in capture.records()][:20_000]
    finally:
        capture.close()


def test_c_decoder_reads_frames_as_packets_decode(generated: Path) -> None:
    """Whatever the C walk hands over decoded is what packets.decode makes of the frame."""
    odd = _odd_frames()
    bench = _bench_frames(generated)
    for index, (frame, c_reads) in enumerate(odd):
        packet = engine._fastpath.decode(frame)
        assert (packet is not None) == c_reads, f"odd frame {index}"
        if packet is not None:
            reference = decode(1, frame, Counter())
            assert reference is not None and _fields(packet) == _fields(reference), index
    for index, frame in enumerate(bench):
        packet = engine._fastpath.decode(frame)
        assert packet is not None and type(packet) is Packet, f"bench frame {index}"
        assert _fields(packet) == _fields(decode(1, frame, Counter())), f"bench frame {index}"


def test_syn_ack_and_first_fin_done_in_c_unless_the_sweep_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """walk does itself what the per-packet path does with a SYN+ACK or a FIN that does not end
    its flow, but not once the idle sweep is due (the per-packet path sweeps first: here it
    ends the idle flows, and their late SYN+ACK and FIN meet tombstones)."""
    start = 1_700_000_000.0
    hello = b"\x16\x03\x01\x00\x05hello"
    early = tcp_session(("10.1.0.1", 40000), ("192.0.2.10", 443), [hello], [hello], start=start)
    idle = tcp_session(
        ("10.1.0.2", 40001), ("192.0.2.10", 443), [hello], [hello], start=start + 0.1
    )
    late_fin = [(start + 10.5, raw) for _ts, raw in idle[-3:-1]]  # both FINs, 10 s later
    frames = [
        *early,
        *idle[:-3],
        (start + 0.5, tcp_packet("10.1.0.3", "192.0.2.10", 40002, 443, 1, "S")),
        (start + 10.0, tcp_packet("192.0.2.10", "10.1.0.3", 443, 40002, 9, "SA", ack=2)),
        *late_fin,
    ]
    path = write_pcap(tmp_path / "late.pcap", [(ts, ether(raw)) for ts, raw in frames])
    per_packet_path_calls = {True: 0, False: 0}
    decoded = engine._Engine.decoded
    native = True

    def counting(self: engine._Engine, ts: float, packet: Packet) -> None:
        per_packet_path_calls[native] += 1
        decoded(self, ts, packet)

    monkeypatch.setattr(engine._Engine, "decoded", counting)
    for native in (True, False):
        list(read_observations(path, CaptureStats(), native=native, tcp_idle_timeout=3.0))
    # Before the sweep C did two SYN+ACKs and the early flow's first FIN; after it, nothing.
    assert per_packet_path_calls[False] - per_packet_path_calls[True] == 3
    observations = _assert_same(path, tcp_idle_timeout=3.0)
    ended = [(o.flow.src_port, o.last_seen) for o in observations if isinstance(o, Connection)]
    # The sweep at +10 s ended the idle flows before their late packets (which start new ones).
    assert [port for port, last_seen in ended if last_seen < start + 1] == [40000, 40001, 40002]


def test_walk_counts_in_place_only_values_nothing_else_holds(tmp_path: Path) -> None:
    """walk writes a counter's new value into its int or float object only when the direction
    alone holds it: a value also held elsewhere is replaced, never changed. The keys it looks
    up become the table's own key objects (what the C decoder then hands out)."""
    start = 1_700_000_000.0
    client, server = ("10.77.0.1", 40077), ("192.0.2.77", 443)  # only in this test
    frames = [
        (start + i, tcp_packet(src[0], dst[0], src[1], dst[1], 1000 + i, "A", b"x" * 100))
        for i, (src, dst) in enumerate([(client, server), (server, client)] * 3)
    ]
    path = write_pcap(tmp_path / "bulk.pcap", [(ts, ether(raw)) for ts, raw in frames])
    first = decode(1, ether(frames[0][1]), Counter())  # decoded in Python: a key of its own
    assert first is not None
    table = FlowTable()
    outbound = table.create(first, start - 1)
    inbound = outbound.flow.server
    shared_packets, shared_last_seen = 10**6, start + 0.25
    outbound.packets, outbound.last_seen = shared_packets, shared_last_seen
    inbound.packets, inbound.bytes = int("7000"), int("9000")  # held by the slots alone
    for direction in (outbound, inbound):
        direction.collecting = False
    buf = path.read_bytes()[24:]
    pos, slow, _ts, walked, *_rest = engine._fastpath.walk(
        buf, 0, True, True, 1e-6, table.tcp, table.udp, 0.0, float("inf")
    )
    assert (pos, slow, walked) == (len(buf), -1, 6)
    assert shared_packets == 10**6 and shared_last_seen == start + 0.25
    assert (outbound.packets, outbound.bytes, outbound.last_seen) == (10**6 + 3, 360, start + 4)
    assert (inbound.packets, inbound.bytes, inbound.last_seen) == (7003, 9360, start + 5)
    for (_ts, raw), key in zip(frames, outbound.flow.keys, strict=False):
        packet = engine._fastpath.decode(ether(raw))
        assert packet is not None and packet.key is key
