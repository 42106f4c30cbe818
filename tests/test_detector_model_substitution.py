"""model-substitution: a reply naming another model than the one asked for, or a reply not
shaped like the provider whose model it claims."""

from __future__ import annotations

import json
import secrets
import string

import pytest
from sample_signatures import API_SHAPES, flow, make_context, shipped_signatures

from auditor.detectors.model_substitution import (
    OTHER_FAMILY,
    OTHER_MODEL,
    ModelSubstitutionDetector,
    same_model,
    shapes_claimed,
    substitution_kind,
)
from auditor.llm import recognise
from auditor.model import HTTPRequest, HTTPResponse, LLMCall, Severity
from auditor.signatures import Signatures

BASE62 = string.ascii_letters + string.digits


def official_openai_id() -> str:
    return "chatcmpl-" + "".join(secrets.choice(BASE62) for _ in range(29))


OPENAI_HEADERS = [("content-type", "application/json"), ("x-request-id", "req_test"),
                  ("openai-processing-ms", "312")]


def openai_call(host: str, requested: str, served: str, reply_id: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> LLMCall:
    """An OpenAI chat call whose reply is shaped like OpenAI's own unless told otherwise."""
    reply = {"id": reply_id or official_openai_id(), "object": "chat.completion", "model": served,
             "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7,
                                      "total_tokens": 12}}
    request = HTTPRequest(
        flow=flow(), ts=1_700_000_000.0, method="POST", host=host, path="/v1/chat/completions",
        http_version="HTTP/1.1", headers=[("authorization", "Bearer test-not-a-key")],
        body=json.dumps({"model": requested, "messages": [{"role": "user", "content": "hi"}]})
        .encode(),
        encrypted=True,
        response=HTTPResponse(200, OPENAI_HEADERS if headers is None else headers,
                              json.dumps(reply).encode()),
    )  # fmt: skip
    call = recognise(request, API_SHAPES)
    assert call is not None and call.model_served == served
    return call


def inspect(call: LLMCall) -> list:
    context = make_context(signatures=shipped_signatures())
    return list(ModelSubstitutionDetector().inspect(call, context))


def test_relay_serving_a_cheaper_model_is_high() -> None:
    [finding] = inspect(openai_call("api.chatanywhere.tech", "gpt-4o", "gpt-3.5-turbo-0125"))
    assert (finding.kind, finding.severity) == ("model-substitution.other-model", Severity.HIGH)
    assert finding.evidence["model_requested"] == "gpt-4o"
    assert finding.evidence["model_served"] == "gpt-3.5-turbo-0125"
    assert finding.evidence["official_endpoint"] is False


def test_another_family_behind_the_name_is_high_even_on_an_official_host() -> None:
    [finding] = inspect(openai_call("api.openai.com", "gpt-4o", "glm-4-plus"))
    assert (finding.kind, finding.severity) == ("model-substitution.other-family", Severity.HIGH)


def test_other_model_on_the_official_endpoint_is_medium() -> None:
    [finding] = inspect(openai_call("api.openai.com", "gpt-4o", "gpt-4o-mini-2024-07-18"))
    assert (finding.kind, finding.severity) == ("model-substitution.other-model", Severity.MEDIUM)


