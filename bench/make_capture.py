"""Write a large, realistic, deterministic pcap for the benchmark (``bench/bench_pcap.py``).

    [this script] -> capture.pcap -> auditor pcap (fast engine + pipeline) / tshark

The traffic is shaped like an office egress link to AI APIs:
- most packets are TLS application-data records on long-lived flows (streamed completions:
  many small server records, some full-size segments, client ACKs and small requests);
- every TLS flow starts with a full TCP and TLS handshake: a real ClientHello (curl 7.88.1 /
  OpenSSL 3.0.19, captured once on loopback) with a fresh random, session id, key share and
  the flow's SNI, answered by a ServerHello (TLS 1.3 as OpenSSL sent it, or TLS 1.2);
- DNS queries and answers (A records pointing at the flows' servers) before each connection
  and now and then on their own;
- cleartext HTTP POSTs with JSON chat-completion bodies and JSON answers on short flows.

Names come from the signature data (``signatures/providers.yaml``, ``relays.yaml``) plus
generated names under example.com (RFC 2606), so the pipeline finds something to report.
Packets are written with ``struct`` (scapy builds ~20k packets/s; this writes about 10x that);
the same seed and size give byte-identical files.

    python bench/make_capture.py --packets 1000000 --seed 7 -o /tmp/capture.pcap
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import yaml

# A ClientHello record exactly as curl 7.88.1 (OpenSSL 3.0.19) sent it to 127.0.0.1 with
# SNI "localhost"; random, session id, key share and SNI are replaced per connection.
CURL_CLIENT_HELLO = bytes.fromhex(
    "1603010200010001fc03035e82992f8c45e4cc0bbeb6b47a9c7e65354e3d2ce4f034a530c13d95b103a7a020"
    "d8f9dac2349c52d32537668210d2a8530f92cd6c656900a5b3e0f18b768be38f003e130213031301c02cc030"
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d"
    "003c0035002f00ff010001750000000e000c0000096c6f63616c686f7374000b000403000102000a00160014"
    "001d0017001e00190018010001010102010301040010000b000908687474702f312e31001600000017000000"
    "310000000d002a0028040305030603080708080809080a080b08040805080604010501060103030301030204"
    "0205020602002b0009080304030303020301002d00020101003300260024001d002068f33e05f66ac11b613a"
    "19e65add595e808ad80d5ce84d9161fe145b29caf146001500b7000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000"
)
# The ServerHello record OpenSSL 3.0.19 s_server answered with (TLS 1.3, TLS_AES_256_GCM_SHA384).
OPENSSL_SERVER_HELLO_TLS13 = bytes.fromhex(
    "160303007a02000076030305742342df6e6eab45b0257946652f0e9768a6f9cb95e02b332fbfa68e79b9c520"
    "d8f9dac2349c52d32537668210d2a8530f92cd6c656900a5b3e0f18b768be38f130200002e002b0002030400"
    "330024001d00204fa00198c9de1ed099dd1a34962c0216f15d46963bb6a44a308f2afe4c32772a"
)

# Bumped whenever the bytes written for a (packets, seed) change, so cached captures are redone.
GENERATOR_VERSION = 2
START_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed so that files are reproducible
CHAT_PATH = "/v1/chat/completions"
RESOLVER_IP = "10.0.0.53"
ETHERTYPE_IPV4 = 0x0800
LINKTYPE_ETHERNET = 1
MSS = 1448


# --- names from the signature data ----------------------------------------------------------


def destination_names(signatures_dir: Path, rng: random.Random, generated: int) -> list[str]:
    """Exact/suffix domains of providers and relays, plus ``generated`` example.com names."""
    names: list[str] = []
    for file_name in ("providers.yaml", "relays.yaml"):
        path = signatures_dir / file_name
        if not path.is_file():
            continue
        for entry in yaml.safe_load(path.read_text(encoding="utf-8")).get("entries", []):
            if entry.get("match", "exact") in ("exact", "suffix") and entry.get("domain"):
                names.append(str(entry["domain"]))
    names += [f"svc{i}.cdn{i % 7}.example.com" for i in range(generated)]
    rng.shuffle(names)
    return names


# --- TLS records ---------------------------------------------------------------------------


def _vector(data: bytes, length_bytes: int) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def client_hello(server_name: str, rng: random.Random) -> bytes:
    """curl's ClientHello record with a fresh random, session id, key share and this SNI.

    The padding extension is resized so the handshake message stays 512 bytes (4-byte header +
    body), as OpenSSL pads it (RFC 7685).
    """
    record = CURL_CLIENT_HELLO
    body = record[9:]
    pos = 2
    random_bytes = rng.randbytes(32)
    pos += 32
    session_id = rng.randbytes(body[pos])
    pos += 1 + body[pos]
    suites_len = int.from_bytes(body[pos : pos + 2], "big")
    suites = body[pos : pos + 2 + suites_len]
    pos += 2 + suites_len
    compression = body[pos : pos + 1 + body[pos]]
    pos += 1 + body[pos]
    extensions_end = pos + 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 2
    extensions: list[tuple[int, bytes]] = []
    while pos < extensions_end:
        ext_type = int.from_bytes(body[pos : pos + 2], "big")
        ext_len = int.from_bytes(body[pos + 2 : pos + 4], "big")
        data = body[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
        if ext_type == 0:  # server_name: one host_name entry
            data = _vector(b"\x00" + _vector(server_name.encode("ascii"), 2), 2)
        elif ext_type == 51:  # key_share: one x25519 share, fresh per connection
            data = _vector(b"\x00\x1d" + _vector(rng.randbytes(32), 2), 2)
        extensions.append((ext_type, data))
    head = body[:2] + random_bytes + _vector(session_id, 1) + suites + compression
    unpadded = len(head) + 2 + sum(4 + len(d) for t, d in extensions if t != 21)
    padding = max(0, 512 - 4 - unpadded - 4)  # message header, padding extension header
    encoded = b"".join(
        struct.pack("!HH", t, len(d if t != 21 else bytes(padding)))
        + (d if t != 21 else bytes(padding))
        for t, d in extensions
    )
    hello = head + _vector(encoded, 2)
    handshake = b"\x01" + _vector(hello, 3)
    return record[:3] + _vector(handshake, 2)


def server_hello_tls12(rng: random.Random, session_id: bytes, cipher: int) -> bytes:
    """A TLS 1.2 ServerHello record (renegotiation_info, ec_point_formats, extended master
    secret), as servers that do not speak TLS 1.3 send it."""
    extensions = b"\xff\x01\x00\x01\x00" + b"\x00\x0b\x00\x02\x01\x00" + b"\x00\x17\x00\x00"
    hello = (
        b"\x03\x03"
        + rng.randbytes(32)
        + _vector(session_id, 1)
        + cipher.to_bytes(2, "big")
        + b"\x00"
        + _vector(extensions, 2)
    )
    return b"\x16\x03\x03" + _vector(b"\x02" + _vector(hello, 3), 2)


def server_hello_tls13(rng: random.Random, session_id: bytes) -> bytes:
    """OpenSSL's TLS 1.3 ServerHello with a fresh random, echoed session id and key share."""
    record = bytearray(OPENSSL_SERVER_HELLO_TLS13)
    record[11:43] = rng.randbytes(32)
    record[44:76] = session_id.ljust(32, b"\0")[:32]
    record[-32:] = rng.randbytes(32)
    return bytes(record)


