#!/usr/bin/env python3
"""Record the shipped sample captures (``samples/*.pcap``) from real traffic, reproducibly.

Where it sits: it makes the *input* of the offline analyser (``auditor pcap``), nothing more.
Run it as root (tcpdump and ``ip netns`` need it):

    sudo python samples/make_samples.py            # writes samples/egress-demo.pcap

Everything happens inside two network namespaces this script creates and removes:

    client namespace                         server namespace
    10.42.0.10 (veth) ───── veth pair ─────  10.42.0.1 gateway, 10.42.0.53 DNS resolver
    real clients: openai / anthropic SDKs,   the published public addresses of the real
    curl, openssl s_client, tlslite-ng       services (on its loopback), each with a server

The namespaces have no link to the host or the Internet, so a packet addressed to a public
address cannot leave them. Because the servers own those public addresses, the capture needs
no address rewriting: DNS answers, SNI and IP headers agree as recorded. The only change made
afterwards is recomputing checksums (veth leaves them to an offload that never happens).

tcpdump runs in the client namespace on its veth, like a tap on a corporate egress link.
The test suite never runs this script; ``tests/test_samples.py`` checks what it produced.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLES_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = SAMPLES_DIR / "egress-demo.pcap"

# --- the staged network ----------------------------------------------------------------------

CLIENT_ADDRESS = "10.42.0.10"  # the workstation whose egress is audited
GATEWAY_ADDRESS = "10.42.0.1"
RESOLVER_ADDRESS = "10.42.0.53"  # the site's DNS resolver (tcpdump sees DNS on port 53)
PREFIX_LEN = 24
CLIENT_VETH = "aea-cli0"
SERVER_VETH = "aea-srv0"


@dataclass(frozen=True)
class StagedHost:
    """A destination in the sample: the name clients resolve, the address the DNS answers."""

    name: str
    address: str
    port: int
    role: str  # what the server there does; see serve()
    address_basis: str  # where the address comes from (README repeats it)


# Addresses: the real services' published ranges where one exists; RFC 5737 documentation
# addresses for the made-up hosts, so no real third party is named by accident.
OPENAI = StagedHost(
    "api.openai.com",
    "162.159.140.245",
    443,
    "https-llm",
    "an address api.openai.com resolves to publicly, inside Cloudflare's published 162.158.0.0/15"
    " (https://www.cloudflare.com/ips-v4)",
)
ANTHROPIC = StagedHost(
    "api.anthropic.com",
    "160.79.104.10",
    443,
    "https-llm",
    "inside Anthropic's published inbound range 160.79.104.0/23"
    " (https://docs.anthropic.com/en/api/ip-addresses)",
)
DEEPSEEK = StagedHost(
    "api.deepseek.com",
    "47.97.128.10",
    443,
    "https-llm",
    "stand-in Chinese address: an Alibaba Cloud (Aliyun, Hangzhou) block 47.96.0.0/12, country CN"
    " in APNIC's delegation data; not claimed to be DeepSeek's own address",
)
RELAY = StagedHost(
    "api.chatanywhere.tech",
    "120.55.20.30",
    443,
    "https-llm",
    "stand-in Chinese address (Aliyun block 120.55.0.0/16, CN in APNIC's delegation data):"
    " chatanywhere/GPT_API_free's README calls this host its domestic (in-China) relay",
)
GATEWAY = StagedHost(
    "llm-gateway.example",
    "203.0.113.80",
    8080,
    "http-llm-one-api-relay",
    "RFC 5737 documentation address (TEST-NET-3) for a made-up host",
)
# A second cleartext LLM endpoint: the same OpenAI key goes here too (key reuse), with a
# prompt that carries fake personal data and a fake cloud key.
MIRROR = StagedHost(
    "llm-mirror.example",
    "203.0.113.81",
    8080,
    "http-llm",
    "RFC 5737 documentation address (TEST-NET-3) for a made-up host",
)
TLS10_HOST = StagedHost(
    "tls10.legacy-llm.example",
    "198.51.100.10",
    443,
    "openssl-tls1.0-weak-cert",
    "RFC 5737 documentation address (TEST-NET-2)",
)
EXPIRED_HOST = StagedHost(
    "expired.legacy-llm.example",
    "198.51.100.11",
    443,
    "https-expired-cert",
    "RFC 5737 documentation address (TEST-NET-2)",
)
RC4_HOST = StagedHost(
    "rc4.legacy-llm.example",
    "198.51.100.12",
    443,
    "tlslite-rc4",
    "RFC 5737 documentation address (TEST-NET-2)",
)
TRIPLE_DES_HOST = StagedHost(
    "3des.legacy-llm.example",
    "198.51.100.13",
    443,
    "tlslite-3des",
    "RFC 5737 documentation address (TEST-NET-2)",
)
NULL_HOST = StagedHost(
    "null.legacy-llm.example",
    "198.51.100.14",
    443,
    "openssl-null-cipher",
    "RFC 5737 documentation address (TEST-NET-2)",
)
NOT_YET_VALID_HOST = StagedHost(
    "future.legacy-llm.example",
    "198.51.100.15",
    443,
    "https-not-yet-valid-cert",
    "RFC 5737 documentation address (TEST-NET-2)",
)
BAD_CERT_HOST = StagedHost(
    "badcert.legacy-llm.example",
    "198.51.100.16",
    443,
    "tlslite-truncated-cert",
    "RFC 5737 documentation address (TEST-NET-2)",
)
AGGREGATOR = StagedHost(
    "openrouter.ai",
    "104.18.2.115",
    443,
    "https-llm",
    "stand-in inside Cloudflare's published 104.16.0.0/13 (https://www.cloudflare.com/ips-v4);"
    " OpenRouter's own address is not verified here",
)
SUSPECTED_RELAY = StagedHost(
    "api.kourichat.com",
    "203.0.113.90",
    443,
    "https-llm",
    "RFC 5737 documentation address (TEST-NET-3): the relay's real address is not known",
)
NO_SNI_HOST = StagedHost(
    "nosni.legacy-llm.example",
    "198.51.100.20",
    443,
    "openssl-default",
    "RFC 5737 documentation address (TEST-NET-2)",
)

STAGED_HOSTS: tuple[StagedHost, ...] = (
    OPENAI,
    ANTHROPIC,
    DEEPSEEK,
    RELAY,
    AGGREGATOR,
    SUSPECTED_RELAY,
    GATEWAY,
    MIRROR,
    TLS10_HOST,
    EXPIRED_HOST,
    NOT_YET_VALID_HOST,
    BAD_CERT_HOST,
    RC4_HOST,
    TRIPLE_DES_HOST,
    NULL_HOST,
    NO_SNI_HOST,
)
# The TLS 1.0 server's certificate names a different host than the one the client asked for.
MISMATCHED_CERT_NAME = "gateway.intranet.example"

# OpenSSL 3 refuses TLS 1.0, 1024-bit keys, SHA-1 and NULL ciphers at its default security
# level; level 0 lets this old-fashioned traffic happen at all.
OPENSSL_LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
OPENSSL_NULL_CIPHERS = "NULL-SHA256:@SECLEVEL=0"


# --- fake credentials ------------------------------------------------------------------------


def fake_token(length: int, alphabet_lower: bool = False) -> str:
    """``length`` key characters that read as fake: 'FAKE' then random hex."""
    text = ("fake" if alphabet_lower else "FAKE") + secrets.token_hex(length)
    return text[:length]


@dataclass(frozen=True)
class FakeKeys:
    """Keys shaped like real ones (so key-format signatures match) but obviously fake."""

    openai: str
    anthropic: str
    deepseek: str
    relay: str
    aws: str  # an AWS access key id, pasted into a prompt


    @classmethod
    def generate(cls) -> FakeKeys:
        # Shapes from key_patterns.json (gitleaks / trufflehog): sk-proj-<74>T3BlbkFJ<74>,
        # sk-ant-api03-<93>AA, DeepSeek sk-<32 lower-case>, one-api style relay sk-<48>.
        return cls(
            openai="sk-proj-" + fake_token(74) + "T3BlbkFJ" + fake_token(74),
            anthropic="sk-ant-api03-" + fake_token(93) + "AA",
            deepseek="sk-" + fake_token(32, alphabet_lower=True),
            relay="sk-" + fake_token(48),
            # gitleaks aws-access-token: AKIA + 16 of [A-Z2-7]
            aws="AKIAFAKE" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                                     for _ in range(12)),
        )


def sensitive_prompt(keys: FakeKeys) -> str:
    """A prompt with fake personal data and a fake cloud key in it, made on every run: the
    Visa test card number (Luhn-valid, issued to nobody), an address at example.com (RFC 2606)
    and the fake AWS key."""
    customer = f"jane.{secrets.token_hex(3)}@example.com"
    return (
        f"Customer {customer} says card 4111 1111 1111 1111 was charged twice. "
        f"Our billing job runs with AWS key {keys.aws}; draft a reply and a fix."
    )


PROMPTS = {
    "openai": "Summarise the attached quarterly incident report in three bullet points.",
    "deepseek": "Translate our internal onboarding checklist into Simplified Chinese.",
    "relay": "Draft a polite reply to a customer asking for a refund on order 4471.",
    "anthropic": "List the open risks in this vendor contract clause by clause.",
    "aggregator": "Compare these two pricing pages and list the differences.",
    "suspected-relay": "Write a short product description for a steel water bottle.",
    "gateway-openai": "Explain this stack trace from the billing service and suggest a fix.",
    "gateway-anthropic": "Rewrite this product announcement for a technical audience.",
    "gateway-anthropic-curl": "Extract the action items from these meeting notes.",
    "gateway-gzip": "Classify these five support tickets by urgency.",
}


# --- servers (run inside the server namespace) -------------------------------------------------


# The one-api / new-api relay's per-channel model_mapping (one-api relay/controller/text.go:
# OriginModelName -> ActualModelName): the gateway answers a request for gpt-4o with gpt-4o-mini.
RELAY_MODEL_MAPPING = {"gpt-4o": "gpt-4o-mini"}


def one_api_request_id() -> str:
    """one-api's X-Oneapi-Request-Id: YYYYMMDDhhmmss, UnixNano % 1e9, 8 random digits
    (songquanpeng/one-api common/helper/helper.go:108-110)."""
    now = time.time()
    return (
        time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        + str(int(now * 1e9) % 1_000_000_000)
        + "".join(secrets.choice("0123456789") for _ in range(8))
    )


def openai_completion(
    request: dict[str, Any], model_mapping: dict[str, str] | None = None
) -> dict[str, Any]:
    """A chat.completion object as OpenAI's API returns it (shape from its API reference)."""
    model = str(request.get("model") or "gpt-4o-mini")
    model = (model_mapping or {}).get(model, model)
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Here is the summary you asked for."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
    }


