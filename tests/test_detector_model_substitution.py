"""model-substitution: a reply naming another model than the one asked for."""

from __future__ import annotations

import json

import pytest
from sample_signatures import API_SHAPES, flow, make_context, shipped_signatures

from auditor.detectors.model_substitution import ModelSubstitutionDetector, same_model
from auditor.llm import recognise
from auditor.model import HTTPRequest, HTTPResponse, LLMCall, Severity


def openai_call(host: str, requested: str, served: str) -> LLMCall:
    reply = {"id": "chatcmpl-x", "object": "chat.completion", "model": served, "choices": []}
    request = HTTPRequest(
        flow=flow(), ts=1_700_000_000.0, method="POST", host=host, path="/v1/chat/completions",
        http_version="HTTP/1.1", headers=[("authorization", "Bearer test-not-a-key")],
        body=json.dumps({"model": requested, "messages": [{"role": "user", "content": "hi"}]})
        .encode(),
        encrypted=True,
        response=HTTPResponse(200, [("content-type", "application/json")],
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
    ],
)
def test_different_models_are_not_the_same(requested: str, served: str) -> None:
    assert not same_model(requested, served)


def test_a_reply_without_a_model_says_nothing() -> None:
    call = openai_call("api.chatanywhere.tech", "gpt-4o", "gpt-3.5-turbo")
    call.model_served = None
    assert inspect(call) == []
