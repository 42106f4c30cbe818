"""TLS stream parsing on real handshakes (Python ssl, openssl s_client/s_server on 127.0.0.1)
and on broken input (truncated, oversize lengths, zero-length, garbage, random mutations).

Real bytes are recorded by servers and relays this file runs on loopback; every server and
process started here is stopped in a ``finally``/fixture teardown.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.capture.tls import (
    ServerParse,
    TLSParseError,
    looks_like_tls,
    parse_client_hello,
    parse_client_hellos,
    parse_client_stream,
    parse_server_stream,
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl binary")
IO_TIMEOUT = 10.0


# --- loopback plumbing -----------------------------------------------------------------------


class RecordingServer:
    """Accepts one TCP connection on 127.0.0.1 and keeps what the client sends.

    It reads until a whole ClientHello has arrived (or the peer closes), then closes, so the
    client fails its handshake, which is fine: only its first flight is wanted.
    """

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(IO_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(IO_TIMEOUT)
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.received += chunk
                if parse_client_stream(self.received) is not None:
                    return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(IO_TIMEOUT)


class RecordingRelay:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:upstream that records both directions."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(IO_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.client_bytes = b""
        self.server_bytes = b""
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.upstream_port), IO_TIMEOUT)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            open_sockets = 2
            while open_sockets:
                events = selector.select(IO_TIMEOUT)
                if not events:
                    return
                for key, _ in events:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        chunk = source.recv(65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        selector.unregister(source)
                        open_sockets -= 1
                        with contextlib.suppress(OSError):
                            key.data.shutdown(socket.SHUT_WR)
                        continue
                    if source is client:
                        self.client_bytes += chunk
                    else:
                        self.server_bytes += chunk
                    key.data.sendall(chunk)
        finally:
            selector.close()
            client.close()
            server.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(IO_TIMEOUT)


class OpenSSLServer:
    """``openssl s_server`` on 127.0.0.1 with an OS-chosen port; stopped by ``close``."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", *args],
            stdin=subprocess.PIPE,  # kept open: s_server quits on stdin EOF
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.port = 0
        assert self.process.stdout is not None
        output = ""
        for _ in range(20):
            line = self.process.stdout.readline().decode(errors="replace")
            output += line
            if line.startswith("ACCEPT"):
                self.port = int(line.rsplit(":", 1)[1])
                break
            if not line:
                break
        if not self.port:
            self.close()
            raise RuntimeError(f"openssl s_server did not start: {output.strip()}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(IO_TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()


def run_s_client(port: int, *args: str) -> None:
    subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=b"",
        capture_output=True,
        timeout=IO_TIMEOUT,
        check=False,
    )


def openssl_handshake(server_args: list[str], client_args: list[str]) -> tuple[bytes, bytes]:
    """(client->server bytes, server->client bytes) of one s_client/s_server handshake."""
    server = OpenSSLServer(*server_args)
    relay = RecordingRelay(server.port)
    try:
        run_s_client(relay.port, *client_args)
    finally:
        relay.close()
        server.close()
    return relay.client_bytes, relay.server_bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA (RSA 2048, SHA-256, self-signed) and a leaf (RSA 2048, SHA-1 by the CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary")
    directory = tmp_path_factory.mktemp("pki")
    paths = {name: directory / name for name in ("ca.key", "ca.pem", "leaf.key", "leaf.csr",
                                                 "leaf.pem", "ext.cnf")}  # fmt: skip
    paths["ext.cnf"].write_text("subjectAltName=DNS:leaf.relay.test,IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
            "-subj", "/CN=Throwaway Test CA", "-keyout", str(paths["ca.key"]),
            "-out", str(paths["ca.pem"]))  # fmt: skip
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=leaf.relay.test",
            "-keyout", str(paths["leaf.key"]), "-out", str(paths["leaf.csr"]))  # fmt: skip
    openssl("x509", "-req", "-sha1", "-days", "2", "-in", str(paths["leaf.csr"]),
            "-CA", str(paths["ca.pem"]), "-CAkey", str(paths["ca.key"]), "-set_serial", "4660",
            "-extfile", str(paths["ext.cnf"]), "-out", str(paths["leaf.pem"]))  # fmt: skip
    return paths


# --- real ClientHellos -----------------------------------------------------------------------


