"""The tshark engine on its own: JA4 against the FoxIO reference, observations from a generated
capture, and one-line errors for what tshark cannot read."""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from auditor.capture import CaptureError, CaptureStats
from auditor.capture.tshark_engine import read_observations_tshark
from auditor.model import Connection, DNSMessage, HTTPRequest, Observation, TLSHandshake

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import make_capture  # noqa: E402  (bench/ is a directory of scripts, not a package)

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]

# tshark 4.0 shows ALPN as a string: non-UTF-8 bytes become U+FFFD, so JA4's ALPN characters of
# this capture's hello cannot be computed from Wireshark's fields (documented in the engine).
NON_ASCII_ALPN_CAPTURE = "tls-non-ascii-alpn.pcapng"


def _read(path: Path, **kwargs: object) -> tuple[list[Observation], CaptureStats]:
    stats = CaptureStats()
    return list(read_observations_tshark(path, stats, **kwargs)), stats  # type: ignore[arg-type]


def test_ja4_matches_the_reference_implementation(ja4_corpus: Path) -> None:
    compared = 0
    mismatches = []
    for pcap in sorted((ja4_corpus / "pcap").iterdir()):
        if pcap.name == NON_ASCII_ALPN_CAPTURE:
            continue
        expected_file = ja4_corpus / "expected" / f"{pcap.name}.json"
        expected = {
            (s["src"], int(s["srcport"]), s["dst"], int(s["dstport"])): s["JA4.1"]
            for s in json.loads(expected_file.read_text())
            if "JA4.1" in s
        }
        observations, _ = _read(pcap)
        got = {
            (o.flow.src_ip, o.flow.src_port, o.flow.dst_ip, o.flow.dst_port): o.client.ja4
            for o in observations
            if isinstance(o, TLSHandshake) and o.client is not None
        }
        for flow, ja4 in expected.items():
            compared += 1
            if got.get(flow) != ja4:
                mismatches.append((pcap.name, flow, ja4, got.get(flow)))
    assert compared > 100  # the corpus holds ~145 ClientHellos; fewer means we lost some
    assert mismatches == []


def test_signature_algorithms_exclude_delegated_credentials(ja4_corpus: Path) -> None:
    # Firefox's hello in tls12.pcap carries delegated_credentials (4 algorithms) before
    # signature_algorithms (11): tshark lists all 15 under one field name.
    observations, _ = _read(ja4_corpus / "pcap" / "tls12.pcap")
    (handshake,) = [o for o in observations if isinstance(o, TLSHandshake)]
    assert handshake.client is not None
    assert handshake.client.signature_algorithms == [
        0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
    ]  # fmt: skip
    assert handshake.client.server_name == "contile.services.mozilla.com"
    assert handshake.client.alpn == ["h2", "http/1.1"]


def test_generated_capture_gives_every_observation_type(tmp_path: Path) -> None:
    capture = tmp_path / "mix.pcap"
    mix = make_capture.TrafficMix(new_tls_connection=0.05, dns_lookup=0.05, cleartext_http=0.05)
    written, _ = make_capture.write_capture(
        capture, 3000, seed=3, signatures_dir=ROOT / "signatures", mix=mix
    )
    observations, stats = _read(capture)
    assert stats.packets == written
    assert sum(stats.skipped.values()) == 0

    handshakes = [o for o in observations if isinstance(o, TLSHandshake)]
    assert handshakes and all(h.client and h.client.server_name for h in handshakes)
    assert all(h.client and h.client.ja4.startswith("t13d") for h in handshakes)
    assert {h.server.version for h in handshakes if h.server} <= {0x0303, 0x0304}

    answers = [o for o in observations if isinstance(o, DNSMessage) and o.is_response]
    assert answers and all(a.answers[0].rtype == "A" for a in answers)

    requests = [o for o in observations if isinstance(o, HTTPRequest)]
    assert requests
    for request in requests:
        assert request.method == "POST" and request.path == make_capture.CHAT_PATH
        assert json.loads(request.body)["messages"][1]["role"] == "user"
        assert request.response is not None and request.response.status == 200

    connections = [o for o in observations if isinstance(o, Connection)]
    tls_connections = [c for c in connections if c.tls is not None]
    assert len(tls_connections) == len(handshakes)
    for connection in tls_connections:
        assert connection.flow.dst_port == 443 and not connection.client_direction_guessed
        assert connection.packets_out >= 3 and connection.packets_in >= 2


def test_unreadable_file_is_one_line_capture_error(tmp_path: Path) -> None:
    not_a_capture = tmp_path / "notes.pcap"
    not_a_capture.write_bytes(random.Random(1).randbytes(200))
    with pytest.raises(CaptureError) as caught:
        _read(not_a_capture)
    message = str(caught.value)
    assert str(not_a_capture) in message and "\n" not in message
    assert "format" in message  # tshark's own reason, not a generic failure


def test_empty_and_missing_files_are_capture_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty"):
        _read(empty)
    with pytest.raises(CaptureError, match="no such file"):
        _read(tmp_path / "absent.pcap")


def test_missing_tshark_is_a_capture_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITOR_TSHARK", str(tmp_path / "no-tshark"))
    capture = tmp_path / "x.pcap"
    make_capture.write_capture(capture, 10, seed=1, signatures_dir=ROOT / "signatures")
    with pytest.raises(CaptureError, match="tshark not found"):
        _read(capture)


def test_truncated_capture_keeps_what_was_read(tmp_path: Path) -> None:
    capture = tmp_path / "cut.pcap"
    make_capture.write_capture(capture, 500, seed=2, signatures_dir=ROOT / "signatures")
    data = capture.read_bytes()
    capture.write_bytes(data[: len(data) // 2 + 7])  # cut inside a packet record
    observations, stats = _read(capture)
    assert 0 < stats.packets < 500
    assert stats.skipped["truncated-file"] == 1
    assert any(isinstance(o, Connection) for o in observations)


def test_progress_rises_to_the_file_size(tmp_path: Path) -> None:
    capture = tmp_path / "p.pcap"
    make_capture.write_capture(capture, 21_000, seed=4, signatures_dir=ROOT / "signatures")
    seen: list[int] = []
    _read(capture, progress=seen.append)
    assert len(seen) >= 3  # every 10,000 packets, then the end
    assert seen == sorted(seen)
    assert seen[-1] == capture.stat().st_size


def test_tls_records_without_their_handshake_give_no_handshake(tmp_path: Path) -> None:
    # A capture started mid-connection: application data only, no SYN, no hellos.
    capture = tmp_path / "midflow.pcap"
    with capture.open("wb") as out:
        pcap = make_capture.PcapWriter(out, make_capture.START_EPOCH)
        flow = make_capture.TCPFlow(
            bytes([10, 0, 0, 1]), 50000, bytes([192, 0, 2, 1]), 443, 1000, 2000
        )
        for _ in range(5):
            record = make_capture.application_data(bytes(100))
            flow.send(pcap, False, record, make_capture.PSH | make_capture.ACK)
            flow.send(pcap, True, b"")
    observations, _ = _read(capture)
    (connection,) = observations
    assert isinstance(connection, Connection)
    assert connection.tls is None and connection.app_protocol == "tls"
    assert connection.flow.dst_port == 443 and connection.client_direction_guessed
    assert (connection.packets_out, connection.packets_in) == (5, 5)
    assert connection.bytes_in == 5 * (20 + 105)  # TCP header + record, per packet
