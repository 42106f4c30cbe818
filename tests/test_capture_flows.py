"""Flow table and reassembly: orientation, in-order prefix with out-of-order segments buffered,
retransmissions ignored, gaps, the cap, and the bound on the number of flows."""

from __future__ import annotations

import random
from collections import Counter

from capture_helpers import tcp_packet, udp_packet

from auditor.capture.flows import CLOSED_LINGER, Direction, Flow, FlowTable
from auditor.capture.packets import Packet, decode
from auditor.model import FlowTuple


def packet(raw: bytes) -> Packet:
    decoded = decode(101, raw, Counter())
    assert decoded is not None
    return decoded


def direction(cap: int = 100) -> Direction:
    flow = Flow(1, 6, FlowTuple("tcp", "a", 1, "b", 2), (b"x", b"y"), 0.0, False)
    stream = Direction(flow, True, cap)
    stream.start(1000)
    return stream


def test_in_order_segments():
    stream = direction()
    assert stream.add_segment(1000, b"hello ", 1.0)
    assert stream.add_segment(1006, b"world", 2.0)
    assert bytes(stream.data) == b"hello world"
    assert stream.time_at(0) == 1.0 and stream.time_at(7) == 2.0


def test_out_of_order_segments_are_buffered_until_the_gap_fills():
    stream = direction()
    assert not stream.add_segment(1006, b"world", 2.0)
    assert not stream.add_segment(1011, b"!", 3.0)
    assert bytes(stream.data) == b""
    assert stream.add_segment(1000, b"hello ", 4.0)
    assert bytes(stream.data) == b"hello world!"
    assert not stream.pending


def test_retransmissions_and_overlaps():
    stream = direction()
    stream.add_segment(1000, b"abcdef", 1.0)
    assert not stream.add_segment(1000, b"abc", 2.0)  # all old: ignored
    assert stream.add_segment(1003, b"defghi", 3.0)  # overlaps: only "ghi" is new
    assert bytes(stream.data) == b"abcdefghi"


def test_sequence_numbers_wrap_around():
    flow = Flow(1, 6, FlowTuple("tcp", "a", 1, "b", 2), (b"x", b"y"), 0.0, False)
    stream = Direction(flow, True, 100)
    stream.start(0xFFFFFFFE)
    stream.add_segment(0xFFFFFFFE, b"ab", 1.0)
    stream.add_segment(0, b"cd", 2.0)
    assert bytes(stream.data) == b"abcd"


def test_cap_and_gap():
    stream = direction(cap=10)
    stream.add_segment(1000, b"0123456789abc", 1.0)  # the segment passing the cap is kept
    assert stream.full and bytes(stream.data) == b"0123456789abc"
    assert stream.add_segment(1013, b"more", 2.0)
    assert bytes(stream.data) == b"0123456789abc"  # nothing more once full
    far = direction(cap=10)
    assert far.add_segment(1500, b"far ahead", 1.0)  # beyond the window: the hole stays open
    assert far.gap and bytes(far.data) == b""


def test_consume_and_skip_keep_offsets():
    stream = direction()
    stream.add_segment(1000, b"first|second", 1.0)
    stream.consume(6)
    assert bytes(stream.data) == b"second" and stream.buffer_offset == 6
    stream.skip = 3
    stream.add_segment(1012, b"xyzrest", 2.0)
    assert bytes(stream.data) == b"secondrest"
    assert stream.time_at(stream.buffer_offset + 6) == 2.0


def test_orientation_rules():
    table = FlowTable()
    syn = table.create(packet(tcp_packet("10.0.0.1", "10.0.0.2", 5000, 6000, 1, "S")), 1.0)
    assert syn.from_client and syn.flow.tuple.dst_port == 6000
    assert not syn.flow.direction_guessed
    syn_ack = table.create(packet(tcp_packet("10.0.0.3", "10.0.0.4", 6000, 5000, 1, "SA")), 1.0)
    assert not syn_ack.from_client and syn_ack.flow.tuple.src_port == 5000
    # No SYN: the well-known port is the server's, whoever spoke first.
    mid = table.create(packet(tcp_packet("10.0.0.5", "10.0.0.6", 443, 51000, 1, "A")), 1.0)
    assert not mid.from_client and mid.flow.tuple.dst_port == 443
    assert mid.flow.direction_guessed
    # Registered port against an ephemeral one.
    high = table.create(packet(tcp_packet("10.0.0.7", "10.0.0.8", 8443, 60000, 1, "A")), 1.0)
    assert high.flow.tuple.dst_port == 8443
    # No hint at all: the first packet's sender is the client.
    same = table.create(packet(udp_packet("10.0.0.9", "10.0.0.10", 7000, 7001, b"x")), 1.0)
    assert same.from_client and same.flow.tuple.src_port == 7000


