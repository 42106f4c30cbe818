"""Flow objects are freed by reference counting once removed (``auditor.capture.flows``).

A flow and its two directions point at each other; ``FlowTable.remove`` detaches them so a
removed flow is not left as a reference cycle for the garbage collector. Per-flow lists are
created on first use. Checked with the collector switched off, so only reference counting
can free anything.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator

import pytest
from capture_helpers import tcp_packet, udp_packet

from auditor.capture.flows import Flow, FlowTable
from auditor.capture.packets import Packet, decode

MARKER_PORT = 54321  # client port no other test's flows use
LINKTYPE_RAW = 101  # the helpers build raw IP packets


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def packet(frame: bytes) -> Packet:
    decoded = decode(LINKTYPE_RAW, frame, Counter())
    assert decoded is not None
    return decoded


def marked_flows_alive() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Flow and o.tuple.src_port == MARKER_PORT)


def test_removed_flows_are_freed_without_the_collector(collector_off: None) -> None:
    table = FlowTable()
    tcp = table.create(packet(tcp_packet("10.9.0.1", "10.9.0.2", MARKER_PORT, 443, 1, "S")), 1.0)
    udp = table.create(packet(udp_packet("10.9.0.1", "10.9.0.2", MARKER_PORT, 53, b"q")), 1.0)
    flow = tcp.flow
    assert marked_flows_alive() == 2
    table.remove(flow)
    table.remove(udp.flow)
    assert flow.tuple.dst_port == 443 and flow.id not in table.flows  # still readable
    del tcp, udp, flow
    assert marked_flows_alive() == 0


def test_flow_lists_are_made_on_first_use() -> None:
    table = FlowTable()
    direction = table.create(packet(udp_packet("10.9.0.1", "10.9.0.2", 5353, 53, b"q")), 1.0)
    flow = direction.flow
    assert flow.http is None and flow.dns is None and direction.segment_times is None
    for index in range(5):
        flow.add_dns(index, limit=3)
    assert flow.dns == [0, 1, 2]  # bounded like before
    assert direction.time_at(0) == direction.last_seen  # no segments: falls back
