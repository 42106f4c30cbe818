"""unofficial-llm-endpoint: an API family spoken to a host not official for it."""

from __future__ import annotations

import json

from sample_signatures import (
    API_SHAPES,
    constructed_signatures,
    flow,
    make_context,
    shipped_signatures,
)

from auditor.detectors.credential_exposure import official_hosts_of
from auditor.detectors.unofficial_llm_endpoint import (
    UnofficialLLMEndpointDetector,
    official_for_family,
)
from auditor.llm import recognise
from auditor.model import HTTPRequest, LLMCall, Severity

ANTHROPIC_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64,
                  "messages": [{"role": "user", "content": "hi"}]}
OPENAI_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def call(host: str, path: str, body: dict, dst_ip: str = "172.67.1.10", port: int = 443) -> LLMCall:
    request = HTTPRequest(
        flow=flow(dst_ip, port), ts=1_700_000_000.0, method="POST", host=host, path=path,
        http_version="HTTP/1.1", headers=[("authorization", "Bearer test-not-a-key")],
        body=json.dumps(body).encode(), encrypted=True,
    )
    recognised = recognise(request, API_SHAPES)
    assert recognised is not None
    return recognised


def inspect(obs: LLMCall, shipped: bool = False) -> list:
    ctx = make_context(signatures=shipped_signatures()) if shipped else make_context()
    return list(UnofficialLLMEndpointDetector().inspect(obs, ctx))


def test_anthropic_call_to_a_relay_is_high() -> None:
    [finding] = inspect(call("api.chatanywhere.tech", "/v1/messages", ANTHROPIC_BODY))
    assert (finding.kind, finding.severity) == ("unofficial-llm-endpoint", Severity.HIGH)
    evidence = finding.evidence
    assert evidence["family"] == "anthropic" and evidence["api"] == "anthropic.messages"
    assert evidence["model_requested"] == "claude-sonnet-4-5"
    assert evidence["host"] == "api.chatanywhere.tech"
    assert evidence["official_providers"] == ["anthropic", "deepseek"]


def test_official_hosts_for_their_shapes_are_fine() -> None:
    assert inspect(call("api.openai.com", "/v1/chat/completions", OPENAI_BODY)) == []
    assert inspect(call("api.anthropic.com", "/v1/messages", ANTHROPIC_BODY)) == []
    # DeepSeek serves the Anthropic shape on its own host: official per providers data.
    assert inspect(call("api.deepseek.com", "/anthropic/v1/messages", ANTHROPIC_BODY)) == []


def test_official_host_of_another_family_is_still_reported() -> None:
    [finding] = inspect(call("api.openai.com", "/v1/messages", ANTHROPIC_BODY))
    assert finding.severity == Severity.HIGH
    assert finding.evidence["host_provider"] == "openai"


def test_aggregator_is_medium_private_low_loopback_info() -> None:
    [aggregator] = inspect(call("openrouter.ai", "/api/v1/messages", ANTHROPIC_BODY))
    assert aggregator.severity == Severity.MEDIUM
    [private] = inspect(call("llm-gw.corp.internal", "/v1/chat/completions", OPENAI_BODY,
                             dst_ip="10.20.0.7"))
    assert private.severity == Severity.LOW
    ollama = call("127.0.0.1", "/api/chat", {"model": "llama3.2", "messages": []},
                  dst_ip="127.0.0.1", port=11434)
    [local] = inspect(ollama)
    assert (local.severity, local.evidence["family"]) == (Severity.INFO, "ollama")


def test_shipped_providers_make_zhipu_anthropic_shape_official() -> None:
    official = call("open.bigmodel.cn", "/api/anthropic/v1/messages", ANTHROPIC_BODY)
    assert inspect(official, shipped=True) == []
    [finding] = inspect(call("api.chatanywhere.tech", "/v1/chat/completions", OPENAI_BODY),
                        shipped=True)
    assert finding.severity == Severity.HIGH


def test_documentation_addresses_count_as_internet_hosts_not_internal() -> None:
    from auditor.detectors.addresses import address_scope, is_loopback

    assert address_scope("192.0.2.80") == "public"  # RFC 5737: example Internet host
    assert address_scope("2001:db8::1") == "public"
    assert address_scope("10.1.2.3") == "private"
    assert address_scope("100.64.0.9") == "private"
    assert address_scope("fd00::5") == "private"
    assert address_scope("127.0.0.1") == "loopback"
    assert is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("10.1.2.3") and not is_loopback("not-an-address")


def test_official_endpoints_are_those_of_the_signature_set_asked() -> None:
    listed, empty = constructed_signatures(), constructed_signatures()
    empty.providers.clear()
    providers, domains = official_for_family(listed, "anthropic")
    assert providers == ("anthropic", "deepseek") and "api.anthropic.com" in domains
    assert official_for_family(empty, "anthropic") == ((), ())
    assert official_hosts_of(listed, "openai") == ("api.openai.com", "chatgpt.com")
    assert official_hosts_of(empty, "openai") == ()