def anthropic_message(request: dict[str, Any]) -> dict[str, Any]:
    """A Messages API response as Anthropic's API returns it."""
    return {
        "id": "msg_01" + secrets.token_hex(11),
        "type": "message",
        "role": "assistant",
        "model": str(request.get("model") or "claude-sonnet-4-5"),
        "content": [{"type": "text", "text": "Here are the open risks, clause by clause."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 19, "output_tokens": 11},
    }


class LLMApiHandler(http.server.BaseHTTPRequestHandler):
    """Answers OpenAI chat completions and Anthropic messages; anything else gets a short 200."""

    protocol_version = "HTTP/1.1"
    server_version = "sample-llm-api"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the capture is the log
        pass

    @property
    def is_one_api_relay(self) -> bool:
        """llm-gateway.example answers like a one-api / new-api relay (headers, model swap)."""
        return self.server.server_address[0] == GATEWAY.address

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + secrets.token_hex(8))
        if self.is_one_api_relay:
            # one-api middleware/request-id.go: on every response
            self.send_header("X-Oneapi-Request-Id", one_api_request_id())
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            raw = gzip.decompress(raw)
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            self._reply(400, {"error": {"message": "invalid JSON body"}})
            return
        if self.path.rstrip("/").endswith("/chat/completions"):
            mapping = RELAY_MODEL_MAPPING if self.is_one_api_relay else None
            self._reply(200, openai_completion(request, mapping))
        elif self.path.rstrip("/").endswith("/messages"):
            self._reply(200, anthropic_message(request))
        else:
            self._reply(404, {"error": {"message": f"no route for {self.path}"}})


class ThreadingHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_http_server(address: str, port: int, tls: ssl.SSLContext | None) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, port), LLMApiHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def server_tls_context(
    cert_pem: Path, key_pem: Path, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_pem), str(key_pem))
    if max_version is not None:
        # Certificates travel encrypted in TLS 1.3; 1.2 keeps them visible on the wire.
        context.maximum_version = max_version
    return context


def serve_dns(address: str, answers: dict[str, str], stop: threading.Event) -> None:
    """A small authoritative-style DNS responder: A records for the staged names."""
    from scapy.layers.dns import DNS, DNSRR

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        try:
            query = DNS(data)
            question = query.qd[0]
            name = question.qname.decode().rstrip(".").lower()
        except Exception:  # a malformed query is dropped, as a resolver would
            continue
        reply = DNS(id=query.id, qr=1, aa=1, rd=query.rd, ra=1, qd=query.qd)
        if name not in answers:
            reply.rcode = 3  # NXDOMAIN (e.g. search-domain probes)
        elif question.qtype == 1:  # A
            reply.an = DNSRR(rrname=question.qname, type="A", ttl=300, rdata=answers[name])
        # other types for a known name: NOERROR with no answer, like a real zone without AAAA
        sock.sendto(bytes(reply), peer)


def serve_tlslite(
    address: str,
    cert_pem: Path,
    key_pem: Path,
    settings: Any,
    stop: threading.Event,
    truncate_certificate: bool = False,
) -> None:
    """A tlslite-ng server: for suites OpenSSL 3 no longer speaks, or a broken certificate."""
    from tlslite import TLSConnection, X509CertChain, parsePEMKey

    chain = X509CertChain()
    chain.parsePemList(cert_pem.read_text())
    if truncate_certificate:
        # A server that sends a cut-off certificate (its first 120 DER bytes): tlslite sends
        # whatever writeBytes returns, while still using the real key for the handshake.
        leaf = chain.x509List[0]
        cut = bytes(leaf.bytes[:120])
        leaf.writeBytes = lambda: bytearray(cut)  # type: ignore[method-assign]
    private_key = parsePEMKey(key_pem.read_text(), private=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 443))
    listener.listen(4)
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            raw, _ = listener.accept()
        except TimeoutError:
            continue
        connection = TLSConnection(raw)
        try:
            connection.handshakeServer(certChain=chain, privateKey=private_key, settings=settings)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                request += chunk
            body = b'{"status": "ok"}'
            connection.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            connection.close()
        except Exception as exc:  # a failed handshake is reported, the server goes on
            print(f"tlslite server {address}: {exc}", file=sys.stderr, flush=True)
            raw.close()


