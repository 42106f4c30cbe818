"""Packets per second of the fast capture engine alone, on a bulk-TLS capture.

    [this script] -> bulk.pcap -> auditor.capture.engine.read_observations (no pipeline)

The capture is what dominates real egress captures: a few hundred long TLS flows, each opened
with a real handshake (the ClientHello and server flight come from an in-memory handshake of
Python's ``ssl`` module, with a certificate from ``trustme``), then full-size application-data
segments from the server and ACKs from the client, interleaved. ``bench/bench_pcap.py``
compares the whole tool against tshark; this one isolates the engine's packet loop.

    python bench/bench_engine.py --packets 1000000 [--snaplen 0] [--keep /tmp/bulk.pcap]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import ssl
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.capture import CaptureStats  # noqa: E402
from auditor.capture.engine import read_observations  # noqa: E402

MSS = 1448
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def tls_flights(server_name: str) -> tuple[bytes, bytes]:
    """(client's first flight, server's first flight) of a real TLS handshake, in memory."""
    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(server_name).configure_cert(server_ctx)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # certificates in the clear
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    with contextlib.suppress(ssl.SSLWantReadError):  # waits for the server: expected
        client.do_handshake()
    client_flight = c_out.read()
    s_in.write(client_flight)
    with contextlib.suppress(ssl.SSLWantReadError):
        server.do_handshake()
    return client_flight, s_out.read()


def _frame(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes
) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    return b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + ip + tcp + payload


def write_bulk_capture(path: Path, packets: int, flows: int, snaplen: int, seed: int) -> int:
    """Write the capture; returns the number of packets written."""
    rng = random.Random(seed)
    client_flight, server_flight = tls_flights("api.bulk.example.com")
    record = b"\x17\x03\x03" + struct.pack("!H", MSS - 5) + rng.randbytes(MSS - 5)
    written = 0
    ts = START

    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

        def put(frame: bytes) -> None:
            nonlocal written, ts
            ts += 0.00001
            kept = frame[:snaplen] if snaplen else frame
            sec = int(ts)
            out.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(kept), len(frame)))
            out.write(kept)
            written += 1

        state = []
        for index in range(flows):
            client_ip = bytes([10, 1, index >> 8 & 0xFF, index & 0xFF])
            server_ip = bytes([203, 0, 113, 1 + index % 200])
            sport = 40000 + index
            c_seq, s_seq = rng.getrandbits(32), rng.getrandbits(32)
            c_tuple = (client_ip, server_ip, sport, 443)
            s_tuple = (server_ip, client_ip, 443, sport)
            put(_frame(*c_tuple, c_seq, 0, 0x02, b""))
            put(_frame(*s_tuple, s_seq, c_seq + 1, 0x12, b""))
            c_seq += 1
            s_seq += 1
            put(_frame(*c_tuple, c_seq, s_seq, 0x10, b""))
            put(_frame(*c_tuple, c_seq, s_seq, 0x18, client_flight))
            c_seq += len(client_flight)
            for start in range(0, len(server_flight), MSS):
                piece = server_flight[start : start + MSS]
                put(_frame(*s_tuple, s_seq, c_seq, 0x18, piece))
                s_seq += len(piece)
            state.append([c_tuple, s_tuple, c_seq, s_seq])
        while written < packets - 2 * flows:
            for flow in state:
                c_tuple, s_tuple, c_seq, s_seq = flow
                put(_frame(*s_tuple, s_seq, c_seq, 0x18, record))
                s_seq += len(record)
                put(_frame(*s_tuple, s_seq, c_seq, 0x18, record))
                s_seq += len(record)
                put(_frame(*c_tuple, c_seq, s_seq, 0x10, b""))
                flow[3] = s_seq
        for c_tuple, s_tuple, c_seq, s_seq in state:
            put(_frame(*c_tuple, c_seq, s_seq, 0x11, b""))
            put(_frame(*s_tuple, s_seq, c_seq + 1, 0x11, b""))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--flows", type=int, default=200)
    parser.add_argument("--snaplen", type=int, default=0, help="cut frames to this (0: whole)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the capture here and keep it")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = parser.parse_args(argv)
    if args.keep:
        path = args.keep
    else:
        handle, name = tempfile.mkstemp(suffix=".pcap")
        os.close(handle)
        path = Path(name)
    try:
        written = write_bulk_capture(path, args.packets, args.flows, args.snaplen, args.seed)
        best_wall = best_cpu = float("inf")
        stats = CaptureStats()
        for _ in range(args.repeat):
            stats = CaptureStats()
            wall, cpu = time.perf_counter(), time.process_time()
            for _observation in read_observations(path, stats):
                pass
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        print(f"{path}: {written} packets, {path.stat().st_size / 1e6:.0f} MB")
        print(
            f"engine: {stats.packets / best_wall:,.0f} packets/s wall, "
            f"{stats.packets / best_cpu:,.0f} packets/s CPU (best of {args.repeat})"
        )
        print(f"stats: {stats.summary()}")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
