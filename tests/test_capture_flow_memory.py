"""Per-flow memory in ``auditor.capture.flows``: lists are created on first use."""

from __future__ import annotations

from collections import Counter

from capture_helpers import udp_packet

from auditor.capture.flows import FlowTable
from auditor.capture.packets import Packet, decode

LINKTYPE_RAW = 101  # the helpers build raw IP packets


def packet(frame: bytes) -> Packet:
    decoded = decode(LINKTYPE_RAW, frame, Counter())
    assert decoded is not None
    return decoded


def test_flow_lists_are_made_on_first_use() -> None:
    table = FlowTable()
    direction = table.create(packet(udp_packet("10.9.0.1", "10.9.0.2", 5353, 53, b"q")), 1.0)
    flow = direction.flow
    assert flow.http is None and flow.dns is None and direction.segment_times is None
    for index in range(5):
        flow.add_dns(index, limit=3)
    assert flow.dns == [0, 1, 2]  # bounded like before
    assert direction.time_at(0) == direction.last_seen  # no segments: falls back