def tls12_tlslite_settings() -> Any:
    """tlslite-ng defaults capped at TLS 1.2, so the certificate stays visible on the wire."""
    from tlslite import HandshakeSettings

    settings = HandshakeSettings()
    settings.maxVersion = (3, 3)
    return settings


def legacy_tlslite_settings(cipher: str) -> Any:
    """Handshake settings allowing only RSA key exchange with ``cipher`` and SHA-1 MAC."""
    from tlslite import HandshakeSettings

    settings = HandshakeSettings()
    settings.cipherNames = [cipher]
    settings.keyExchangeNames = ["rsa"]
    settings.macNames = ["sha"]
    settings.maxVersion = (3, 3)  # TLS 1.2: RC4 and 3DES suites do not exist in TLS 1.3
    return settings


def serve(workdir: Path) -> None:
    """Run every Python-made server of the sample until SIGTERM (server namespace)."""
    certs = workdir / "certs"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    answers = {host.name: host.address for host in STAGED_HOSTS}
    threading.Thread(target=serve_dns, args=(RESOLVER_ADDRESS, answers, stop), daemon=True).start()

    for host in (OPENAI, ANTHROPIC, DEEPSEEK, RELAY, AGGREGATOR, SUSPECTED_RELAY):
        context = server_tls_context(certs / f"{host.name}.pem", certs / f"{host.name}.key")
        start_http_server(host.address, host.port, context)
    expired = server_tls_context(
        certs / f"{EXPIRED_HOST.name}.pem",
        certs / f"{EXPIRED_HOST.name}.key",
        max_version=ssl.TLSVersion.TLSv1_2,
    )
    start_http_server(EXPIRED_HOST.address, EXPIRED_HOST.port, expired)
    not_yet_valid = server_tls_context(
        certs / f"{NOT_YET_VALID_HOST.name}.pem",
        certs / f"{NOT_YET_VALID_HOST.name}.key",
        max_version=ssl.TLSVersion.TLSv1_2,
    )
    start_http_server(NOT_YET_VALID_HOST.address, NOT_YET_VALID_HOST.port, not_yet_valid)
    start_http_server(GATEWAY.address, GATEWAY.port, None)
    start_http_server(MIRROR.address, MIRROR.port, None)
    tlslite_servers = (
        (RC4_HOST, legacy_tlslite_settings("rc4"), False),
        (TRIPLE_DES_HOST, legacy_tlslite_settings("3des"), False),
        (BAD_CERT_HOST, tls12_tlslite_settings(), True),
    )
    for host, settings, truncate in tlslite_servers:
        threading.Thread(
            target=serve_tlslite,
            args=(host.address, certs / f"{host.name}.pem", certs / f"{host.name}.key"),
            kwargs={"settings": settings, "stop": stop, "truncate_certificate": truncate},
            daemon=True,
        ).start()
    time.sleep(0.5)  # let the threads bind before announcing readiness
    print("ready", flush=True)
    stop.wait()


# --- clients (run inside the client namespace) -------------------------------------------------


def run_openai_client(base_url: str | None, api_key: str, model: str, prompt: str, ca: str) -> None:
    """One chat completion with the real openai SDK (default base_url = api.openai.com)."""
    import openai

    http_client = openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca))
    client = openai.OpenAI(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=10, http_client=http_client
    )
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    print(reply.choices[0].message.content)


def run_anthropic_client(base_url: str, api_key: str, model: str, prompt: str) -> None:
    """One Messages API call with the real anthropic SDK."""
    import anthropic

    client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=10)
    reply = client.messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}]
    )
    print(reply.content[0].text)


def run_tlslite_client(host: str, cipher: str) -> None:
    """An old-fashioned client offering only one RSA/SHA-1 cipher suite (RC4 or 3DES)."""
    from tlslite import TLSConnection

    connection = TLSConnection(socket.create_connection((host, 443), timeout=10))
    connection.handshakeClientCert(settings=legacy_tlslite_settings(cipher), serverName=host)
    connection.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    response = b""
    while True:
        chunk = connection.recv(4096)
        if not chunk:
            break
        response += chunk
    connection.close()
    print(response.split(b"\r\n", 1)[0].decode())


# --- recording (the host side) ---------------------------------------------------------------


class RecordingError(RuntimeError):
    """The sample could not be recorded; the message says what to fix."""


