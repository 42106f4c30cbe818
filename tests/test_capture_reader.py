"""Capture file reading: pcap/pcapng variants, gzip, and files that are not (whole) captures."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from capture_helpers import (
    ether,
    pcapng_block,
    pcapng_interface,
    pcapng_packet,
    pcapng_section,
    tcp_packet,
    write_pcap,
)

from auditor.capture import CaptureError
from auditor.capture.reader import open_capture

FRAME_A = ether(tcp_packet("10.0.0.1", "10.0.0.2", 40000, 443, 1, "S"))
FRAME_B = ether(tcp_packet("10.0.0.2", "10.0.0.1", 443, 40000, 7, "SA", ack=2))


def read_all(path: Path) -> tuple[list[tuple[float, int, bytes]], Counter[str]]:
    skipped: Counter[str] = Counter()
    return list(open_capture(path, skipped).records()), skipped


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, big_endian: bool, nanoseconds: bool):
    path = write_pcap(
        tmp_path / "c.pcap",
        [(1_700_000_000.25, FRAME_A), (1_700_000_001.5, FRAME_B)],
        big_endian=big_endian,
        nanoseconds=nanoseconds,
    )
    records, skipped = read_all(path)
    assert [(round(ts, 6), lt, fr) for ts, lt, fr in records] == [
        (1_700_000_000.25, 1, FRAME_A),
        (1_700_000_001.5, 1, FRAME_B),
    ]
    assert not skipped


def test_nanosecond_timestamps_keep_sub_microsecond_digits(tmp_path: Path):
    path = write_pcap(tmp_path / "ns.pcap", [(1_700_000_000.123456789, FRAME_A)], nanoseconds=True)
    ((ts, _, _),) = read_all(path)[0]
    assert abs(ts - 1_700_000_000.123456789) < 1e-6
    assert round((ts % 1) * 1e9) % 1000 != 0  # not rounded to microseconds


def test_pcap_records_spanning_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import auditor.capture.reader as reader

    monkeypatch.setattr(reader, "READ_CHUNK", 50)  # every record straddles a chunk boundary
    frames = [(1_700_000_000.0 + i, FRAME_A if i % 2 else FRAME_B) for i in range(20)]
    records, skipped = read_all(write_pcap(tmp_path / "c.pcap", frames))
    assert [fr for _, _, fr in records] == [fr for _, fr in frames]
    assert not skipped


def test_gzip_compressed_pcap(tmp_path: Path):
    plain = write_pcap(tmp_path / "c.pcap", [(1.0, FRAME_A), (2.0, FRAME_B)])
    packed = tmp_path / "c.pcap.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    records, skipped = read_all(packed)
    assert [fr for _, _, fr in records] == [FRAME_A, FRAME_B]
    assert not skipped


def test_gzip_with_several_members(tmp_path: Path):
    first = write_pcap(tmp_path / "c.pcap", [(1.0, FRAME_A), (2.0, FRAME_B)]).read_bytes()
    packed = tmp_path / "c.pcap.gz"
    packed.write_bytes(gzip.compress(first[:50]) + gzip.compress(first[50:]))
    records, skipped = read_all(packed)
    assert [fr for _, _, fr in records] == [FRAME_A, FRAME_B]
    assert not skipped


def test_truncated_file_keeps_the_records_before(tmp_path: Path):
    path = write_pcap(tmp_path / "c.pcap", [(1.0, FRAME_A), (2.0, FRAME_B)])
    path.write_bytes(path.read_bytes()[:-10])  # cut inside the second record
    records, skipped = read_all(path)
    assert [fr for _, _, fr in records] == [FRAME_A]
    assert skipped["truncated-file"] == 1


def test_truncated_gzip_keeps_the_records_before(tmp_path: Path):
    plain = write_pcap(tmp_path / "c.pcap", [(float(i), FRAME_A) for i in range(200)])
    packed = gzip.compress(plain.read_bytes())
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    records, skipped = read_all(path)
    assert 0 < len(records) < 200
    assert all(fr == FRAME_A for _, _, fr in records)
    assert skipped["truncated-file"] + skipped["corrupt-gzip"] == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file"),
        (b"hello, this is a text file\n" * 3, "text"),
        (gzip.compress(b"just some text inside gzip\n"), "gzip"),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07" * 4, "unknown data"),
        (struct.pack("<IHH", 0xA1B2C3D4, 2, 4), "truncated pcap header"),
    ],
)
def test_unreadable_files_raise_one_line_capture_error(
    tmp_path: Path, content: bytes, expected: str
):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as caught:
        open_capture(path, Counter())
    message = str(caught.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path):
    with pytest.raises(CaptureError, match="file not found"):
        open_capture(tmp_path / "nope.pcap", Counter())


def test_pcapng_interfaces_link_types_and_resolutions(tmp_path: Path):
    raw_ip = tcp_packet("10.0.0.9", "10.0.0.8", 1, 2, 1, "S")
    data = (
        pcapng_section()
        + pcapng_interface(1)  # Ethernet, microseconds (default)
        + pcapng_interface(101, tsresol=9)  # raw IP, nanoseconds
        + pcapng_interface(1, tsresol=0x80 | 10, tsoffset=1000)  # 2^-10 s, +1000 s
        + pcapng_packet(0, 1_700_000_000_500_000, FRAME_A)
        + pcapng_packet(1, 1_700_000_001_250_000_000, raw_ip)
        + pcapng_packet(2, 5 * 1024 + 512, FRAME_B)
        + pcapng_block(4, b"\x00" * 8)  # name resolution block: not a packet
        + pcapng_block(3, struct.pack("<I", len(FRAME_B)) + FRAME_B)  # simple packet block
    )
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)
    records, skipped = read_all(path)
    assert [(lt, fr) for _, lt, fr in records] == [
        (1, FRAME_A),
        (101, raw_ip),
        (1, FRAME_B),
        (1, FRAME_B),
    ]
    assert records[0][0] == pytest.approx(1_700_000_000.5)
    assert records[1][0] == pytest.approx(1_700_000_001.25)
    assert records[2][0] == pytest.approx(1005.5)
    assert not skipped


def test_pcapng_second_section_in_big_endian_resets_interfaces(tmp_path: Path):
    data = (
        pcapng_section("<")
        + pcapng_interface(1)
        + pcapng_packet(0, 1_000_000, FRAME_A)
        + pcapng_section(">")
        + pcapng_interface(101, order=">")
        + pcapng_packet(0, 2_000_000, b"\x45" + FRAME_B[15:], ">")
    )
    path = tmp_path / "two.pcapng"
    path.write_bytes(data)
    records, _ = read_all(path)
    assert [(lt, round(ts)) for ts, lt, _ in records] == [(1, 1), (101, 2)]


def test_pcapng_packet_for_unknown_interface_is_counted(tmp_path: Path):
    path = tmp_path / "bad.pcapng"
    path.write_bytes(pcapng_section() + pcapng_packet(3, 0, FRAME_A))
    records, skipped = read_all(path)
    assert records == []
    assert skipped["malformed-block"] == 1


def test_pcapng_cut_mid_block(tmp_path: Path):
    path = tmp_path / "cut.pcapng"
    data = pcapng_section() + pcapng_interface(1) + pcapng_packet(0, 0, FRAME_A)
    path.write_bytes(data + pcapng_packet(0, 0, FRAME_B)[:20])
    records, skipped = read_all(path)
    assert len(records) == 1
    assert skipped["truncated-file"] == 1


@pytest.mark.skipif(shutil.which("mergecap") is None, reason="mergecap (wireshark) not installed")
def test_real_pcapng_with_several_link_types_from_mergecap(tmp_path: Path):
    """mergecap writes one interface per input link type: a pcapng made by a real tool."""
    ethernet = write_pcap(tmp_path / "eth.pcap", [(1.0, FRAME_A)], linktype=1)
    null = write_pcap(
        tmp_path / "null.pcap", [(2.0, struct.pack("<I", 2) + FRAME_B[14:])], linktype=0
    )
    merged = tmp_path / "merged.pcapng"
    subprocess.run(
        ["mergecap", "-F", "pcapng", "-w", str(merged), str(ethernet), str(null)],
        check=True,
        capture_output=True,
    )
    records, skipped = read_all(merged)
    assert [(round(ts), lt) for ts, lt, _ in records] == [(1, 1), (2, 0)]
    assert records[1][2] == struct.pack("<I", 2) + FRAME_B[14:]
    assert not skipped


def test_progress_reports_bytes_read(tmp_path: Path):
    path = write_pcap(tmp_path / "c.pcap", [(1.0, FRAME_A)] * 10)
    seen: list[int] = []
    list(open_capture(path, Counter(), seen.append).records())
    assert seen and seen[-1] == path.stat().st_size
