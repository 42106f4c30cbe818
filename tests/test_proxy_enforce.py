"""Enforcement addon: blocking flagged LLM calls and masking keys in prompts.

In-process tests call the ``request`` hook with mitmproxy's own flows and the real detectors;
the last test runs mitmdump with both addons and the openai SDK through it (loopback only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import http
from mitmproxy.exceptions import OptionsError
from mitmproxy.test import taddons, tflow

from auditor.proxy.enforce import EgressEnforce

PUBLIC_IP = "203.0.113.7"  # TEST-NET-3: never contacted
REPO = Path(__file__).resolve().parent.parent


def fake_aws_key() -> str:
    return "AKIA" + "FAKETESTKEYABCDE"  # AWS access-key shape, obviously fake, made here


def llm_flow(host: str, *, tls: bool, prompt: str = "Summarise the Q3 report") -> http.HTTPFlow:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
    request = http.Request.make(
        "POST",
        f"{'https' if tls else 'http'}://{host}/v1/chat/completions",
        body.encode(),
        {"content-type": "application/json", "authorization": "Bearer sk-" + "FAKEFAKE" * 4},
    )
    client = tflow.tclient_conn()
    client.tls = tls
    server = tflow.tserver_conn()
    server.address = server.peername = (PUBLIC_IP, 443 if tls else 80)
    server.tls, server.sni = tls, host if tls else None
    flow = tflow.tflow(client_conn=client, server_conn=server)
    flow.request = request
    return flow


@pytest.fixture
def enforce() -> Iterator[tuple[EgressEnforce, taddons.context]]:
    addon = EgressEnforce()
    with taddons.context(addon) as tctx:
        yield addon, tctx


def error_of(flow: http.HTTPFlow) -> dict:
    assert flow.response is not None
    return json.loads(flow.response.content)["error"]


def test_inactive_by_default(enforce: tuple[EgressEnforce, taddons.context]) -> None:
    addon, _ = enforce
    flow = llm_flow("llm.example.net", tls=False)
    addon.request(flow)
    assert flow.response is None


def test_block_by_kind_answers_403_and_sends_nothing(
    enforce: tuple[EgressEnforce, taddons.context],
) -> None:
    addon, tctx = enforce
    tctx.configure(addon, enforce_block_kinds="plaintext-llm.prompt")
    flow = llm_flow("llm.example.net", tls=False)
    addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert "plaintext-llm.prompt" in error_of(flow)["message"]
    assert flow.response.headers["x-auditor-blocked"].startswith("plaintext-llm")
    # The same call over TLS to the official endpoint is not blocked.
    official = llm_flow("api.openai.com", tls=True)
    addon.request(official)
    assert official.response is None
    assert addon.stats["blocked"] == 1


def test_block_by_detector_name_and_by_severity(
    enforce: tuple[EgressEnforce, taddons.context],
) -> None:
    addon, tctx = enforce
    tctx.configure(addon, enforce_block_kinds="relay-domain")
    relay = llm_flow("api.chatanywhere.tech", tls=True)
    addon.request(relay)
    assert "relay-domain.known" in error_of(relay)["message"]

    tctx.configure(addon, enforce_block_kinds="", enforce_block_severity="critical")
    cleartext = llm_flow("llm.example.net", tls=False)
    addon.request(cleartext)
    assert cleartext.response is not None  # cleartext to a public address is critical
    relay_again = llm_flow("api.chatanywhere.tech", tls=True)
    addon.request(relay_again)
    assert relay_again.response is None  # a relay is high, below critical


def test_keys_in_prompts_are_masked_and_the_request_stays_valid(
    enforce: tuple[EgressEnforce, taddons.context],
) -> None:
    addon, tctx = enforce
    tctx.configure(addon, enforce_redact_keys=True)
    key = fake_aws_key()
    flow = llm_flow("api.openai.com", tls=True, prompt=f"why does {key} fail?")
    authorization = flow.request.headers["authorization"]
    addon.request(flow)
    assert flow.response is None
    body = json.loads(flow.request.content)  # still valid JSON
    prompt = body["messages"][0]["content"]
    assert key not in prompt and prompt.startswith("why does AKIA…(20 chars, sha256:")
    assert flow.request.headers["content-length"] == str(len(flow.request.raw_content))
    assert flow.request.headers["authorization"] == authorization  # the API's own key stays
    assert addon.stats["keys_masked"] == 1


def test_large_bodies_are_not_rewritten(enforce: tuple[EgressEnforce, taddons.context]) -> None:
    addon, tctx = enforce
    tctx.configure(addon, enforce_redact_keys=True)
    addon.max_body_scan = 64
    flow = llm_flow("api.openai.com", tls=True, prompt=f"{fake_aws_key()} " + "x" * 200)
    before = flow.request.raw_content
    addon.request(flow)
    assert flow.request.raw_content == before
    assert addon.stats["redact.skipped_large_body"] == 1


def test_bad_options_are_refused(enforce: tuple[EgressEnforce, taddons.context]) -> None:
    addon, tctx = enforce
    with pytest.raises(OptionsError, match="enforce_block_severity"):
        tctx.configure(addon, enforce_block_severity="severe")
    with pytest.raises(OptionsError, match="enforce_block_kinds"):
        tctx.configure(addon, enforce_block_kinds="relay domain")


def test_a_failing_judge_lets_the_request_go_on(
    enforce: tuple[EgressEnforce, taddons.context], monkeypatch: pytest.MonkeyPatch
) -> None:
    addon, tctx = enforce
    tctx.configure(addon, enforce_block_severity="info")

    def explode(flow: http.HTTPFlow) -> list:
        raise RuntimeError("detector core exploded")

    monkeypatch.setattr(addon, "judge", explode)
    flow = llm_flow("api.chatanywhere.tech", tls=True)
    assert addon.request(flow) is None
    assert flow.response is None
    assert addon.stats["errors.request"] == 1


@pytest.mark.network
def test_mitmdump_blocks_a_relay_and_masks_keys_for_the_sdk(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    openai = pytest.importorskip("openai")
    if shutil.which("mitmdump") is None:
        pytest.skip("mitmdump not installed")
    import ssl

    from proxy_upstreams import Upstream, free_port, wait_for_port

    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf = ca.issue_cert("api.openai.com", "api.chatanywhere.tech")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_tls)
    upstream = Upstream(lambda asked: asked, server_tls)
    port = free_port()
    names = {"api.openai.com:443": upstream.port, "api.chatanywhere.tech:443": upstream.port}
    log_path = tmp_path / "mitmdump.log"
    command = [
        sys.executable, "-c", "from auditor.proxy.launcher import proxy_command; proxy_command()",
        "--listen-port", str(port), "--confdir", str(tmp_path / "conf"),
        "--block-kinds", "relay-domain", "--redact-keys",
        "-s", str(REPO / "tests" / "proxy_upstream_map_addon.py"),
        "--set", f"test_upstream_map={json.dumps(names)}",
        "--set", f"ssl_verify_upstream_trusted_ca={ca_pem}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, process)
        verify = ssl.create_default_context(cafile=str(tmp_path / "conf" / "mitmproxy-ca-cert.pem"))
        proxy_url = f"http://127.0.0.1:{port}"
        with openai.DefaultHttpxClient(proxy=proxy_url, verify=verify, trust_env=False) as h:
            key = "sk-proj-" + "FAKE0test" * 5
            official = openai.OpenAI(api_key=key, http_client=h, max_retries=0)
            official.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"is {fake_aws_key()} ok?"}]
            )
            relay = openai.OpenAI(
                api_key=key, base_url="https://api.chatanywhere.tech/v1", http_client=h,
                max_retries=0,
            )  # fmt: skip
            with pytest.raises(openai.PermissionDeniedError, match=r"relay-domain\.known"):
                relay.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
        # One request reached the upstream (the relay's was stopped), its key masked.
        [(_path, body)] = upstream.requests
        assert fake_aws_key() not in json.dumps(body)
        assert "AKIA…(20 chars" in body["messages"][0]["content"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        upstream.stop()
    log = log_path.read_text(errors="replace")
    assert "[auditor] BLOCKED api.chatanywhere.tech" in log
    assert "Traceback" not in log


def test_blocked_answer_is_an_error_both_sdks_surface() -> None:
    """The 403 body reads as a permission error in the openai and the anthropic SDK alike."""
    import anthropic
    import httpx
    import openai

    from auditor.model import FlowTuple, HTTPRequest, Severity, finding_for
    from auditor.proxy.enforce import blocked_answer

    request_flow = FlowTuple("tcp", "10.0.0.2", 50000, "203.0.113.5", 443)
    finding = finding_for(
        HTTPRequest(flow=request_flow, ts=1.0, server_name="relay.example", method="POST",
                    host="relay.example", path="/v1/messages", http_version="HTTP/1.1",
                    headers=[]),
        detector="relay-domain", kind="relay-domain.known", severity=Severity.HIGH,
        title="Traffic to AI relay relay.example", evidence={},
    )  # fmt: skip
    answer = blocked_answer([finding])
    body = json.loads(answer.content or b"")

    def transport(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(answer.status_code, json=body)

    mock = httpx.MockTransport(transport)
    claude = anthropic.Anthropic(api_key="sk-ant-FAKE", http_client=httpx.Client(transport=mock),
                                 max_retries=0)  # fmt: skip
    with pytest.raises(anthropic.PermissionDeniedError, match=r"relay-domain\.known"):
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    gpt = openai.OpenAI(api_key="sk-FAKE", http_client=httpx.Client(transport=mock), max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match=r"relay-domain\.known") as err:
        gpt.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "blocked_by_egress_policy"