def run(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a set-up command; its failure becomes one line naming the command."""
    try:
        return subprocess.run(list(command), check=True, text=True, capture_output=True, **kwargs)
    except subprocess.CalledProcessError as exc:
        last_line = (exc.stderr or "").strip().splitlines()[-1:] or ["no error output"]
        raise RecordingError(f"`{' '.join(command[:6])}` failed: {last_line[0]}") from None


class StagedNetwork:
    """The two namespaces and the veth between them; removed again by ``close``."""

    def __init__(self) -> None:
        suffix = str(os.getpid())
        self.client_ns = f"aea-samples-cli-{suffix}"
        self.server_ns = f"aea-samples-srv-{suffix}"
        self.netns_etc = Path("/etc/netns") / self.client_ns

    def create(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            run(["ip", "netns", "add", ns])
            # IPv6 off before any link is up, so neighbour discovery does not clutter the sample.
            for knob in ("all", "default"):
                run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "sh",
                        "-c",
                        f"echo 1 > /proc/sys/net/ipv6/conf/{knob}/disable_ipv6",
                    ]
                )
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(
            [
                "ip",
                "link",
                "add",
                CLIENT_VETH,
                "netns",
                self.client_ns,
                "type",
                "veth",
                "peer",
                "name",
                SERVER_VETH,
                "netns",
                self.server_ns,
            ]
        )
        run(
            [
                "ip",
                "-n",
                self.client_ns,
                "addr",
                "add",
                f"{CLIENT_ADDRESS}/{PREFIX_LEN}",
                "dev",
                CLIENT_VETH,
            ]
        )
        for address in (GATEWAY_ADDRESS, RESOLVER_ADDRESS):
            run(
                [
                    "ip",
                    "-n",
                    self.server_ns,
                    "addr",
                    "add",
                    f"{address}/{PREFIX_LEN}",
                    "dev",
                    SERVER_VETH,
                ]
            )
        for host in STAGED_HOSTS:
            run(["ip", "-n", self.server_ns, "addr", "add", f"{host.address}/32", "dev", "lo"])
        run(["ip", "-n", self.client_ns, "link", "set", CLIENT_VETH, "up"])
        run(["ip", "-n", self.server_ns, "link", "set", SERVER_VETH, "up"])
        run(["ip", "-n", self.client_ns, "route", "add", "default", "via", GATEWAY_ADDRESS])
        # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc: the clients resolve names
        # through the staged resolver only, so their own DNS queries land in the capture.
        self.netns_etc.mkdir(parents=True, exist_ok=True)
        (self.netns_etc / "resolv.conf").write_text(
            f"nameserver {RESOLVER_ADDRESS}\noptions timeout:2 attempts:2\n"
        )
        (self.netns_etc / "hosts").write_text("127.0.0.1 localhost\n")
        self.check_isolated()

    def check_isolated(self) -> None:
        """Refuse to go on unless the only links are lo and the veth pair between the two."""
        for ns, veth in ((self.client_ns, CLIENT_VETH), (self.server_ns, SERVER_VETH)):
            links = run(["ip", "-n", ns, "-o", "link", "show"]).stdout
            names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
            if names != {"lo", veth}:
                raise RecordingError(f"namespace {ns} has unexpected links: {sorted(names)}")
        if "default" in run(["ip", "-n", self.server_ns, "route"]).stdout:
            raise RecordingError(f"namespace {self.server_ns} must not have a default route")

    def in_client(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns, *command]

    def in_server(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *command]

    def close(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.netns_etc, ignore_errors=True)


def make_certificates(certs: Path) -> Path:
    """Certificates for every TLS server; returns the path of the sample CA."""
    import trustme

    certs.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="AI Egress Auditor sample CA", key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))
    now = datetime.datetime.now(datetime.UTC)
    for host in (
        OPENAI,
        ANTHROPIC,
        DEEPSEEK,
        RELAY,
        AGGREGATOR,
        SUSPECTED_RELAY,
        RC4_HOST,
        NULL_HOST,
        NO_SNI_HOST,
        EXPIRED_HOST,
        NOT_YET_VALID_HOST,
        BAD_CERT_HOST,
    ):
        validity: dict[str, datetime.datetime] = {}
        if host is EXPIRED_HOST:
            validity = {
                "not_before": now - datetime.timedelta(days=400),
                "not_after": now - datetime.timedelta(days=35),
            }
        elif host is NOT_YET_VALID_HOST:
            validity = {
                "not_before": now + datetime.timedelta(days=30),
                "not_after": now + datetime.timedelta(days=400),
            }
        leaf = ca.issue_cert(host.name, key_type=trustme.KeyType.RSA, **validity)
        leaf.cert_chain_pems[0].write_to_path(str(certs / f"{host.name}.pem"))
        leaf.private_key_pem.write_to_path(str(certs / f"{host.name}.key"))

    # The 3DES server's certificate is issued by the sample CA but signed with SHA-1 (a
    # self-signed one would not do: nobody verifies a self-signed certificate's signature).
    ca.private_key_pem.write_to_path(str(certs / "ca.key"))
    sha1_key = certs / f"{TRIPLE_DES_HOST.name}.key"
    sha1_request = certs / f"{TRIPLE_DES_HOST.name}.csr"
    san = certs / "3des-san.cnf"
    san.write_text(f"subjectAltName=DNS:{TRIPLE_DES_HOST.name}\n")
    run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(sha1_key),
            "-subj",
            f"/CN={TRIPLE_DES_HOST.name}",
            "-out",
            str(sha1_request),
        ]
    )
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(sha1_request),
            "-sha1",
            "-days",
            "365",
            "-CA",
            str(certs / "ca.pem"),
            "-CAkey",
            str(certs / "ca.key"),
            "-set_serial",
            str(secrets.randbits(63)),
            "-extfile",
            str(san),
            "-out",
            str(certs / f"{TRIPLE_DES_HOST.name}.pem"),
        ]
    )

    # The legacy server: self-signed, 1024-bit RSA, SHA-1, and named for another host.
    # (openssl, because the cryptography package no longer signs with SHA-1.)
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-sha1",
            "-nodes",
            "-days",
            "365",
            "-subj",
            f"/CN={MISMATCHED_CERT_NAME}",
            "-addext",
            f"subjectAltName=DNS:{MISMATCHED_CERT_NAME}",
            "-keyout",
            str(certs / f"{TLS10_HOST.name}.key"),
            "-out",
            str(certs / f"{TLS10_HOST.name}.pem"),
        ]
    )
    return certs / "ca.pem"


def wait_for_line(
    process: subprocess.Popen[str], stream_name: str, marker: str, timeout: float
) -> None:
    """Block until ``marker`` appears on the process's stdout/stderr (or fail clearly)."""
    stream = getattr(process, stream_name)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line.rstrip())
        if marker in line:
            return
    raise RecordingError(f"{process.args[3:]!r} did not print {marker!r}: {' | '.join(seen)}")