def test_both_directions_find_the_flow_and_removal_forgets_them():
    table = FlowTable()
    out = packet(tcp_packet("10.0.0.1", "10.0.0.2", 5000, 443, 1, "S"))
    back = packet(tcp_packet("10.0.0.2", "10.0.0.1", 443, 5000, 1, "SA"))
    created = table.create(out, 1.0)
    assert table.tcp[out.key] is created and table.tcp[back.key] is created.flow.server
    table.remove(created.flow)
    assert not table.tcp and len(table) == 0


def test_sweep_finds_idle_flows_and_drops_old_tombstones():
    table = FlowTable(tcp_idle_timeout=10.0, udp_idle_timeout=5.0)
    tcp = table.create(packet(tcp_packet("10.0.0.1", "10.0.0.2", 5000, 443, 1, "S")), 0.0)
    udp = table.create(packet(udp_packet("10.0.0.1", "10.0.0.2", 5000, 53, b"q")), 0.0)
    closed = table.create(packet(tcp_packet("10.0.0.3", "10.0.0.2", 5001, 443, 1, "S")), 0.0)
    table.close(closed.flow)
    assert list(table.sweep(6.0)) == [udp.flow]
    assert set(table.sweep(11.0)) == {tcp.flow, udp.flow}
    assert closed.flow.id not in table.flows  # tombstone past its linger: gone


def _idle_by_looking_at_every_flow(table: FlowTable, now: float) -> tuple[list[Flow], set[int]]:
    """What the sweep must find: (idle open flows in creation order, tombstones to drop)."""
    idle, dropped = [], set()
    for flow in table.flows.values():
        if flow.closed:
            if now - flow.last_seen >= CLOSED_LINGER:
                dropped.add(flow.id)
            continue
        timeout = table.tcp_idle_timeout if flow.transport == 6 else table.udp_idle_timeout
        if now - flow.last_seen >= timeout:
            idle.append(flow)
    return idle, dropped


def test_sweep_by_timers_finds_what_looking_at_every_flow_finds():
    """Random traffic, ends and sweeps, sometimes with time going back: after each sweep the
    idle flows and the tombstones dropped are exactly those a look at every flow finds."""
    rng = random.Random(5)
    for went_back_rate in (0.0, 0.05):
        table = FlowTable(tcp_idle_timeout=30.0, udp_idle_timeout=7.0)
        now = 0.0
        for step in range(3000):
            now += rng.expovariate(2.0)
            ts = now - rng.uniform(0, 40) if rng.random() < went_back_rate else now
            if ts < now:
                table.time_went_back()
            roll = rng.random()
            if roll < 0.3 or not table.flows:
                ports = ("10.0.0.1", "10.0.0.2", 1024 + step, 443)
                raw = tcp_packet(*ports, 1, "S") if roll < 0.15 else udp_packet(*ports, b"q")
                table.create(packet(raw), ts)
            elif roll < 0.9:
                flow = rng.choice(list(table.flows.values()))
                (flow.client if rng.random() < 0.5 else flow.server).last_seen = ts
            elif roll < 0.95:
                flow = rng.choice(list(table.flows.values()))
                if not flow.closed:
                    table.close(flow)
            else:
                idle, dropped = _idle_by_looking_at_every_flow(table, now)
                assert table.sweep(now) == idle
                assert not dropped & set(table.flows)
                for flow in idle[: len(idle) // 2]:  # the engine ends them all; test both ways
                    table.close(flow)
                    table.remove(flow)


def test_oldest_open_flows_come_first():
    table = FlowTable(max_flows=10)
    made = [
        table.create(packet(tcp_packet("10.0.0.1", "10.0.0.2", 5000 + i, 443, 1, "S")), float(i))
        for i in range(5)
    ]
    made[0].flow.closed = True  # a tombstone is dropped, not returned
    assert table.oldest_open(3) == [d.flow for d in made[1:4]]
    assert made[0].flow.id not in table.flows