def test_python_ssl_client_hello() -> None:
    server = RecordingServer()
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2", "http/1.1"])
        try:
            with (
                socket.create_connection(("127.0.0.1", server.port), IO_TIMEOUT) as raw,
                context.wrap_socket(raw, server_hostname="api.relay.test"),
            ):
                pass
        except (ssl.SSLError, OSError):
            pass  # the recording server hangs up after the ClientHello
    finally:
        server.close()
    assert looks_like_tls(server.received)
    hello = parse_client_stream(server.received)
    assert hello is not None
    assert hello.server_name == "api.relay.test"
    assert hello.alpn == ["h2", "http/1.1"]
    assert hello.max_version == 0x0304
    assert 0x1301 in hello.cipher_suites  # TLS_AES_128_GCM_SHA256
    assert hello.legacy_version == 0x0303
    assert hello.signature_algorithms and hello.supported_groups
    assert hello.ja4.startswith("t13d") and hello.ja4[8:10] == "h2"
    assert len(hello.ja3_hash) == 32


@needs_openssl
def test_openssl_tls12_client_hello_split_over_records() -> None:
    server = RecordingServer()
    try:
        run_s_client(server.port, "-tls1_2", "-servername", "models.example.test",
                     "-alpn", "http/1.1")  # fmt: skip
    finally:
        server.close()
    hello = parse_client_stream(server.received)
    assert hello is not None
    assert hello.server_name == "models.example.test"
    assert hello.alpn == ["http/1.1"]
    assert hello.max_version == 0x0303
    assert 0x0304 not in hello.supported_versions
    assert hello.ja4.startswith("t12d") and hello.ja4[8:10] == "h1"

    # The same handshake message cut into 40-byte records must parse identically.
    body_with_header = server.received[5 : 5 + int.from_bytes(server.received[3:5], "big")]
    records = b"".join(
        b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        for chunk in (body_with_header[i : i + 40] for i in range(0, len(body_with_header), 40))
    )
    assert parse_client_stream(records) == hello
    # Every shorter prefix is "not yet", never an error.
    for cut in range(len(records)):
        assert parse_client_stream(records[:cut]) is None


@needs_openssl
def test_tls10_handshake_server_hello_and_certificate_chain(pki: dict[str, Path]) -> None:
    weak = "DEFAULT:@SECLEVEL=0"
    client_bytes, server_bytes = openssl_handshake(
        ["-tls1", "-cipher", weak, "-cert", str(pki["leaf.pem"]), "-key", str(pki["leaf.key"]),
         "-cert_chain", str(pki["ca.pem"])],
        ["-tls1", "-cipher", weak, "-servername", "leaf.relay.test"],
    )  # fmt: skip
    hello = parse_client_stream(client_bytes)
    assert hello is not None and hello.server_name == "leaf.relay.test"
    assert hello.max_version == 0x0301 and hello.ja4.startswith("t10d")

    parsed = parse_server_stream(server_bytes)
    assert isinstance(parsed, ServerParse)
    assert parsed.server is not None
    assert parsed.server.version == 0x0301
    assert parsed.server.selected_version is None
    assert parsed.server.cipher_suite in hello.cipher_suites
    assert parsed.alert is None
    leaf, ca = parsed.certificates
    assert leaf.subject_cn == "leaf.relay.test"
    assert leaf.sans == ["leaf.relay.test", "127.0.0.1"]
    assert leaf.issuer == "CN=Throwaway Test CA"
    assert leaf.serial == "1234"
    assert (leaf.key_type, leaf.key_bits) == ("RSA", 2048)
    assert (leaf.signature_algorithm, leaf.signature_hash) == ("sha1WithRSAEncryption", "sha1")
    assert leaf.self_signed is False
    assert ca.self_signed is True
    assert (ca.signature_algorithm, ca.signature_hash) == ("sha256WithRSAEncryption", "sha256")


@needs_openssl
def test_tls13_server_hello_negotiates_version_and_alpn_and_hides_certificate(
    pki: dict[str, Path],
) -> None:
    # The CA certificate serves here: OpenSSL's default security level refuses the SHA-1 leaf.
    client_bytes, server_bytes = openssl_handshake(
        ["-cert", str(pki["ca.pem"]), "-key", str(pki["ca.key"]), "-alpn", "h2"],
        ["-servername", "leaf.relay.test", "-alpn", "h2"],
    )
    parsed = parse_server_stream(server_bytes)
    assert parsed.server is not None
    assert parsed.server.legacy_version == 0x0303
    assert parsed.server.selected_version == 0x0304
    assert parsed.server.version == 0x0304
    assert parsed.server.cipher_suite in (0x1301, 0x1302, 0x1303)
    assert parsed.certificates == []  # encrypted in TLS 1.3
    hello = parse_client_stream(client_bytes)
    assert hello is not None and hello.alpn == ["h2"]


