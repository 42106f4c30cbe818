"""The fast engine and the tshark engine must see the same connections the same way.

Compared per connection (keyed by the oriented 5-tuple and first packet time): connection
name, TLS version, cipher, SNI, ALPN, JA4, certificates, DNS names and A/AAAA/CNAME answers,
HTTP method, host, path and response status. On the generated capture and on the traffic this
test records itself over loopback with tcpdump (curl against a stdlib ``http.server`` and
``openssl s_server``, DNS over a UDP socket) packet and byte counts must agree too.

Where Wireshark legitimately sees more than the fast engine, the test says so and checks the
direction of the difference (whatever the fast engine reports, tshark reports the same):
- QUIC: tshark decrypts the server's Initial packet, so it also has the ServerHello; the fast
  engine reads the client's Initial only.
- Tunnels the fast engine does not enter: VXLAN on UDP 4790 (VXLAN-GPE's port).
- Captures carrying their TLS secrets (pcapng decryption-secrets block): tshark decrypts TLS 1.3
  and sees the certificates.
- tshark renders non-UTF-8 ALPN bytes as U+FFFD, so that hello's ALPN and JA4 are skipped.
- A response sent before its request (CVE-2018-6794.pcap) is paired differently.
- DNS rdata other than A/AAAA/CNAME (tshark: typed fields; fast engine: text or hex).
- HTTP inside TLS that tshark can read (a NULL cipher suite, or keys embedded in the capture).
- A certificate Wireshark finds malformed is absent from its fields; the fast engine keeps it
  with ``parse_error``. Only certificates that parse are compared.
TLS on a port Wireshark does not associate with TLS (the s_server here listens on a random
high port) needs ``--enable-heuristic tls_tcp``, which the tshark engine always passes.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.capture import CaptureStats
from auditor.capture.engine import read_observations
from auditor.capture.tshark_engine import read_observations_tshark
from auditor.model import Connection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import make_capture  # noqa: E402  (bench/ is a directory of scripts, not a package)

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]

# Corpus captures where tshark reports more than the fast engine, and why (see module doc).
TSHARK_SEES_MORE = {
    "gre-erspan-vxlan.pcap": "HTTP inside VXLAN on UDP 4790",
    "chrome-cloudflare-quic-with-secrets.pcapng": "TLS 1.3 decrypted with the embedded secrets",
    "http2-with-cookies.pcapng": "TLS 1.3 decrypted with the embedded secrets",
}
# Corpus captures where one fact legitimately differs, and why.
FACT_DIFFERS = {
    # The server answers before the client's request arrives (the evasion the CVE is about):
    # Wireshark pairs that answer with no request, the fast engine with the request after it.
    ("CVE-2018-6794.pcap", "http_status"): "response sent before the request",
}
SERVER_FACTS = ("tls_version", "cipher")

ConnectionKey = tuple[str, str, int, str, int, float]


def connection_facts(connection: Connection) -> dict[str, Any]:
    """What both engines must agree on, for one connection (absent facts are left out)."""
    facts: dict[str, Any] = {}
    if connection.server_name:
        facts["server_name"] = connection.server_name
    tls = connection.tls
    if tls is not None and tls.client is not None:
        facts["alpn"] = tuple(tls.client.alpn)
        facts["ja4"] = tls.client.ja4
        facts["sni"] = tls.client.server_name
    if tls is not None and tls.server is not None:
        facts["tls_version"] = tls.server.version
        facts["cipher"] = tls.server.cipher_suite
    # A certificate Wireshark calls malformed has no tls.handshake.certificate field; the fast
    # engine keeps it with a parse_error. Both must agree on the ones that parse.
    certificates = [c.sha256 for c in tls.certificates if c.parse_error is None] if tls else []
    if certificates:
        facts["certificates"] = certificates
    if connection.dns:
        facts["dns"] = sorted(
            (
                message.query_name.rstrip(".").lower(),
                message.is_response,
                tuple(a.data for a in message.answers if a.rtype in ("A", "AAAA", "CNAME")),
            )
            for message in connection.dns
        )
    if connection.http:
        facts["http"] = [(r.method, r.host, r.path) for r in connection.http]
        facts["http_status"] = [r.response.status if r.response else None for r in connection.http]
    return facts


def _alpn_bytes_lost(connection: Connection) -> bool:
    """tshark turned non-UTF-8 ALPN bytes into U+FFFD: ALPN and JA4 cannot be compared."""
    tls = connection.tls
    return bool(tls and tls.client and "\ufffd" in "".join(tls.client.alpn))


def connections_by_key(observations: list[Any]) -> dict[ConnectionKey, Connection]:
    found = {}
    for obs in observations:
        if isinstance(obs, Connection):
            flow = obs.flow
            key = (flow.transport, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port)
            found[(*key, round(obs.first_seen, 3))] = obs
    return found


def both_engines(path: Path) -> tuple[dict[ConnectionKey, Connection], ...]:
    fast = list(read_observations(path, CaptureStats()))
    wireshark = list(read_observations_tshark(path, CaptureStats()))
    return connections_by_key(fast), connections_by_key(wireshark)


def assert_fast_is_subset(path: Path, allow_tshark_extra: bool) -> int:
    """Every fact the fast engine reports, tshark reports the same; returns facts compared."""
    fast, wireshark = both_engines(path)
    compared = 0
    problems = []
    for key, connection in fast.items():
        fast_facts = connection_facts(connection)
        if not fast_facts:
            continue
        other = wireshark.get(key)
        if other is None:
            problems.append(f"{key}: tshark has no such connection")
            continue
        tshark_facts = connection_facts(other)
        quic = (
            connection.tls is not None
            and connection.tls.client is not None
            and (connection.tls.client.over_quic)
        )
        for name, value in fast_facts.items():
            if name in ("alpn", "ja4") and _alpn_bytes_lost(other):
                continue
            if (path.name, name) in FACT_DIFFERS:
                continue
            compared += 1
            if tshark_facts.get(name) != value:
                problems.append(f"{key} {name}: fast {value!r}, tshark {tshark_facts.get(name)!r}")
        extra = set(tshark_facts) - set(fast_facts)
        if quic:
            extra -= set(SERVER_FACTS)  # the server's QUIC Initial, decrypted by tshark
        if other.tls is not None:
            extra -= {"http", "http_status"}  # HTTP inside TLS tshark can read (NULL cipher, keys)
        if extra and not allow_tshark_extra:
            problems.append(f"{key}: only tshark has {sorted(extra)}")
    if not allow_tshark_extra:
        for key, connection in wireshark.items():
            if key not in fast and connection_facts(connection):
                problems.append(f"{key}: only tshark has this connection")
    assert problems == [], f"{path.name}:\n" + "\n".join(problems)
    return compared


# --- shipped and reference captures ----------------------------------------------------------


def sample_captures() -> list[Path]:
    return sorted((ROOT / "samples").glob("*.pcap*"))


@pytest.mark.parametrize("capture", sample_captures(), ids=lambda p: p.name)
def test_engines_agree_on_samples(capture: Path) -> None:
    assert assert_fast_is_subset(capture, allow_tshark_extra=False) > 0


def test_engines_agree_on_ja4_corpus(ja4_corpus: Path) -> None:
    compared = 0
    for capture in sorted((ja4_corpus / "pcap").iterdir()):
        compared += assert_fast_is_subset(capture, capture.name in TSHARK_SEES_MORE)
    assert compared > 300  # ~145 TLS hellos x 3 facts and DNS: fewer means a capture went dark


def test_tshark_sees_into_tunnels_the_fast_engine_does_not(ja4_corpus: Path) -> None:
    # Keeps TSHARK_SEES_MORE honest: each listed capture really has tshark-only facts.
    for name, reason in TSHARK_SEES_MORE.items():
        fast, wireshark = both_engines(ja4_corpus / "pcap" / name)
        extra = [
            key
            for key, connection in wireshark.items()
            if set(connection_facts(connection))
            - set(connection_facts(fast[key]) if key in fast else {})
        ]
        assert extra, f"{name} ({reason}): the engines now agree; drop it from TSHARK_SEES_MORE"


def test_engines_agree_on_generated_capture(tmp_path: Path) -> None:
    capture = tmp_path / "mix.pcap"
    mix = make_capture.TrafficMix(new_tls_connection=0.05, dns_lookup=0.05, cleartext_http=0.05)
    make_capture.write_capture(capture, 4000, seed=11, signatures_dir=ROOT / "signatures", mix=mix)
    assert assert_fast_is_subset(capture, allow_tshark_extra=False) > 100
    assert_counts_agree(capture)


def assert_counts_agree(capture: Path) -> None:
    fast, wireshark = both_engines(capture)
    assert fast.keys() == wireshark.keys()
    for key, connection in fast.items():
        other = wireshark[key]
        assert (connection.packets_out, connection.packets_in) == (
            other.packets_out,
            other.packets_in,
        ), key
        assert (connection.bytes_out, connection.bytes_in) == (other.bytes_out, other.bytes_in), key
        assert connection.client_direction_guessed == other.client_direction_guessed, key


# --- captures recorded here, over loopback ---------------------------------------------------

LOOPBACK = "127.0.0.1"
DNS_SERVER_IP = "127.0.0.9"  # any 127/8 address: no clash with a local resolver's socket


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def recording(path: Path, bpf: str) -> Iterator[None]:
    """tcpdump on lo for the duration of the block; stopped (and flushed) even on failure."""
    process = subprocess.Popen(
        # --immediate-mode: without it packets wait in the kernel's ring buffer (up to its block
        # timeout) and are lost when tcpdump is stopped.
        ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-n", "-w", str(path), bpf],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        ready = process.stderr.readline()  # "listening on lo, ..." once the filter is set
        if b"listening" not in ready:
            pytest.skip(f"tcpdump cannot capture on lo: {ready.decode(errors='replace').strip()}")
        yield
        time.sleep(0.2)  # let the last packets reach the capture buffer
    finally:
        process.send_signal(signal.SIGINT)  # tcpdump writes out what it holds on SIGINT
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def http_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            body = b'{"id": "chatcmpl-test", "choices": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def tls_server(tmp_path: Path) -> Iterator[int]:
    """``openssl s_server`` with a throwaway self-signed certificate on a free port."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    process = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"{LOOPBACK}:{port}", "-cert", str(cert), "-key",
         str(key), "-www", "-alpn", "http/1.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while True:  # wait until it accepts connections
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("openssl s_server did not start")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def dns_server() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.9:53 that answers one A query per datagram."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((DNS_SERVER_IP, 53))
    except OSError as exc:
        server.close()
        pytest.skip(f"cannot bind {DNS_SERVER_IP}:53: {exc}")
    stop = threading.Event()

    def answer() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                query, client = server.recvfrom(512)
            except (TimeoutError, OSError):
                continue
            transaction_id = int.from_bytes(query[:2], "big")
            name = _question_name(query)
            server.sendto(make_capture.dns_response(transaction_id, name, LOOPBACK, 60), client)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def _question_name(query: bytes) -> str:
    labels, position = [], 12
    while query[position]:
        length = query[position]
        labels.append(query[position + 1 : position + 1 + length].decode("ascii"))
        position += 1 + length
    return ".".join(labels)