def stop_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fix_checksums(raw: Path, output: Path) -> int:
    """Copy ``raw`` to ``output`` with IPv4/TCP/UDP checksums recomputed; returns packets.

    Captured on the sending side of a veth, checksums are left for an offload that never runs,
    so tshark and strict parsers would call every packet corrupt.
    """
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import PcapReader, PcapWriter

    count = 0
    with PcapReader(str(raw)) as reader, PcapWriter(str(output), sync=True) as writer:
        for packet in reader:
            if IP in packet:
                del packet[IP].chksum
                for layer in (TCP, UDP):
                    if layer in packet:
                        del packet[layer].chksum
                rebuilt = packet.__class__(bytes(packet))
                rebuilt.time = packet.time
                if len(rebuilt) != len(packet):
                    raise RecordingError(f"packet {count + 1} changed length while fixing sums")
                packet = rebuilt
            writer.write(packet)
            count += 1
    return count


@dataclass
class ClientStep:
    """One piece of traffic: a description for the log and the command that makes it."""

    what: str
    command: list[str]
    stdin: str | None = None
    expect_failure: bool = False  # the client must give up (e.g. on a broken certificate)


def client_steps(net: StagedNetwork, ca: Path, keys: FakeKeys, workdir: Path) -> list[ClientStep]:
    me = [sys.executable, str(Path(__file__).resolve())]
    http_get = "GET / HTTP/1.0\r\nHost: {}\r\n\r\n"
    gzip_body = workdir / "gateway-body.json.gz"
    gzip_body.write_bytes(
        gzip.compress(
            json.dumps(
                {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": PROMPTS["gateway-gzip"]}],
                }
            ).encode()
        )
    )
    gateway_anthropic_body = json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": PROMPTS["gateway-anthropic-curl"]}],
        }
    )
    mirror_body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": sensitive_prompt(keys)}],
        }
    )
    anthropic_body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": PROMPTS["anthropic"]}],
        }
    )

    def s_client(host: StagedHost, *options: str, expect_failure: bool = False) -> ClientStep:
        return ClientStep(
            f"openssl s_client {' '.join(options)} -> {host.name}",
            net.in_client(
                "openssl", "s_client", "-connect", f"{host.name}:{host.port}", "-ign_eof", *options
            ),
            stdin=http_get.format(host.name),
            expect_failure=expect_failure,
        )

    def openai_sdk(
        what: str, base_url: str | None, key: str, model: str, prompt: str
    ) -> ClientStep:
        base = ["--base-url", base_url] if base_url else []  # None: the SDK's own default
        return ClientStep(
            f"openai SDK -> {what}",
            net.in_client(
                *me,
                "openai-client",
                *base,
                "--api-key",
                key,
                "--model",
                model,
                "--prompt",
                PROMPTS[prompt],
                "--ca",
                str(ca),
            ),
        )

    def curl(what: str, url: str, *options: str) -> ClientStep:
        return ClientStep(f"curl -> {what}", net.in_client("curl", "-sS", *options, url))

    gateway = f"http://{GATEWAY.name}:{GATEWAY.port}"
    anthropic_headers = (
        "-H",
        "anthropic-version: 2023-06-01",
        "-H",
        "content-type: application/json",
    )
    return [
        openai_sdk("api.openai.com (official)", None, keys.openai, "gpt-4o-mini", "openai"),
        curl(
            "api.anthropic.com /v1/messages (official)",
            f"https://{ANTHROPIC.name}/v1/messages",
            "--cacert",
            str(ca),
            "-H",
            f"x-api-key: {keys.anthropic}",
            *anthropic_headers,
            "--data",
            anthropic_body,
        ),
        openai_sdk(
            "api.deepseek.com (official, CN)",
            f"https://{DEEPSEEK.name}",
            keys.deepseek,
            "deepseek-chat",
            "deepseek",
        ),
        openai_sdk(
            "api.chatanywhere.tech (confirmed relay)",
            f"https://{RELAY.name}/v1",
            keys.relay,
            "gpt-4o",
            "relay",
        ),
        openai_sdk(
            "openrouter.ai (aggregator)",
            f"https://{AGGREGATOR.name}/api/v1",
            keys.relay,
            "anthropic/claude-sonnet-4.5",
            "aggregator",
        ),
        openai_sdk(
            "api.kourichat.com (suspected relay)",
            f"https://{SUSPECTED_RELAY.name}/v1",
            keys.relay,
            "gemini-2.5-flash",
            "suspected-relay",
        ),
        openai_sdk(
            "http://llm-gateway.example:8080 (cleartext; the relay swaps gpt-4o for gpt-4o-mini)",
            f"{gateway}/v1",
            keys.openai,
            "gpt-4o",
            "gateway-openai",
        ),
        ClientStep(
            "anthropic SDK -> http://llm-gateway.example:8080 (cleartext)",
            net.in_client(
                *me,
                "anthropic-client",
                "--base-url",
                gateway,
                "--api-key",
                keys.anthropic,
                "--model",
                "claude-sonnet-4-5",
                "--prompt",
                PROMPTS["gateway-anthropic"],
            ),
        ),
        curl(
            "http://llm-gateway.example:8080/v1/messages, x-api-key (cleartext)",
            f"{gateway}/v1/messages",
            "-H",
            f"x-api-key: {keys.anthropic}",
            *anthropic_headers,
            "--data",
            gateway_anthropic_body,
        ),
        curl(
            "http://llm-gateway.example:8080, gzip-compressed body (cleartext)",
            f"{gateway}/v1/chat/completions",
            "-H",
            f"Authorization: Bearer {keys.openai}",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            f"@{gzip_body}",
        ),
        curl(
            "http://llm-mirror.example:8080, the same OpenAI key, a prompt with personal data",
            f"http://{MIRROR.name}:{MIRROR.port}/v1/chat/completions",
            "-H",
            f"Authorization: Bearer {keys.openai}",
            "-H",
            "Content-Type: application/json",
            "--data",
            mirror_body,
        ),
        s_client(
            TLS10_HOST, "-servername", TLS10_HOST.name, "-tls1", "-cipher", OPENSSL_LEGACY_CIPHERS
        ),
        curl(
            "expired.legacy-llm.example (expired certificate, --insecure)",
            f"https://{EXPIRED_HOST.name}/",
            "--insecure",
        ),
        curl(
            "future.legacy-llm.example (certificate not yet valid, --insecure)",
            f"https://{NOT_YET_VALID_HOST.name}/",
            "--insecure",
        ),
        ClientStep(
            "tlslite-ng -> rc4.legacy-llm.example (TLS_RSA_WITH_RC4_128_SHA)",
            net.in_client(*me, "tlslite-client", "--host", RC4_HOST.name, "--cipher", "rc4"),
        ),
        ClientStep(
            "tlslite-ng -> 3des.legacy-llm.example (TLS_RSA_WITH_3DES_EDE_CBC_SHA)",
            net.in_client(
                *me, "tlslite-client", "--host", TRIPLE_DES_HOST.name, "--cipher", "3des"
            ),
        ),
        s_client(
            NULL_HOST, "-servername", NULL_HOST.name, "-tls1_2", "-cipher", OPENSSL_NULL_CIPHERS
        ),
        s_client(NO_SNI_HOST, "-noservername"),
        # The client rejects the truncated certificate: the handshake fails with an alert.
        s_client(BAD_CERT_HOST, "-servername", BAD_CERT_HOST.name, "-tls1_2", expect_failure=True),
    ]


