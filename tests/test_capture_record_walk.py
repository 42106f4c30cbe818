"""The pcap record-offset walk of the bulk path (``auditor.capture.bulk.record_walker``).

The walk exists twice: in C (``auditor/capture/_record_walk.c``, built by ``pip install -e .``)
and in Python (used when the C helper is not built). Both must give the same offsets and end
position on every buffer, including truncated ones and big-endian headers, and the engine
must give the same observations with either.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from auditor.capture import CaptureStats, bulk
from auditor.capture.engine import read_observations

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "egress-demo.pcap"
needs_native = pytest.mark.skipif(
    bulk._native_walk is None, reason="C record walk not built (pip install -e . builds it)"
)


def records(rng: random.Random, order: str, count: int) -> bytes:
    """Pcap records (16-byte header, caplen bytes of frame) of random lengths, back to back."""
    out = bytearray()
    for index in range(count):
        caplen = rng.choice((0, 1, 14, 54, 60, 1514, rng.randrange(3000)))
        out += struct.pack(order + "IIII", index, 0, caplen, caplen)
        out += rng.randbytes(caplen)
    return bytes(out)


def test_python_walk_finds_every_record_and_stops_at_a_truncated_one() -> None:
    buf = records(random.Random(1), "<", 50)
    walk = bulk.record_walker("<", native=False)
    starts, end = walk(buf)
    assert len(starts) == 50 and end == len(buf) and starts[0] == 0
    cut = buf[: starts[30] + 20]  # the 31st record's frame is cut short
    assert walk(cut) == (starts[:30], starts[30])
    assert walk(b"") == ([], 0) and walk(buf[:15]) == ([], 0)


@needs_native
@pytest.mark.parametrize("order", ["<", ">"])
def test_native_walk_gives_what_the_python_walk_gives(order: str) -> None:
    rng = random.Random(7)
    native, python = bulk.record_walker(order), bulk.record_walker(order, native=False)
    buf = records(rng, order, 200)
    for cut in [0, 1, 15, 16, 17, len(buf) - 1, len(buf), *rng.sample(range(len(buf)), 300)]:
        assert native(buf[:cut]) == python(buf[:cut]), cut
    # garbage lengths (e.g. a corrupt header claiming 4 GiB) end the walk the same way
    garbage = rng.randbytes(5000)
    assert native(garbage) == python(garbage)
    assert native(bytearray(buf)) == python(buf)  # any bytes-like buffer


def observations(monkeypatch: pytest.MonkeyPatch, native: bool) -> tuple[list[object], object]:
    if not native:
        monkeypatch.setattr(bulk, "_native_walk", None)
    stats = CaptureStats()
    found = list(read_observations(SAMPLE, stats))
    return found, stats


@needs_native
def test_engine_observations_are_the_same_with_either_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_native, native_stats = observations(monkeypatch, native=True)
    with_python, python_stats = observations(monkeypatch, native=False)
    assert with_native and with_native == with_python
    assert native_stats == python_stats