def _curl(*args: str) -> None:
    subprocess.run(["curl", "-4", "-s", "-o", "/dev/null", "--max-time", "5", *args], check=True)


needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("tcpdump", "curl", "openssl")),
    reason="needs tcpdump, curl and openssl",
)


@needs_tools
@pytest.mark.network
def test_engines_agree_on_recorded_loopback_traffic(tmp_path: Path) -> None:
    capture = tmp_path / "loopback.pcap"
    body = '{"model": "test-model", "messages": [{"role": "user", "content": "hello"}]}'
    with http_server() as http_port, tls_server(tmp_path) as tls_port, dns_server():
        bpf = f"tcp port {http_port} or tcp port {tls_port} or (udp and host {DNS_SERVER_IP})"
        with recording(capture, bpf):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver_client:
                resolver_client.settimeout(2)
                resolver_client.sendto(
                    make_capture.dns_query(0x1234, "api.llm.test"), (DNS_SERVER_IP, 53)
                )
                resolver_client.recvfrom(512)
            _curl("-X", "POST", "-H", "Content-Type: application/json", "--data", body,
                  f"http://localhost:{http_port}/v1/chat/completions?trace=1")  # fmt: skip
            _curl("-k", "--http1.1", f"https://localhost:{tls_port}/")  # TLS 1.3, ALPN
            _curl("-k", "--tlsv1.2", "--tls-max", "1.2", "--ciphers",
                  "ECDHE-ECDSA-AES128-GCM-SHA256", f"https://localhost:{tls_port}/")  # fmt: skip

    fast, _ = both_engines(capture)
    facts = [connection_facts(c) for c in fast.values()]
    # All four exchanges were seen by the fast engine, so the comparison below means something.
    assert any(f.get("dns", [])[-1:] == [("api.llm.test", True, (LOOPBACK,))] for f in facts)
    assert any(
        f.get("http") == [("POST", "localhost", "/v1/chat/completions?trace=1")]
        and f["http_status"] == [200]
        for f in facts
    )
    versions = {f.get("tls_version") for f in facts if "sni" in f}
    assert versions == {0x0304, 0x0303}
    tls12 = next(f for f in facts if f.get("tls_version") == 0x0303)
    assert tls12["cipher"] == 0xC02B and len(tls12["certificates"]) == 1
    assert all(f["sni"] == "localhost" for f in facts if "sni" in f)

    assert assert_fast_is_subset(capture, allow_tshark_extra=False) >= 12
    assert_counts_agree(capture)


@pytest.mark.parametrize("capture", sample_captures(), ids=lambda p: p.name)
def test_engines_give_the_same_findings_on_samples(capture: Path) -> None:
    from auditor.analysis import analyse_captures
    from auditor.context import load_context

    findings = {}
    for engine in ("fast", "tshark"):
        result = analyse_captures([capture], load_context(), engine=engine)
        assert result.unreadable == []
        findings[engine] = sorted(
            (f.kind, f.host, f.severity.label, f.count) for f in result.analysis.findings
        )
    assert findings["fast"]  # the samples are made to trigger detectors
    assert findings["fast"] == findings["tshark"]