def client_environment() -> dict[str, str]:
    """The caller's environment without proxies, so every client talks to the staged servers."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def record(output: Path, keep_raw: bool = False) -> None:
    if os.geteuid() != 0:
        raise RecordingError("run as root: tcpdump and `ip netns` need it")
    for tool in ("ip", "tcpdump", "openssl", "curl"):
        if shutil.which(tool) is None:
            raise RecordingError(f"{tool} not found on PATH")

    workdir = Path(tempfile.mkdtemp(prefix="aea-samples-"))
    net = StagedNetwork()
    processes: list[subprocess.Popen[str]] = []
    env = client_environment()

    def start(command: list[str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        processes.append(process)
        return process

    try:
        ca = make_certificates(workdir / "certs")
        keys = FakeKeys.generate()
        net.create()

        servers = start(
            net.in_server(
                sys.executable, str(Path(__file__).resolve()), "serve", "--workdir", str(workdir)
            )
        )
        wait_for_line(servers, "stdout", "ready", timeout=30)
        certs = workdir / "certs"
        for host, options in (
            (TLS10_HOST, ["-tls1", "-cipher", OPENSSL_LEGACY_CIPHERS]),
            (NULL_HOST, ["-tls1_2", "-cipher", OPENSSL_NULL_CIPHERS]),
            (NO_SNI_HOST, []),  # modern defaults: the missing SNI is the only thing wrong
        ):
            s_server = start(
                net.in_server(
                    "openssl",
                    "s_server",
                    "-accept",
                    f"{host.address}:{host.port}",
                    "-www",
                    "-cert",
                    str(certs / f"{host.name}.pem"),
                    "-key",
                    str(certs / f"{host.name}.key"),
                    *options,
                )
            )
            wait_for_line(s_server, "stdout", "ACCEPT", timeout=10)

        raw = workdir / "raw.pcap"
        # --immediate-mode: without it packets still in the kernel ring at SIGINT are lost.
        tcpdump = start(
            net.in_client(
                "tcpdump",
                "-i",
                CLIENT_VETH,
                "--immediate-mode",
                "-U",
                "-n",
                "-s",
                "0",
                "-w",
                str(raw),
                "ip",
            )
        )
        wait_for_line(tcpdump, "stderr", "listening on", timeout=10)

        for step in client_steps(net, ca, keys, workdir):
            print(f"  {step.what}", flush=True)
            try:
                result = subprocess.run(
                    step.command,
                    input=step.stdin,
                    text=True,
                    capture_output=True,
                    env=env,
                    timeout=60,
                )
            except subprocess.TimeoutExpired:
                raise RecordingError(f"{step.what}: no answer within 60 s") from None
            if (result.returncode != 0) != step.expect_failure:
                raise RecordingError(
                    f"{step.what}: exit status {result.returncode}"
                    f"{' (expected a failure)' if step.expect_failure else ''}: "
                    f"{result.stderr.strip()[-400:]}"
                )
            time.sleep(0.3)  # keeps flows apart in time, which makes the sample easier to read

        time.sleep(1.0)
        tcpdump.send_signal(signal.SIGINT)
        _, tcpdump_log = tcpdump.communicate(timeout=10)
        if "packets captured" not in tcpdump_log:
            raise RecordingError(f"tcpdump did not finish cleanly: {tcpdump_log.strip()}")
        print(
            "  tcpdump: "
            + " ".join(line for line in tcpdump_log.splitlines() if "captured" in line),
            flush=True,
        )

        output.parent.mkdir(parents=True, exist_ok=True)
        packets = fix_checksums(raw, output)
        if keep_raw:
            shutil.copy(raw, output.with_suffix(".raw.pcap"))
        print(f"wrote {output} ({packets} packets, {output.stat().st_size} bytes)")
    finally:
        for process in reversed(processes):
            stop_process(process)
        net.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    rec = commands.add_parser("record", help="record the samples (default; needs root)")
    rec.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    rec.add_argument("--keep-raw", action="store_true", help="also keep the unfixed capture")
    srv = commands.add_parser("serve", help="internal: the servers (server namespace)")
    srv.add_argument("--workdir", type=Path, required=True)
    oai = commands.add_parser("openai-client", help="internal: one openai SDK call")
    oai.add_argument("--base-url")
    oai.add_argument("--api-key", required=True)
    oai.add_argument("--model", required=True)
    oai.add_argument("--prompt", required=True)
    oai.add_argument("--ca", required=True)
    ant = commands.add_parser("anthropic-client", help="internal: one anthropic SDK call")
    ant.add_argument("--base-url", required=True)
    ant.add_argument("--api-key", required=True)
    ant.add_argument("--model", required=True)
    ant.add_argument("--prompt", required=True)
    tll = commands.add_parser("tlslite-client", help="internal: one tlslite-ng handshake")
    tll.add_argument("--host", required=True)
    tll.add_argument("--cipher", choices=("rc4", "3des"), required=True)
    args = parser.parse_args(argv)

    actions: dict[str | None, Callable[[], None]] = {
        None: lambda: record(DEFAULT_OUTPUT),
        "record": lambda: record(args.output, args.keep_raw),
        "serve": lambda: serve(args.workdir),
        "openai-client": lambda: run_openai_client(
            args.base_url, args.api_key, args.model, args.prompt, args.ca
        ),
        "anthropic-client": lambda: run_anthropic_client(
            args.base_url, args.api_key, args.model, args.prompt
        ),
        "tlslite-client": lambda: run_tlslite_client(args.host, args.cipher),
    }
    try:
        actions[args.command]()
    except RecordingError as exc:
        print(f"make_samples: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