@pytest.mark.parametrize(
    ("requested", "served"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o", "gpt-4o-2024-08-06"),
        ("gpt-3.5-turbo", "gpt-3.5-turbo-0125"),
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
        ("gemini-1.5-flash", "gemini-1.5-flash-002"),
        ("openai/gpt-4o", "gpt-4o-2024-08-06"),
        ("GPT-4o", "gpt-4o"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5@20250929"),
    ],
)
def test_snapshots_and_aliases_of_the_requested_model_are_not_substitution(
    requested: str, served: str
) -> None:
    assert same_model(requested, served)
    assert inspect(openai_call("api.chatanywhere.tech", requested, served)) == []


@pytest.mark.parametrize(
    ("requested", "served"),
    [
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4", "gpt-3.5-turbo"),
        ("claude-opus-4-1", "claude-haiku-4-5"),
        ("claude-sonnet-4-5", "claude-haiku-4-5-20251001"),
        ("claude-sonnet-4-5", "claude-sonnet-4"),
    ],
)
def test_different_models_are_not_the_same(requested: str, served: str) -> None:
    assert not same_model(requested, served)


def test_a_reply_without_a_model_says_nothing() -> None:
    call = openai_call("api.chatanywhere.tech", "gpt-4o", "gpt-3.5-turbo")
    call.model_served = None
    assert inspect(call) == []


# --- the reply's shape against the provider it claims ---------------------------------------


def anthropic_call(host: str, reply_id: str, headers: list[tuple[str, str]]) -> LLMCall:
    reply = {"id": reply_id, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
             "content": [], "usage": {"input_tokens": 3, "output_tokens": 4}}
    request = HTTPRequest(
        flow=flow(), ts=1_700_000_000.0, method="POST", host=host, path="/v1/messages",
        http_version="HTTP/1.1", headers=[("x-api-key", "test-not-a-key")],
        body=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 10,
                         "messages": [{"role": "user", "content": "hi"}]}).encode(),
        encrypted=True,
        response=HTTPResponse(200, headers, json.dumps(reply).encode()),
    )  # fmt: skip
    call = recognise(request, API_SHAPES)
    assert call is not None
    return call


def test_official_host_answering_with_a_relay_shaped_id_is_high() -> None:
    # one-api re-wraps a Claude reply as chatcmpl-msg_... (03_relay_software_fingerprints.md)
    call = openai_call("api.openai.com", "gpt-4o", "gpt-4o", reply_id="chatcmpl-msg_01AbCdEf")
    [finding] = inspect(call)
    assert (finding.kind, finding.severity) == ("model-substitution.shape-mismatch", Severity.HIGH)
    assert finding.evidence["claimed_provider"] == "openai"
    assert [m["check"] for m in finding.evidence["mismatches"]] == ["openai-chat-completion-id"]


def test_relay_reply_without_openai_headers_is_low() -> None:
    call = openai_call("api.chatanywhere.tech", "gpt-4o", "gpt-4o",
                       headers=[("content-type", "application/json")])
    [finding] = inspect(call)
    assert (finding.kind, finding.severity) == ("model-substitution.shape-mismatch", Severity.LOW)
    [mismatch] = finding.evidence["mismatches"]
    assert "openai-processing-ms" in str(mismatch["problem"])


def test_official_shaped_replies_are_not_a_mismatch() -> None:
    assert inspect(openai_call("api.openai.com", "gpt-4o", "gpt-4o-2024-08-06")) == []
    official = [("request-id", "req_011CSLsW7mFqvHHnzrKdKjAE"),
                ("anthropic-organization-id", "00000000-0000-0000-0000-000000000000")]
    assert inspect(anthropic_call("api.anthropic.com", "msg_013Zva2CMHLNnXjNJJKqJ2EF",
                                  official)) == []


def test_anthropic_reply_missing_its_headers_on_the_official_host_is_high() -> None:
    [finding] = inspect(anthropic_call("api.anthropic.com", "msg_013Zva2CMHLNnXjNJJKqJ2EF", []))
    assert (finding.kind, finding.severity) == ("model-substitution.shape-mismatch", Severity.HIGH)
    assert finding.evidence["claimed_provider"] == "anthropic"


def test_error_replies_are_not_judged_for_shape() -> None:
    call = openai_call("api.openai.com", "gpt-4o", "gpt-4o", reply_id="x", headers=[])
    assert call.request.response is not None
    call.request.response.status = 429
    assert inspect(call) == []


def test_remembered_answers_are_those_of_the_pair_and_of_the_signature_set() -> None:
    assert substitution_kind("gpt-4o", "gpt-4o-2024-08-06") is None
    assert substitution_kind("gpt-4o", "gpt-3.5-turbo") == OTHER_MODEL
    assert substitution_kind("claude-sonnet-4-5", "glm-4.6") == OTHER_FAMILY
    shipped = shipped_signatures()
    provider, shapes = shapes_claimed(shipped, "openai.chat_completions", "gpt-4o")
    assert provider == "openai" and shapes
    assert all("openai.chat_completions" in shape.apis for shape in shapes)
    assert shapes_claimed(shipped, "anthropic.messages", "gpt-4o") == (None, ())
    # Another signature set (here: without response shapes) gets its own answer.
    assert shapes_claimed(Signatures(), "openai.chat_completions", "gpt-4o") == (None, ())