def application_data(payload: bytes) -> bytes:
    return b"\x17\x03\x03" + _vector(payload, 2)


CHANGE_CIPHER_SPEC = b"\x14\x03\x03\x00\x01\x01"


# --- DNS -------------------------------------------------------------------------------------


def _dns_name(name: str) -> bytes:
    return b"".join(_vector(label.encode("ascii"), 1) for label in name.split(".")) + b"\0"


def dns_query(transaction_id: int, name: str) -> bytes:
    header = struct.pack("!HHHHHH", transaction_id, 0x0100, 1, 0, 0, 0)
    return header + _dns_name(name) + struct.pack("!HH", 1, 1)


def dns_response(transaction_id: int, name: str, address: str, ttl: int) -> bytes:
    header = struct.pack("!HHHHHH", transaction_id, 0x8180, 1, 1, 0, 0)
    question = _dns_name(name) + struct.pack("!HH", 1, 1)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + _ip_bytes(address)
    return header + question + answer


# --- HTTP ------------------------------------------------------------------------------------

PROMPTS = (
    "Summarise the attached quarterly report in five bullet points.",
    "Translate the following customer email into German and keep the tone formal.",
    "Write a SQL query that lists the ten largest invoices of last month.",
    "Explain this stack trace and suggest a fix.",
)