@needs_openssl
def test_tls12_server_alpn_and_protocol_version_alert(pki: dict[str, Path]) -> None:
    cert = ["-cert", str(pki["ca.pem"]), "-key", str(pki["ca.key"])]
    _, server_bytes = openssl_handshake([*cert, "-tls1_2", "-alpn", "http/1.1"],
                                        ["-tls1_2", "-alpn", "http/1.1"])  # fmt: skip
    parsed = parse_server_stream(server_bytes)
    assert parsed.server is not None and parsed.server.version == 0x0303
    assert parsed.server.alpn == "http/1.1"
    assert [c.subject_cn for c in parsed.certificates] == ["Throwaway Test CA"]

    _, refused = openssl_handshake([*cert, "-tls1_2"], ["-tls1_3"])
    parsed = parse_server_stream(refused)
    assert parsed.server is None
    assert parsed.alert == "fatal:protocol_version"


@needs_openssl
def test_hello_retry_request_real_handshake(pki: dict[str, Path]) -> None:
    # The client's default key share (X25519) is not what the server accepts: it must retry.
    client_bytes, server_bytes = openssl_handshake(
        ["-cert", str(pki["ca.pem"]), "-key", str(pki["ca.key"]), "-groups", "P-384"],
        ["-servername", "retry.test"],
    )
    hellos = parse_client_hellos(client_bytes)
    assert [h.server_name for h in hellos] == ["retry.test", "retry.test"]
    assert parse_client_stream(client_bytes) == hellos[0]
    parsed = parse_server_stream(server_bytes)
    assert parsed.server is not None and parsed.server.version == 0x0304
    assert parsed.alert is None


# --- hand-built formats real clients no longer send -------------------------------------------


def test_sslv2_format_client_hello() -> None:
    specs = bytes.fromhex("01008000003500002f0000ff")  # RC4-MD5 (SSLv2), 2 TLS, SCSV
    challenge = bytes(range(16))
    body = b"\x01\x03\x01" + len(specs).to_bytes(2, "big") + b"\x00\x00"
    body += len(challenge).to_bytes(2, "big") + specs + challenge
    data = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    assert looks_like_tls(data)
    hello = parse_client_stream(data)
    assert hello is not None
    assert hello.record_version == 0x0002 and hello.legacy_version == 0x0301
    assert hello.cipher_suites == [0x010080, 0x0035, 0x002F, 0x00FF]
    assert hello.extensions == [] and hello.server_name is None
    assert hello.ja4.startswith("t10i040000_")
    assert parse_client_stream(data[:-1]) is None


def test_hello_retry_second_client_hello_is_found() -> None:
    first = _minimal_client_hello(b"first.test")
    second = _minimal_client_hello(b"second.test")
    stream = first + b"\x14\x03\x03\x00\x01\x01" + second + b"\x17\x03\x03\x00\x02\xab\xcd"
    hellos = parse_client_hellos(stream)
    assert [h.server_name for h in hellos] == ["first.test", "second.test"]
    assert parse_client_stream(stream) == hellos[0]


def _minimal_client_hello(server_name: bytes, extra_extension: bytes = b"") -> bytes:
    """One record holding a small, valid ClientHello with SNI (plus optional raw extension)."""
    sni_entry = b"\x00" + len(server_name).to_bytes(2, "big") + server_name
    sni_list = len(sni_entry).to_bytes(2, "big") + sni_entry
    extensions = b"\x00\x00" + len(sni_list).to_bytes(2, "big") + sni_list + extra_extension
    body = (
        b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
        + len(extensions).to_bytes(2, "big") + extensions
    )  # fmt: skip
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


# --- malformed input -------------------------------------------------------------------------


def test_extension_length_past_the_end_is_named() -> None:
    bad_alpn = b"\x00\x10\x00\x28" + b"\x00\x0a\x02h2"  # says 40 bytes, carries 5
    record = _minimal_client_hello(b"x.test", bad_alpn)
    with pytest.raises(TLSParseError, match=r"extension 0x0010 length 40 exceeds remaining"):
        parse_client_stream(record)


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x00\x00",  # zero-length handshake record
        b"\x17\x03\x03\x00\x05hello",  # application data first
        b"\x16\x03\x01\xff\xff" + b"\x00" * 10,  # record longer than TLS allows
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # ServerHello where a ClientHello belongs
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x80\x05\x07\x00\x02\x00\x00",  # SSLv2 header, wrong message type
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # ClientHello cut inside
    ],
)
def test_malformed_client_streams_raise_tls_parse_error(data: bytes) -> None:
    with pytest.raises(TLSParseError):
        parse_client_stream(data)


