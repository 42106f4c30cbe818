"""Transparent mode for real: client, gateway and server in network namespaces this test makes.

    [client ns] 10.231.1.2 --veth--> [gateway ns: iptables REDIRECT -> mitmdump --mode transparent]
                                        --veth--> [server ns] 10.231.2.2 :443 (TLS) / :80 (HTTP)

The client connects to the server's address as if there were no proxy; the gateway redirects
ports 80/443 to mitmdump, which learns the original destination from the socket. The server
address is an IP, so names come from SNI and Host, as in a real deployment. Unlike the loopback
tests, the destination here is another machine's address, so a cleartext prompt is critical.
Needs root, iproute2 and iptables; skipped otherwise. Everything made is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.network

trustme = pytest.importorskip("trustme")

REPO = Path(__file__).resolve().parent.parent
CLIENT_IP, GATEWAY_CLIENT_SIDE = "10.231.1.2", "10.231.1.1"
GATEWAY_SERVER_SIDE, SERVER_IP = "10.231.2.1", "10.231.2.2"
PROXY_PORT = 8080
RELAY = "api.chatanywhere.tech"  # a confirmed relay/reseller in signatures/relays.yaml
PLAIN = "llm-plain.example.test"


def run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


def namespaces_possible() -> str | None:
    """Why this test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "iptables", "curl", "mitmdump"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@dataclass
class Site:
    client_ns: str
    gateway_ns: str
    findings: Path
    log: Path
    mitm_ca: Path

    def in_client(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ip", "netns", "exec", self.client_ns, *args],
            capture_output=True,
            timeout=30,
            check=False,
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
        log = self.log.read_text(errors="replace")
        raise AssertionError(f"no {kind} finding for {host}; findings: {seen}\n{log}")


def wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not seen in {path}:\n{path.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = namespaces_possible()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("transparent")
    tag = f"{os.getpid() % 100000}"
    client_ns, gateway_ns, server_ns = f"aea-c{tag}", f"aea-g{tag}", f"aea-s{tag}"
    ca = trustme.CA()
    ca_pem = tmp / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf = ca.issue_cert(RELAY)
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))

    processes: list[subprocess.Popen[bytes]] = []
    cleanups: list[Callable[[], None]] = []
    try:
        for ns in (client_ns, gateway_ns, server_ns):
            run("ip", "netns", "add", ns)
            cleanups.append(lambda ns=ns: run("ip", "netns", "del", ns))
            run("ip", "-n", ns, "link", "set", "lo", "up")
        # veth pairs made directly inside the namespaces: no names in the host's namespace.
        run("ip", "link", "add", "c0", "netns", client_ns, "type", "veth",
            "peer", "name", "g0", "netns", gateway_ns)  # fmt: skip
        run("ip", "link", "add", "g1", "netns", gateway_ns, "type", "veth",
            "peer", "name", "s0", "netns", server_ns)  # fmt: skip
        for ns, dev, address in (
            (client_ns, "c0", f"{CLIENT_IP}/24"),
            (gateway_ns, "g0", f"{GATEWAY_CLIENT_SIDE}/24"),
            (gateway_ns, "g1", f"{GATEWAY_SERVER_SIDE}/24"),
            (server_ns, "s0", f"{SERVER_IP}/24"),
        ):
            run("ip", "-n", ns, "addr", "add", address, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", client_ns, "route", "add", "default", "via", GATEWAY_CLIENT_SIDE)
        run("ip", "-n", server_ns, "route", "add", "default", "via", GATEWAY_SERVER_SIDE)
        # No forwarding on the gateway: every connection to ports 80/443 ends at the proxy,
        # which opens its own to the server; anything else simply does not pass.
        run("ip", "netns", "exec", gateway_ns, "iptables", "-t", "nat", "-A", "PREROUTING",
            "-i", "g0", "-p", "tcp", "-m", "multiport", "--dports", "80,443",
            "-j", "REDIRECT", "--to-ports", str(PROXY_PORT))  # fmt: skip

        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def start(ns: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *args],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
            processes.append(process)
            return process

        upstream = [sys.executable, str(REPO / "tests" / "proxy_upstreams.py"), "--host", SERVER_IP]
        relay_log, plain_log = tmp / "relay.log", tmp / "plain.log"
        relay = start(server_ns, [*upstream, "--port", "443", "--cert", str(cert),
                                  "--key", str(key), "--serve-model", "gpt-3.5-turbo-0125"],
                      relay_log)  # fmt: skip
        plain = start(server_ns, [*upstream, "--port", "80"], plain_log)

        findings, log = tmp / "findings.jsonl", tmp / "mitmdump.log"
        confdir = tmp / "confdir"
        launcher = "from auditor.proxy.launcher import proxy_command; proxy_command()"
        proxy = start(gateway_ns, [
            sys.executable, "-c", launcher,
            "--mode", "transparent", "--listen-host", "0.0.0.0", "--listen-port", str(PROXY_PORT),
            "--confdir", str(confdir), "--findings-jsonl", str(findings),
            "--set", f"ssl_verify_upstream_trusted_ca={ca_pem}",
        ], log)  # fmt: skip
        wait_for_text(relay_log, "listening", relay, 20)
        wait_for_text(plain_log, "listening", plain, 20)
        wait_for_text(log, "listening", proxy, 30)
        yield Site(client_ns, gateway_ns, findings, log, confdir / "mitmproxy-ca-cert.pem")
    finally:
        for process in processes:
            if process.poll() is None:
                # SIGINT first: mitmdump then runs done() and prints the per-host totals.
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):  # remove every namespace even if one fails
                cleanup()


def chat_request_args(key: str) -> list[str]:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Quarterly numbers: ..."}]}
    return ["-sS", "--max-time", "20", "-H", "content-type: application/json",
            "-H", f"authorization: Bearer {key}", "-d", json.dumps(body)]  # fmt: skip


def test_cleartext_prompt_to_another_host_is_critical(site: Site) -> None:
    key = "sk-proj-" + "FAKE0test" * 5  # obviously fake, made here
    result = site.in_client(
        "curl", *chat_request_args(key), "-H", f"host: {PLAIN}",
        f"http://{SERVER_IP}/v1/chat/completions",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert json.loads(result.stdout)["model"] == "gpt-4o"
    finding = site.wait_for(PLAIN, "plaintext-llm.prompt")
    assert finding["severity"] == "critical"
    assert finding["dst_ip"] == SERVER_IP and finding["src_ip"] == CLIENT_IP
    assert site.wait_for(PLAIN, "plaintext-llm.api-key")["severity"] == "critical"
    assert key not in site.findings.read_text()


def test_tls_to_a_relay_is_named_from_sni_and_reported(site: Site) -> None:
    key = "sk-" + "FAKE0test" * 5
    result = site.in_client(
        "curl", *chat_request_args(key), "--cacert", str(site.mitm_ca),
        "--resolve", f"{RELAY}:443:{SERVER_IP}", f"https://{RELAY}/v1/chat/completions",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert json.loads(result.stdout)["model"] == "gpt-3.5-turbo-0125"  # the relay's swap
    finding = site.wait_for(RELAY, "relay-domain.known")
    assert finding["severity"] == "high"
    assert finding["dst_ip"] == SERVER_IP
    assert not any(f["kind"].startswith("plaintext-llm") and f["host"] == RELAY
                   for f in site.findings_now())  # fmt: skip
