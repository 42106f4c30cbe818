"""The proxy source end to end: a real mitmdump with the addon, real SDKs and curl through it.

    openai / anthropic SDK, curl --HTTPS_PROXY--> mitmdump (auditor proxy) --> local upstreams

Upstreams run on 127.0.0.1 with certificates from a test CA (trustme) that mitmproxy is told to
trust (``ssl_verify_upstream_trusted_ca``). Clients use the real names (``https://api.openai.com``
is the SDK's own default): a test-only addon (``tests/proxy_upstream_map_addon.py``) changes
only the address mitmproxy connects to, so SNI and Host stay what the client sent and the auditor
sees what it would see in front of the real services. Nothing leaves the machine.

Upstreams: an official-imitating one (answers as OpenAI and Anthropic do), a relay-imitating
one that serves another model than the one asked for, a TLS 1.0-only ``openssl s_server``, and
a cleartext HTTP one. Loopback destinations make the detectors call cleartext calls "info"
(the prompt did not leave the machine); the in-process tests cover public addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from proxy_upstreams import Upstream, free_port, wait_for_port

pytestmark = pytest.mark.network

trustme = pytest.importorskip("trustme")
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

REPO = Path(__file__).resolve().parent.parent
NAMES = ("api.openai.com", "api.anthropic.com", "api.chatanywhere.tech", "weak-llm.example.test")
RELAY = "api.chatanywhere.tech"  # a confirmed relay/reseller in signatures/relays.yaml
PLAIN = "llm-plain.example.test"
WEAK = "weak-llm.example.test"


def fake_key(prefix: str) -> str:
    return prefix + "FAKE0test" * 5  # obviously fake, made here


# --- the proxy -----------------------------------------------------------------------------


@dataclass
class ProxyUnderTest:
    process: subprocess.Popen[bytes]
    port: int
    mitm_ca: Path
    findings: Path
    log: Path
    store: Path
    alerts: Path
    connections: Path
    official: Upstream
    relay: Upstream
    plain: Upstream
    weak_port: int | None
    stopped: bool = False
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.mitm_ca))

    def http_client(self, sdk: Any = None) -> Any:
        """The SDK's own HTTP client class (httpx or httpx2, by SDK version) via the proxy."""
        sdk = sdk or openai
        return sdk.DefaultHttpxClient(
            proxy=self.url, verify=self.client_tls(), trust_env=False, timeout=20
        )

    def findings_now(self) -> list[dict[str, Any]]:
        if not self.findings.exists():
            return []
        lines = self.findings.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, host: str, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for finding in self.findings_now():
                if finding["host"] == host and finding["kind"] == kind:
                    return finding
            time.sleep(0.05)
        seen = [(f["host"], f["kind"]) for f in self.findings_now()]
        raise AssertionError(f"no {kind} finding for {host}; findings: {seen}\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """SIGINT, as Ctrl-C: mitmproxy runs done(), which prints the per-host totals."""
        if not self.stopped:
            self.stopped = True
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return int(self.process.returncode)


def start_weak_tls_upstream(cert: Path, key: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    """openssl s_server speaking TLS 1.0 only, with legacy suites allowed."""
    if shutil.which("openssl") is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        ["openssl", "s_server", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", str(cert),
         "-key", str(key), "-accept", f"127.0.0.1:{port}", "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process)
    return process, port


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyUnderTest]:
    if shutil.which("mitmdump") is None:
        pytest.skip("mitmdump not installed (pip install -e '.[proxy]')")
    tmp = tmp_path_factory.mktemp("proxy")
    ca = trustme.CA()
    ca_pem = tmp / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    server_cert = ca.issue_cert(*NAMES)
    cert_pem, key_pem = tmp / "upstream-cert.pem", tmp / "upstream-key.pem"
    server_cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    server_cert.private_key_pem.write_to_path(str(key_pem))

    def tls_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_cert.configure_cert(context)
        return context

    cleanups: list[Callable[[], None]] = []
    try:
        official = Upstream(lambda asked: asked, tls_context())
        cleanups.append(official.stop)
        relay = Upstream(lambda asked: "gpt-3.5-turbo-0125", tls_context())  # swaps the model
        cleanups.append(relay.stop)
        plain = Upstream(lambda asked: asked, None)
        cleanups.append(plain.stop)
        weak = start_weak_tls_upstream(cert_pem, key_pem)
        if weak is not None:
            cleanups.append(lambda: (weak[0].terminate(), weak[0].wait(timeout=5)))
        upstream_map = {
            "api.openai.com:443": official.port,
            "api.anthropic.com:443": official.port,
            f"{RELAY}:443": relay.port,
            f"{PLAIN}:80": plain.port,
        }
        if weak is not None:
            upstream_map[f"{WEAK}:443"] = weak[1]
        port = free_port()
        findings = tmp / "findings.jsonl"
        log_path = tmp / "mitmdump.log"
        confdir = tmp / "confdir"
        command = [
            sys.executable, "-c",
            "from auditor.proxy.launcher import proxy_command; proxy_command()",
            "--mode", "regular", "--listen-host", "127.0.0.1", "--listen-port", str(port),
            "--confdir", str(confdir), "--findings-jsonl", str(findings),
            "--store", str(tmp / "findings.db"), "--sink", f"jsonl:{tmp / 'alerts.jsonl'}",
            "--connections-jsonl", str(tmp / "connections.jsonl"),
            "-s", str(REPO / "tests" / "proxy_upstream_map_addon.py"),
            "--set", f"test_upstream_map={json.dumps(upstream_map)}",
            "--set", f"ssl_verify_upstream_trusted_ca={ca_pem}",
            # Let mitmproxy speak TLS 1.0 upstream, so the weak handshake completes and is seen.
            "--set", "tls_version_server_min=TLS1",
            "--set", "ciphers_server=@SECLEVEL=0:ALL:COMPLEMENTOFALL",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            env.pop(variable, None)
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed in the cleanups
        cleanups.append(log_file.close)
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
        under_test = ProxyUnderTest(
            process=process,
            port=port,
            mitm_ca=confdir / "mitmproxy-ca-cert.pem",
            findings=findings,
            log=log_path,
            store=tmp / "findings.db",
            alerts=tmp / "alerts.jsonl",
            connections=tmp / "connections.jsonl",
            official=official,
            relay=relay,
            plain=plain,
            weak_port=weak[1] if weak is not None else None,
        )
        cleanups.append(under_test.stop)
        try:
            wait_for_port(port, process)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{log_path.read_text(errors='replace')}") from None
        yield under_test
    finally:
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):  # one failed cleanup must not skip the rest
                cleanup()


# --- tests ---------------------------------------------------------------------------------


def test_openai_sdk_call_to_official_endpoint_is_inventoried(proxy: ProxyUnderTest) -> None:
    with proxy.http_client() as http_client:
        client = openai.OpenAI(api_key=fake_key("sk-proj-"), http_client=http_client, max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]
        )
    assert answer.choices[0].message.content == "Paris."
    finding = proxy.wait_for("api.openai.com", "ai-service.inventory")
    assert finding["severity"] == "info"
    assert finding["detector"] == "ai-service"
    # The upstream got the request unchanged (audit only).
    assert proxy.official.requests[-1][1]["model"] == "gpt-4o-mini"


def test_anthropic_sdk_call_passes_and_is_inventoried(proxy: ProxyUnderTest) -> None:
    with proxy.http_client(anthropic) as http_client:
        client = anthropic.Anthropic(
            api_key=fake_key("sk-ant-api03-"), http_client=http_client, max_retries=0
        )
        message = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=32,
            messages=[{"role": "user", "content": "Capital of France?"}],
        )
    assert message.content[0].text == "Paris."
    assert message.model == "claude-haiku-4-5"
    finding = proxy.wait_for("api.anthropic.com", "ai-service.inventory")
    assert finding["severity"] == "info"


def test_relay_that_swaps_the_model_is_a_high_finding(proxy: ProxyUnderTest) -> None:
    with proxy.http_client() as http_client:
        client = openai.OpenAI(
            api_key=fake_key("sk-"),
            base_url=f"https://{RELAY}/v1",
            http_client=http_client,
            max_retries=0,
        )
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Capital of France?"}]
        )
    assert answer.model == "gpt-3.5-turbo-0125"  # what the relay really served
    finding = proxy.wait_for(RELAY, "relay-domain.known")
    assert finding["severity"] == "high"
    assert finding["detector"] == "relay-domain"
    assert finding["dst_ip"] == "127.0.0.1"


def test_streamed_completion_reaches_the_client_chunk_by_chunk(proxy: ProxyUnderTest) -> None:
    proxy.official.release_stream.clear()
    with proxy.http_client() as http_client:
        client = openai.OpenAI(api_key=fake_key("sk-proj-"), http_client=http_client, max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
        )
        chunks = iter(stream)
        first = next(chunks)  # arrives while the upstream still holds the rest
        assert first.choices[0].delta.content == "Hel"
        proxy.official.release_stream.set()
        rest = [c.choices[0].delta.content for c in chunks if c.choices]
    assert proxy.official.stream_released_by_client is True, "the proxy buffered the stream"
    assert "".join(["Hel", *rest]) == "Hello there"
    assert "errors." not in proxy.log_text()


def test_cleartext_http_llm_call_is_reported(proxy: ProxyUnderTest) -> None:
    with proxy.http_client() as http_client:
        client = openai.OpenAI(
            api_key=fake_key("sk-proj-"),
            base_url=f"http://{PLAIN}/v1",
            http_client=http_client,
            max_retries=0,
        )
        answer = client.chat.completions.create(
            model="llama3", messages=[{"role": "user", "content": "Capital of France?"}]
        )
    assert answer.choices[0].message.content == "Paris."
    finding = proxy.wait_for(PLAIN, "plaintext-llm.prompt")
    # The upstream is on loopback, so the prompt did not leave this machine: info, with a note.
    assert finding["severity"] == "info"
    assert "loopback" in finding["evidence"]["note"]
    assert fake_key("sk-proj-") not in proxy.findings.read_text()  # keys are masked
    proxy.wait_for(PLAIN, "unofficial-llm-endpoint")


def test_weak_tls_upstream_is_reported(proxy: ProxyUnderTest) -> None:
    if proxy.weak_port is None:
        pytest.skip("openssl not installed")
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--proxy", proxy.url, "--cacert", str(proxy.mitm_ca),
         f"https://{WEAK}/"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"TLSv1" in result.stdout  # s_server -www describes the session it negotiated
    finding = proxy.wait_for(WEAK, "weak-tls.protocol")
    assert finding["severity"] == "high"
    assert finding["evidence"]["version"] == "TLS 1.0"


def test_garbage_is_survived_without_auditor_errors(proxy: ProxyUnderTest) -> None:
    # A CONNECT tunnel whose "TLS" is junk, then a request whose gzip body is not gzip.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as tunnel:
        tunnel.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        assert b" 200 " in tunnel.recv(4096)
        # A complete record holding a ClientHello of length zero: unparsable, not incomplete.
        tunnel.sendall(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00")
        tunnel.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            tunnel.recv(4096)
    if shutil.which("curl") is not None:
        subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--proxy", proxy.url,
             "-H", "content-type: application/json", "-H", "content-encoding: gzip",
             "--data-binary", "not gzip at all", f"http://{PLAIN}/v1/chat/completions"],
            capture_output=True, timeout=20, check=False,
        )  # fmt: skip
    # The proxy still serves, and nothing inside the auditor failed.
    with proxy.http_client() as http_client:
        client = openai.OpenAI(api_key=fake_key("sk-proj-"), http_client=http_client, max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "still there?"}]
        )
    assert answer.choices[0].message.content == "Paris."
    assert "failed (flow passes unchanged)" not in proxy.log_text()


def test_stopping_the_proxy_prints_totals_and_closes_store_sinks_and_records(
    proxy: ProxyUnderTest,
) -> None:
    with proxy.http_client() as http_client:
        for base_url in ("https://api.openai.com/v1", f"https://{RELAY}/v1"):
            client = openai.OpenAI(
                api_key=fake_key("sk-proj-"), base_url=base_url, http_client=http_client,
                max_retries=0,
            )  # fmt: skip
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )
    proxy.wait_for("api.openai.com", "ai-service.inventory")
    proxy.wait_for(RELAY, "relay-domain.known")
    proxy.stop()
    log = proxy.log_text()
    assert "[auditor] INFO api.openai.com ai-service.inventory" in log  # the live line
    assert "host(s) seen" in log
    assert "[auditor]   api.openai.com: max info" in log
    assert "Traceback" not in log
    # The same findings went to the store and, from it, to the sink; connections to ECS lines.
    from auditor.store import FindingsStore

    with FindingsStore(proxy.store) as store:
        stored = {(f.host, f.kind) for f in store.findings()}
    assert ("api.openai.com", "ai-service.inventory") in stored
    assert (RELAY, "relay-domain.known") in stored
    assert RELAY in proxy.alerts.read_text()
    records = [json.loads(line) for line in proxy.connections.read_text().splitlines()]
    assert {"api.openai.com", RELAY} <= {r["destination"].get("domain") for r in records}