def http_request(host: str, rng: random.Random) -> bytes:
    body = json.dumps(
        {
            "model": rng.choice(("gpt-4o-mini", "claude-3-5-haiku", "qwen-plus", "llama3")),
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": rng.choice(PROMPTS) + " " + rng.randbytes(8).hex()},
            ],
            "stream": False,
        }
    ).encode()
    # Obviously fake key, generated here: exercises the key detectors without being a secret.
    fake_key = "sk-bench-FAKE-" + rng.randbytes(12).hex()
    head = (
        f"POST {CHAT_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-client/1.0\r\n"
        f"Authorization: Bearer {fake_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def http_response(rng: random.Random) -> bytes:
    body = json.dumps(
        {
            "id": "chatcmpl-" + rng.randbytes(6).hex(),
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done."}}],
            "usage": {"prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33},
        }
    ).encode()
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


# --- packets ---------------------------------------------------------------------------------


def _ip_bytes(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Ethernet/IPv4/TCP|UDP packets into a classic pcap (microsecond timestamps)."""

    def __init__(self, out: BinaryIO, start: float) -> None:
        self.out = out
        self.now = start
        self.packets = 0
        self.bytes = 0
        self._ip_id = 0
        self._ethernet = bytes.fromhex("020000000002020000000001") + struct.pack(
            "!H", ETHERTYPE_IPV4
        )
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def _ip(self, protocol: int, src: bytes, dst: bytes, segment: bytes) -> bytes:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(segment),
            self._ip_id,
            0x4000,
            64,
            protocol,
            0,
            src,
            dst,
        )
        checksum = _checksum(header)
        return header[:10] + struct.pack("!H", checksum) + header[12:] + segment

    def _write(self, frame: bytes) -> None:
        seconds = int(self.now)
        micros = int((self.now - seconds) * 1_000_000)
        self.out.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
        self.out.write(frame)
        self.packets += 1
        self.bytes += len(frame)
        self.now += 0.000015  # packets of one exchange are not simultaneous either

    def tcp(
        self,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        payload: bytes = b"",
    ) -> None:
        # Checksum left 0: readers (tshark, ours) do not verify it, and NICs with offload
        # write captures like this too.
        segment = (
            struct.pack(
                "!HHIIBBHHH",
                sport,
                dport,
                seq & 0xFFFFFFFF,
                ack & 0xFFFFFFFF,
                0x50,
                flags,
                65535,
                0,
                0,
            )
            + payload
        )
        self._write(self._ethernet + self._ip(6, src, dst, segment))

    def udp(self, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> None:
        segment = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        self._write(self._ethernet + self._ip(17, src, dst, segment))


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass
class TCPFlow:
    """One TCP connection being written: addresses and the next sequence number each way."""

    client: bytes
    client_port: int
    server: bytes
    server_port: int
    client_seq: int
    server_seq: int
    packets: int = 0

    def send(self, pcap: PcapWriter, from_client: bool, payload: bytes, flags: int = ACK) -> None:
        if from_client:
            pcap.tcp(
                self.client,
                self.client_port,
                self.server,
                self.server_port,
                self.client_seq,
                self.server_seq,
                flags,
                payload,
            )
            self.client_seq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        else:
            pcap.tcp(
                self.server,
                self.server_port,
                self.client,
                self.client_port,
                self.server_seq,
                self.client_seq,
                flags,
                payload,
            )
            self.server_seq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        self.packets += 1

    def open(self, pcap: PcapWriter) -> None:
        """The three-way handshake (SYN's sequence number is consumed by send)."""
        self.send(pcap, True, b"", SYN)
        self.send(pcap, False, b"", SYN | ACK)
        self.send(pcap, True, b"", ACK)

    def close(self, pcap: PcapWriter) -> None:
        self.send(pcap, True, b"", FIN | ACK)
        self.send(pcap, False, b"", FIN | ACK)
        self.send(pcap, True, b"", ACK)

    def send_stream(self, pcap: PcapWriter, from_client: bool, data: bytes) -> None:
        """Application bytes cut into MSS-sized segments."""
        for start in range(0, len(data), MSS):
            self.send(pcap, from_client, data[start : start + MSS], PSH | ACK)


# --- the traffic mix -------------------------------------------------------------------------


@dataclass
class TrafficMix:
    """Shares of what happens next, per step (bulk records are the rest)."""

    new_tls_connection: float = 0.004
    dns_lookup: float = 0.004
    cleartext_http: float = 0.002
    max_open_flows: int = 400
    tls12_share: float = 0.2  # connections answered with a TLS 1.2 ServerHello


class CaptureGenerator:
    def __init__(self, pcap: PcapWriter, rng: random.Random, names: list[str], mix: TrafficMix):
        self.pcap = pcap
        self.rng = rng
        self.names = names
        self.mix = mix
        self.open_flows: list[TCPFlow] = []
        self.clients = [f"10.20.{i // 200}.{i % 200 + 10}" for i in range(60)]
        self.server_for: dict[str, str] = {}
        self.next_port = 20000
        self.noise = rng.randbytes(1 << 16)  # payload bytes are slices of this
        self.transaction = 0

    def _server_address(self, name: str) -> str:
        address = self.server_for.get(name)
        if address is None:
            # Documentation ranges (RFC 5737) so no real host is named by an address.
            n = len(self.server_for)
            prefix = ("192.0.2", "198.51.100", "203.0.113")[n % 3]
            address = self.server_for[name] = f"{prefix}.{n // 3 % 250 + 1}"
        return address

    def _port(self) -> int:
        self.next_port = 20000 + (self.next_port - 19999) % 40000
        return self.next_port

    def _noise(self, size: int) -> bytes:
        start = self.rng.randrange(0, len(self.noise) - size)
        return self.noise[start : start + size]

    def _tick(self) -> None:
        self.pcap.advance(self.rng.random() * 0.0004)

    def dns_lookup(self, client: str, name: str) -> str:
        address = self._server_address(name)
        self.transaction = (self.transaction + 1) & 0xFFFF
        port = self._port()
        self.pcap.udp(
            _ip_bytes(client), port, _ip_bytes(RESOLVER_IP), 53, dns_query(self.transaction, name)
        )
        self._tick()
        self.pcap.udp(
            _ip_bytes(RESOLVER_IP),
            53,
            _ip_bytes(client),
            port,
            dns_response(self.transaction, name, address, 300),
        )
        return address

    def new_tls_connection(self) -> None:
        client = self.rng.choice(self.clients)
        name = self.rng.choice(self.names)
        server = self.dns_lookup(client, name)
        flow = TCPFlow(
            _ip_bytes(client),
            self._port(),
            _ip_bytes(server),
            443,
            self.rng.getrandbits(32),
            self.rng.getrandbits(32),
        )
        flow.open(self.pcap)
        hello = client_hello(name, self.rng)
        flow.send(self.pcap, True, hello, PSH | ACK)
        session_id = hello[44 : 44 + hello[43]]
        if self.rng.random() < self.mix.tls12_share:
            cipher = self.rng.choice((0xC02F, 0xC030, 0x009C, 0x002F))
            flight = server_hello_tls12(self.rng, session_id, cipher)
        else:
            # TLS 1.3: ServerHello, CCS, then the encrypted rest of the server's flight.
            flight = (
                server_hello_tls13(self.rng, session_id)
                + CHANGE_CIPHER_SPEC
                + application_data(self._noise(self.rng.randrange(900, 2600)))
            )
        flow.send_stream(self.pcap, False, flight)
        flow.send(
            self.pcap, True, CHANGE_CIPHER_SPEC + application_data(self._noise(53)), PSH | ACK
        )
        self.open_flows.append(flow)
        if len(self.open_flows) > self.mix.max_open_flows:
            self.open_flows.pop(self.rng.randrange(len(self.open_flows))).close(self.pcap)

    def cleartext_http(self) -> None:
        client = self.rng.choice(self.clients)
        host = self.rng.choice(self.names)
        server = self.dns_lookup(client, host)
        flow = TCPFlow(
            _ip_bytes(client),
            self._port(),
            _ip_bytes(server),
            80,
            self.rng.getrandbits(32),
            self.rng.getrandbits(32),
        )
        flow.open(self.pcap)
        flow.send_stream(self.pcap, True, http_request(host, self.rng))
        flow.send(self.pcap, False, b"")
        flow.send_stream(self.pcap, False, http_response(self.rng))
        flow.close(self.pcap)

    def bulk_record(self) -> None:
        """A streamed-completion record: mostly small server records, some full segments."""
        flow = self.rng.choice(self.open_flows)
        roll = self.rng.random()
        if roll < 0.55:
            size = self.rng.randrange(40, 400)  # one server-sent-events chunk
            flow.send(self.pcap, False, application_data(self._noise(size)), PSH | ACK)
        elif roll < 0.75:
            flow.send(self.pcap, False, application_data(self._noise(MSS - 5)), ACK)
        elif roll < 0.95:
            flow.send(self.pcap, True, b"")  # the client's ACK
        else:
            size = self.rng.randrange(200, 1400)  # the next request on the connection
            flow.send(self.pcap, True, application_data(self._noise(size)), PSH | ACK)

    def run(self, packets: int) -> None:
        mix = self.mix
        thresholds = (
            mix.new_tls_connection,
            mix.new_tls_connection + mix.dns_lookup,
            mix.new_tls_connection + mix.dns_lookup + mix.cleartext_http,
        )
        while self.pcap.packets < packets:
            self._tick()
            roll = self.rng.random()
            if roll < thresholds[0] or not self.open_flows:
                self.new_tls_connection()
            elif roll < thresholds[1]:
                self.dns_lookup(self.rng.choice(self.clients), self.rng.choice(self.names))
            elif roll < thresholds[2]:
                self.cleartext_http()
            else:
                self.bulk_record()
        for flow in self.open_flows:
            flow.close(self.pcap)
        self.open_flows.clear()


def write_capture(
    path: Path, packets: int, seed: int, signatures_dir: Path, mix: TrafficMix | None = None
) -> tuple[int, int]:
    """Write the capture; returns (packets, bytes of packet data) actually written."""
    rng = random.Random(seed)
    names = destination_names(signatures_dir, rng, generated=200)
    with path.open("wb") as out:
        pcap = PcapWriter(out, START_EPOCH)
        CaptureGenerator(pcap, rng, names, mix or TrafficMix()).run(packets)
    return pcap.packets, pcap.bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="pcap file to write")
    parser.add_argument("--packets", type=int, default=1_000_000, help="at least this many")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--signatures",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "signatures",
        help="where to take destination names from",
    )
    parser.add_argument("--flows", type=int, default=400, help="long-lived TLS flows kept open")
    args = parser.parse_args(argv)
    mix = TrafficMix(max_open_flows=args.flows)
    written, size = write_capture(args.output, args.packets, args.seed, args.signatures, mix)
    print(f"{args.output}: {written} packets, {size / 1e6:.1f} MB of packet data", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
