"""credential-exposure: provider keys at foreign hosts, and one key at several hosts."""

from __future__ import annotations

import json
import secrets

import pytest
from sample_signatures import API_SHAPES, fake_anthropic_key, fake_openai_key, flow, make_context

from auditor.detectors import credential_exposure
from auditor.detectors.credential_exposure import CredentialExposureDetector
from auditor.llm import recognise
from auditor.model import HTTPRequest, LLMCall, Severity
from auditor.redact import fingerprint


def request_to(host: str, headers: list[tuple[str, str]], path: str = "/v1/chat/completions",
               dst_ip: str = "203.0.113.7") -> HTTPRequest:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    return HTTPRequest(
        flow=flow(dst_ip), ts=1_700_000_000.0, method="POST", host=host, path=path,
        http_version="HTTP/1.1", headers=headers, body=body.encode(), encrypted=True,
    )  # fmt: skip


def llm_call(host: str, key: str, dst_ip: str = "203.0.113.7") -> LLMCall:
    call = recognise(request_to(host, [("authorization", f"Bearer {key}")], dst_ip=dst_ip),
                     API_SHAPES)
    assert call is not None and call.credential == key
    return call


def run(detector: CredentialExposureDetector, *observations: object) -> list:
    context = make_context()
    return [f for obs in observations for f in detector.inspect(obs, context)]  # type: ignore[arg-type]


def test_openai_key_at_a_relay_is_critical_and_masked() -> None:
    key = fake_openai_key()
    [finding] = run(CredentialExposureDetector(), llm_call("api.chatanywhere.tech", key))
    assert (finding.kind, finding.severity) == ("credential-exposure.foreign-host",
                                                Severity.CRITICAL)
    assert finding.host == "api.chatanywhere.tech"
    assert finding.evidence["key_provider"] == "openai"
    assert finding.evidence["key_format"] == "openai-trufflehog"
    assert finding.evidence["relay_domain"] == "chatanywhere.tech"
    assert key not in json.dumps(finding.to_dict())
    assert fingerprint(key) in finding.evidence["key"]


def test_anthropic_key_at_an_unknown_host_is_high() -> None:
    key = fake_anthropic_key()
    request = request_to("llm.example.net", [("x-api-key", key)], path="/other/api")
    [finding] = run(CredentialExposureDetector(), request)  # a plain request, not an LLM call
    assert (finding.kind, finding.severity) == ("credential-exposure.foreign-host", Severity.HIGH)
    assert finding.evidence["sent_in"] == "x-api-key"
    assert key not in json.dumps(finding.to_dict())


def test_key_at_its_own_provider_is_fine() -> None:
    assert run(CredentialExposureDetector(), llm_call("api.openai.com", fake_openai_key())) == []


def test_llm_request_is_judged_once_from_its_call() -> None:
    call = llm_call("llm.example.net", fake_openai_key())
    findings = run(CredentialExposureDetector(), call.request, call)
    assert [f.kind for f in findings] == ["credential-exposure.foreign-host"]


def test_loopback_gateway_and_unknown_tokens_are_not_judged() -> None:
    detector = CredentialExposureDetector()
    assert run(detector, llm_call("localhost", fake_openai_key(), dst_ip="127.0.0.1")) == []
    opaque = request_to("llm.example.net", [("authorization", f"Bearer {secrets.token_hex(16)}")])
    assert run(detector, opaque) == []


def test_same_key_at_two_hosts_is_key_reuse() -> None:
    key = fake_openai_key()
    detector = CredentialExposureDetector()
    first = run(detector, llm_call("api.openai.com", key))
    assert first == []
    findings = run(detector, llm_call("llm.example.net", key))
    reuse = [f for f in findings if f.kind == "credential-exposure.key-reuse"]
    [finding] = reuse
    assert finding.severity == Severity.MEDIUM and finding.host == "llm.example.net"
    assert finding.evidence["hosts"] == ["api.openai.com", "llm.example.net"]
    assert key not in json.dumps(finding.to_dict())


def test_key_reuse_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credential_exposure, "MAX_KEYS_REMEMBERED", 3)
    detector = CredentialExposureDetector()
    keys = [fake_openai_key() for _ in range(5)]
    for key in keys:
        run(detector, llm_call("api.openai.com", key))
    assert len(detector.hosts_by_key) == 3
    # The first key was forgotten: seeing it elsewhere now is not (yet) reuse.
    later = run(detector, llm_call("api.openai.com.evil.example", keys[0]))
    assert not [f for f in later if f.kind == "credential-exposure.key-reuse"]
