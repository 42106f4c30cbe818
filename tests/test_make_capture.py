"""The benchmark's capture generator: deterministic, as large as asked, real-looking hellos."""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

from auditor.capture.tls import parse_client_stream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import make_capture  # noqa: E402  (bench/ is a directory of scripts, not a package)


def _write(path: Path, packets: int, seed: int) -> int:
    written, _ = make_capture.write_capture(path, packets, seed, ROOT / "signatures")
    return written


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    assert _write(first, 3000, seed=5) >= 3000
    _write(second, 3000, seed=5)
    _write(other, 3000, seed=6)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_records_are_well_formed_pcap(tmp_path: Path) -> None:
    capture = tmp_path / "a.pcap"
    written = _write(capture, 2000, seed=1)
    data = capture.read_bytes()
    magic, _, _, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, linktype) == (0xA1B2C3D4, 1)
    offset, records = 24, 0
    while offset < len(data):
        _, _, caplen, length = struct.unpack_from("<IIII", data, offset)
        assert caplen == length <= snaplen
        offset += 16 + caplen
        records += 1
    assert offset == len(data) and records == written


def test_client_hello_keeps_curls_shape_with_the_new_name() -> None:
    original = parse_client_stream(make_capture.CURL_CLIENT_HELLO)
    rng = random.Random(3)
    first = make_capture.client_hello("api.example.com", rng)
    second = make_capture.client_hello("a-much-longer-name.relay.example.net", rng)
    for record in (first, second):
        hello = parse_client_stream(record)
        assert original is not None and hello is not None
        assert len(record) == len(make_capture.CURL_CLIENT_HELLO)  # padding absorbs the name
        assert hello.cipher_suites == original.cipher_suites
        assert hello.extensions == original.extensions
        assert hello.ja4.split("_")[1:] == original.ja4.split("_")[1:]
    assert parse_client_stream(first).server_name == "api.example.com"  # type: ignore[union-attr]
    assert first[11:43] != second[11:43]  # fresh random per connection