def test_incomplete_and_empty_inputs() -> None:
    assert parse_client_stream(b"") is None
    assert parse_client_stream(b"\x16\x03") is None
    assert parse_client_stream(b"\x16\x03\x01\x01\x00\x01\x00") is None
    assert parse_server_stream(b"") == ServerParse(server=None, certificates=[], alert=None)
    assert parse_server_stream(b"\x16\x03\x03\x00\x50\x02").server is None
    with pytest.raises(TLSParseError):
        parse_client_hello(b"")
    with pytest.raises(TLSParseError):
        parse_server_stream(b"\x15\x03\x03\x00\x01\x02")  # an alert needs two bytes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x16\x03\x01\x02\x00", True),
        (b"\x16\x03\x04\x00\x10", True),
        (b"\x16\x03\x05\x00\x10", False),
        (b"\x16\x02\x00\x00\x10", False),
        (b"\x16\x03\x01\x00\x00", False),
        (b"\x16\x03\x01\x50\x01", False),
        (b"\x16\x03\x01", False),
        (b"\x80\x2e\x01\x00\x02", True),
        (b"\x80\x2e\x01\x03\x01", True),
        (b"POST /v1/chat", False),
    ],
)
def test_looks_like_tls(data: bytes, expected: bool) -> None:
    assert looks_like_tls(data) is expected


@pytest.fixture(scope="module")
def real_streams(pki: dict[str, Path]) -> Iterator[tuple[bytes, bytes]]:
    weak = "DEFAULT:@SECLEVEL=0"
    yield openssl_handshake(
        ["-tls1_2", "-cipher", weak, "-cert", str(pki["leaf.pem"]), "-key", str(pki["leaf.key"]),
         "-cert_chain", str(pki["ca.pem"])],
        ["-tls1_2", "-cipher", weak, "-servername", "fuzz.test", "-alpn", "h2"],
    )  # fmt: skip


@needs_openssl
def test_random_mutations_never_raise_anything_else(real_streams: tuple[bytes, bytes]) -> None:
    client_bytes, server_bytes = real_streams
    assert parse_client_stream(client_bytes) is not None
    assert len(parse_server_stream(server_bytes).certificates) == 2
    rng = random.Random(20260101)
    for original, parse in (
        (client_bytes, parse_client_stream),
        (server_bytes, parse_server_stream),
    ):
        original = original[:4000]
        for _ in range(400):
            mutated = bytearray(original)
            for _ in range(rng.randint(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            cut = rng.randrange(len(mutated) + 1)
            with contextlib.suppress(TLSParseError):
                parse(bytes(mutated[:cut]))  # type: ignore[operator]


def _refragment(stream: bytes, size: int) -> bytes:
    """The leading handshake records of ``stream`` re-cut into records of ``size`` bytes."""
    handshake = b""
    pos = 0
    while pos + 5 <= len(stream) and stream[pos] == 0x16:
        length = int.from_bytes(stream[pos + 3 : pos + 5], "big")
        handshake += stream[pos + 5 : pos + 5 + length]
        pos += 5 + length
    version = stream[1:3]
    return b"".join(
        b"\x16" + version + len(chunk).to_bytes(2, "big") + chunk
        for chunk in (handshake[i : i + size] for i in range(0, len(handshake), size))
    )


@needs_openssl
def test_server_messages_split_across_and_sharing_records(
    real_streams: tuple[bytes, bytes],
) -> None:
    _, server_bytes = real_streams
    whole = parse_server_stream(server_bytes)
    assert whole.server is not None and len(whole.certificates) == 2
    # One message over many records (97 bytes each), and every message in a single record.
    assert parse_server_stream(_refragment(server_bytes, 97)) == whole
    assert parse_server_stream(_refragment(server_bytes, 16384)) == whole
    # A prefix ending inside the Certificate message gives the ServerHello and no certificates.
    cut = parse_server_stream(_refragment(server_bytes, 97)[:300])
    assert cut.server == whole.server and cut.certificates == []
