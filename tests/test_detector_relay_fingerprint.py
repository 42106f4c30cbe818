"""relay-fingerprint: replies and requests that give away relay software (shipped signatures)."""

from __future__ import annotations

import json
import secrets

from sample_signatures import flow, make_context, shipped_signatures

from auditor.detectors.relay_fingerprint import RelayFingerprintDetector, header_index
from auditor.model import HTTPRequest, HTTPResponse, Severity, header_value

CHAT_BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})


def exchange(host: str, response: HTTPResponse | None,
             request_headers: list[tuple[str, str]] | None = None,
             path: str = "/v1/chat/completions") -> HTTPRequest:
    return HTTPRequest(
        flow=flow(), ts=1_700_000_000.0, method="POST", host=host, path=path,
        http_version="HTTP/1.1", headers=request_headers or [("authorization", "Bearer t")],
        body=CHAT_BODY.encode(), encrypted=True, response=response,
    )  # fmt: skip


def reply(headers: list[tuple[str, str]], payload: object, status: int = 200,
          content_type: str = "application/json") -> HTTPResponse:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return HTTPResponse(status, [("content-type", content_type), *headers], body)


def inspect(request: HTTPRequest) -> list:
    context = make_context(signatures=shipped_signatures())
    return list(RelayFingerprintDetector().inspect(request, context))


def completion(reply_id: str = "chatcmpl-ABfwCjPMi0ubw56UyMIIeNfJzyogq") -> dict[str, object]:
    return {"id": reply_id, "object": "chat.completion", "model": "gpt-4o-mini", "choices": []}


def one_api_request_id() -> str:
    return "20250101120000" + str(secrets.randbelow(10**9)).zfill(9) + "12345678"


def test_one_api_request_id_header_is_strong_high() -> None:
    request = exchange("llm.example.net",
                       reply([("X-Oneapi-Request-Id", one_api_request_id())], completion()))
    [finding] = inspect(request)
    assert (finding.kind, finding.severity) == ("relay-fingerprint.software", Severity.HIGH)
    assert finding.host == "llm.example.net"
    assert finding.evidence["software"] == "one-api"
    [mark] = finding.evidence["marks"]
    assert mark["id"] == "one-api-response-header-present" and "one-api" in mark["source"]


def test_new_api_version_header_and_error_json() -> None:
    error = {"error": {"code": "model_not_found", "type": "new_api_error",
                       "message": "No available channel for model gpt-5 under group default "
                                  "(distributor)"}}
    request = exchange("llm.example.net", reply([("X-New-Api-Version", "v0.9.0")], error, 503))
    [finding] = inspect(request)
    assert finding.evidence["software"] == "new-api" and finding.severity == Severity.HIGH
    kinds = {m["kind"] for m in finding.evidence["marks"]}
    assert {"response_header_present", "error_json", "error_message_regex"} <= kinds


def test_litellm_headers_reveal_the_real_model_and_upstream() -> None:
    headers = [("x-litellm-model-name", "gpt-4o-mini"),
               ("x-litellm-model-api-base", "https://upstream.example.org/v1"),
               ("x-litellm-call-id", "0f0e")]
    [finding] = inspect(exchange("gw.example.net", reply(headers, completion())))
    assert finding.evidence["software"] == "litellm" and finding.severity == Severity.HIGH
    assert finding.evidence["revealed"]["x-litellm-model-name"] == "gpt-4o-mini"
    assert finding.evidence["revealed"]["x-litellm-model-api-base"].startswith("https://upstream")


def test_one_api_rewrapped_id_of_another_upstream_is_medium() -> None:
    reply_id = "chatcmpl-" + secrets.token_hex(16)  # one-api's Gemini/Ollama adaptor
    [finding] = inspect(exchange("llm.example.net", reply([], completion(reply_id))))
    assert (finding.evidence["software"], finding.severity) == ("one-api", Severity.MEDIUM)


def test_relay_issued_key_in_the_request_is_reported_with_the_key_masked() -> None:
    key = "cr_" + secrets.token_hex(32)  # claude-relay-service key shape, random
    request = exchange("relay.example.net", None, [("x-api-key", key)], path="/api/v1/messages")
    [finding] = inspect(request)
    assert finding.evidence["software"] == "claude-relay-service"
    assert finding.severity == Severity.HIGH
    assert key not in json.dumps(finding.to_dict())


def test_official_reply_shows_no_relay() -> None:
    headers = [("x-request-id", "req_123"), ("openai-processing-ms", "200"),
               ("openai-version", "2020-10-01")]
    assert inspect(exchange("api.openai.com", reply(headers, completion()))) == []


def test_an_answer_mentioning_one_api_is_not_a_relay() -> None:
    answer = completion()
    answer["choices"] = [{"message": {"content": "You need one API key; see songquanpeng/one-api"}}]
    assert inspect(exchange("llm.example.net", reply([], answer))) == []


def test_new_api_html_page_is_recognised() -> None:
    page = b"<!doctype html><html><head><title>New API</title></head></html>"
    request = exchange("relay.example.net", reply([], page, content_type="text/html"), path="/")
    [finding] = inspect(request)
    assert finding.evidence["software"] == "new-api"


def test_unparsable_body_is_no_error() -> None:
    response = reply([], b"\xff\xfe not json {", status=500)
    assert inspect(exchange("llm.example.net", response)) == []


def test_header_index_answers_as_header_lookups_do() -> None:
    headers = [("X-Oneapi-Request-Id", "first"), ("content-type", "text/plain"),
               ("x-oneapi-request-id", "second"), ("X-Empty", "")]  # fmt: skip
    index = header_index(headers)
    for name in ("x-oneapi-request-id", "X-ONEAPI-REQUEST-ID", "Content-Type", "x-empty", "none"):
        assert index.get(name.lower()) == header_value(headers, name)
    assert list(index) == ["x-oneapi-request-id", "content-type", "x-empty"]


def test_marks_asked_are_every_mark_that_can_match() -> None:
    """The marks skipped for an exchange (a part it lacks, generic on an official host) are
    ones that could not match it anyway: the plan and asking every mark agree."""
    from auditor.detectors.relay_fingerprint import (
        MARK_MATCHERS,
        MARK_PARTS,
        ExchangeView,
        fingerprint_matches,
        marks_to_ask,
    )

    assert MARK_PARTS.keys() == MARK_MATCHERS.keys()
    sigs = shipped_signatures()
    error = {"error": {"type": "new_api_error", "message": "No available channel for model x"}}
    page = b"<!doctype html><title>New API</title> one api"
    exchanges = [
        exchange("llm.example.net", None, [("authorization", "Bearer cr_" + "a" * 64)]),
        exchange("llm.example.net", reply([("X-Oneapi-Request-Id", one_api_request_id())],
                                          completion("chatcmpl-msg_01abc"))),
        exchange("llm.example.net", reply([("X-New-Api-Version", "v1")], error, 503)),
        exchange("llm.example.net", reply([], page, content_type="text/html")),
        exchange("llm.example.net", reply([("x-litellm-model-name", "m")], {"error": "boom"})),
    ]
    for request in exchanges:
        view = ExchangeView(request)
        for official in (False, True):
            asked = {fp.id for fp, _ in marks_to_ask(sigs, view.response is not None,
                                                       view.is_html, view.is_error, official)}
            for fp in sigs.relay_fingerprints:
                if official and "generic" in fp.software:
                    continue
                if fingerprint_matches(fp, view):
                    assert fp.id in asked, (fp.id, request.response)
