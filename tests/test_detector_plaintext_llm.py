"""plaintext-llm: prompts and API keys that crossed the network in cleartext."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_signatures import API_SHAPES, fake_openai_key, flow, make_context

from auditor.detectors.plaintext_llm import (
    PlaintextLLMDetector,
    key_patterns,
    matching_key_format,
)
from auditor.llm import recognise
from auditor.model import HTTPRequest, LLMCall, Severity
from auditor.policy import Policy
from auditor.redact import SecretPattern, SecretPatterns, excerpt, fingerprint, text_digest
from auditor.signatures import KeyFormat, load_signatures

SECRET_PROMPT = (
    "Quarterly revenue draft for the board, do not share outside finance: "
    "EMEA 41.2M, APAC 17.9M, the acquisition of Initech closes in May."
)


def cleartext_request(key: str, *, encrypted: bool = False, dst_ip: str = "198.51.100.20",
                      path: str = "/v1/chat/completions", body: bytes | None = None,
                      header: str = "Authorization") -> HTTPRequest:
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    return HTTPRequest(
        flow=flow(dst_ip, 80), ts=1_700_000_000.0, method="POST", host="llm.example.net",
        path=path, http_version="HTTP/1.1",
        headers=[(header, f"Bearer {key}"), ("Content-Type", "application/json")],
        body=body if body is not None else json.dumps(payload).encode(), encrypted=encrypted,
    )


def llm_call(request: HTTPRequest) -> LLMCall:
    call = recognise(request, API_SHAPES)
    assert call is not None
    return call


def by_kind(findings: list) -> dict:
    return {f.kind: f for f in findings}


def test_cleartext_call_reports_prompt_and_key_without_revealing_them() -> None:
    key = fake_openai_key()
    findings = by_kind(PlaintextLLMDetector().inspect(llm_call(cleartext_request(key)),
                                                     make_context()))
    prompt = findings["plaintext-llm.prompt"]
    assert prompt.severity == Severity.CRITICAL
    assert prompt.evidence["api"] == "openai.chat_completions"
    assert prompt.evidence["model"] == "gpt-4o"
    assert prompt.evidence["prompt_chars"] == len(SECRET_PROMPT)
    assert prompt.evidence["prompt_sha256"] == text_digest(SECRET_PROMPT)
    assert prompt.evidence["prompt_excerpt"].startswith("Quarterly revenue draft")
    assert len(prompt.evidence["prompt_excerpt"]) <= 81  # policy.excerpt_chars + ellipsis

    api_key = findings["plaintext-llm.api-key"]
    assert api_key.severity == Severity.CRITICAL
    assert api_key.evidence["header"] == "authorization"
    assert api_key.evidence["key_format"] == "openai-trufflehog"
    assert api_key.evidence_key == fingerprint(key)
    everything = json.dumps([f.to_dict() for f in findings.values()], ensure_ascii=False)
    assert key not in everything
    assert SECRET_PROMPT not in everything


def test_reveal_evidence_keeps_the_full_prompt_and_key() -> None:
    key = fake_openai_key()
    ctx = make_context(policy=Policy(reveal_evidence=True))
    findings = by_kind(PlaintextLLMDetector().inspect(llm_call(cleartext_request(key)), ctx))
    assert findings["plaintext-llm.prompt"].evidence["prompt_excerpt"] == SECRET_PROMPT
    assert findings["plaintext-llm.api-key"].evidence["key"] == key


def test_key_pasted_into_the_prompt_is_masked_in_the_excerpt() -> None:
    key = fake_openai_key()
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"use {key} now"}]}
    request = cleartext_request("x", body=json.dumps(payload).encode())
    ctx = make_context(policy=Policy(excerpt_chars=400))
    findings = by_kind(PlaintextLLMDetector().inspect(llm_call(request), ctx))
    excerpt = findings["plaintext-llm.prompt"].evidence["prompt_excerpt"]
    assert key not in excerpt and excerpt.startswith("use sk-p")


def test_tls_protected_call_is_not_reported() -> None:
    call = llm_call(cleartext_request(fake_openai_key(), encrypted=True))
    assert list(PlaintextLLMDetector().inspect(call, make_context())) == []


def test_loopback_call_is_info_not_an_exposure() -> None:
    call = llm_call(cleartext_request("local", dst_ip="127.0.0.1"))
    findings = by_kind(PlaintextLLMDetector().inspect(call, make_context()))
    assert findings["plaintext-llm.prompt"].severity == Severity.INFO


def test_unreadable_body_is_still_a_cleartext_call() -> None:
    request = cleartext_request(fake_openai_key(), body=b"\xff\xfe\x00 not json")
    findings = by_kind(PlaintextLLMDetector().inspect(llm_call(request), make_context()))
    prompt = findings["plaintext-llm.prompt"]
    assert prompt.severity == Severity.CRITICAL
    assert prompt.evidence["body_unreadable"] == "not UTF-8"


def test_known_key_in_a_non_llm_cleartext_request() -> None:
    key = fake_openai_key()
    request = cleartext_request(key, path="/internal/billing/sync", body=b"{}", header="x-api-key")
    [finding] = PlaintextLLMDetector().inspect(request, make_context())
    assert (finding.kind, finding.severity) == ("plaintext-llm.api-key", Severity.CRITICAL)
    assert finding.evidence["header"] == "x-api-key"
    assert key not in json.dumps(finding.to_dict())


def test_session_token_that_is_no_known_key_format_is_not_reported() -> None:
    request = cleartext_request("opaque-session-token-1234", path="/login", body=b"{}")
    assert list(PlaintextLLMDetector().inspect(request, make_context())) == []


def test_llm_http_request_is_left_to_its_llm_call() -> None:
    # The pipeline feeds both the HTTPRequest and its LLMCall; the key is counted once.
    request = cleartext_request(fake_openai_key())
    assert list(PlaintextLLMDetector().inspect(request, make_context())) == []


SHIPPED = load_signatures()
KEY_FORMATS = [k for k in SHIPPED.key_formats if k.keywords]
HYPOTHESIS = settings(
    max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.mark.parametrize("key_format", KEY_FORMATS, ids=[k.id for k in KEY_FORMATS])
def test_keyword_prefilter_changes_neither_masking_nor_key_matching(key_format: KeyFormat) -> None:
    with_keywords = key_patterns(SHIPPED)
    every_regex = SecretPatterns(SecretPattern(p.pattern) for p in with_keywords)

    @HYPOTHESIS
    @given(st.from_regex(key_format.regex), st.text(max_size=40), st.text(max_size=40))
    def check(sample: str, before: str, after: str) -> None:
        text = f"{before} {sample} {after}"
        assert excerpt(text, 200, False, with_keywords) == excerpt(text, 200, False, every_regex)
        expected = next((k for k in SHIPPED.key_formats if k.pattern.search(sample)), None)
        assert matching_key_format(sample, SHIPPED) is expected

    check()
