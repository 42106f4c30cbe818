"""auditor.llm: recognising LLM API calls and reading their requests and replies."""

from __future__ import annotations

import json

import pytest
from sample_signatures import (
    API_SHAPES,
    fake_anthropic_key,
    fake_openai_key,
    flow,
    shipped_signatures,
)

from auditor.llm import parse_response, recognise
from auditor.llm.wire import MAX_PROMPT_TEXT_CHARS, json_or_none
from auditor.model import HTTPRequest, HTTPResponse, LLMCall


def request(
    path: str,
    body: bytes | dict | list,
    headers: list[tuple[str, str]] | None = None,
    host: str = "api.openai.com",
    method: str = "POST",
    truncated: bool = False,
    response: HTTPResponse | None = None,
) -> HTTPRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HTTPRequest(
        flow=flow(), ts=1_700_000_000.0, method=method, host=host, path=path,
        http_version="HTTP/1.1", headers=headers or [], body=raw, body_truncated=truncated,
        encrypted=True, response=response,
    )


def sse(*events: tuple[str | None, object]) -> bytes:
    out = []
    for name, data in events:
        if name:
            out.append(f"event: {name}")
        out.append("data: " + (data if isinstance(data, str) else json.dumps(data)))
        out.append("")
    return ("\n".join(out) + "\n").encode()


# --- recognition ------------------------------------------------------------------------------


def test_openai_chat_completion_is_recognised_with_model_prompt_and_key() -> None:
    key = fake_openai_key()
    req = request(
        "/v1/chat/completions?trace=1",
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Summarise Q3 numbers"},
                                              {"type": "image_url", "image_url": {"url": "x"}}]},
            ],
        },
        headers=[("Authorization", f"Bearer {key}")],
    )
    call = recognise(req, API_SHAPES)
    assert call is not None
    assert (call.api, call.family) == ("openai.chat_completions", "openai")
    assert call.model_requested == "gpt-4o-mini"
    assert call.stream is True
    assert call.prompt_text == "You are terse.\nSummarise Q3 numbers"
    assert call.prompt_chars == len(call.prompt_text)
    assert (call.credential_header, call.credential) == ("authorization", key)
    assert call.host == "api.openai.com"
    assert call.body_unreadable is None


def test_request_that_does_not_match_a_shape_is_not_an_llm_call() -> None:
    assert recognise(request("/v1/models", {}, method="GET"), API_SHAPES) is None
    # Right path, JSON body without the shape's keys, e.g. a form-like post to a web app.
    assert recognise(request("/chat/completions", {"question": "hi"}), API_SHAPES) is None
    # Right path and method, unreadable body, but no key: not enough to say it is an LLM call.
    assert recognise(request("/v1/chat/completions", b"\xff\xfe garbage"), API_SHAPES) is None


@pytest.mark.parametrize(
    ("body", "truncated", "reason"),
    [
        (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "long', True, "truncated"),
        (b"\x1f\x8b\x08\x00binary", False, "not UTF-8"),
        (b"model=gpt-4o&prompt=hello", False, "not JSON"),
    ],
)
def test_unreadable_body_with_path_and_key_is_a_call_that_records_why(
    body: bytes, truncated: bool, reason: str
) -> None:
    req = request("/v1/chat/completions", body, [("Authorization", "Bearer test-key-123")],
                  truncated=truncated)
    call = recognise(req, API_SHAPES)
    assert call is not None
    assert call.family == "openai"
    assert call.body_unreadable == reason
    assert call.credential == "test-key-123"
    assert call.prompt_text == "" and call.model_requested is None


def test_azure_deployment_name_is_the_requested_model() -> None:
    req = request(
        "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-06-01",
        {"messages": [{"role": "user", "content": "hello"}]},
        headers=[("api-key", "azure-test-key")], host="contoso.openai.azure.com",
    )
    call = recognise(req, API_SHAPES)
    assert call is not None
    assert call.api == "openai.azure_deployment_chat_completions"
    assert call.model_requested == "prod-gpt4o"
    assert (call.credential_header, call.credential) == ("api-key", "azure-test-key")


def test_openai_responses_api_reads_instructions_and_input_items() -> None:
    req = request("/v1/responses", {
        "model": "gpt-4.1", "instructions": "Be exact.",
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "What is 2+2?"}]}],
    })
    call = recognise(req, API_SHAPES)
    assert call is not None and call.api == "openai.responses"
    assert call.prompt_text == "Be exact.\nWhat is 2+2?"
    assert call.stream is False


def test_anthropic_messages_system_blocks_and_x_api_key() -> None:
    key = fake_anthropic_key()
    req = request("/v1/messages", {
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
        "system": [{"type": "text", "text": "You review contracts."}],
        "messages": [
            {"role": "user", "content": "Clause 4?"},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01",
                 "content": [{"type": "text", "text": "clause text"}]}]},
        ],
    }, headers=[("x-api-key", key), ("anthropic-version", "2023-06-01")],
        host="api.anthropic.com")
    call = recognise(req, API_SHAPES)
    assert call is not None and call.family == "anthropic"
    assert call.model_requested == "claude-sonnet-4-5" and call.stream is True
    assert call.prompt_text == "You review contracts.\nClause 4?\nclause text"
    assert (call.credential_header, call.credential) == ("x-api-key", key)


def test_gemini_model_from_path_stream_from_action_key_from_query() -> None:
    req = request(
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=AIzaTESTKEYnotreal",
        {"systemInstruction": {"parts": [{"text": "Answer in French."}]},
         "contents": [{"role": "user", "parts": [{"text": "Hello"}, {"inlineData": {}}]}]},
        host="generativelanguage.googleapis.com",
    )
    call = recognise(req, API_SHAPES)
    assert call is not None and call.api == "gemini.stream_generate_content"
    assert call.model_requested == "gemini-2.0-flash" and call.stream is True
    assert call.prompt_text == "Answer in French.\nHello"
    assert (call.credential_header, call.credential) == ("?key", "AIzaTESTKEYnotreal")


def test_ollama_streams_by_default_and_reads_messages() -> None:
    chat = request("/api/chat", {"model": "llama3.2",
                                 "messages": [{"role": "user", "content": "why is the sky blue"}]},
                   host="127.0.0.1")
    call = recognise(chat, API_SHAPES)
    assert call is not None and call.api == "ollama.chat"
    assert call.stream is True and call.credential is None
    generate = request("/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": False},
                       host="127.0.0.1")
    call = recognise(generate, API_SHAPES)
    assert call is not None and call.api == "ollama.generate" and call.stream is False
    assert call.prompt_text == "hi"


def test_prompt_text_is_bounded_but_prompt_chars_counts_all() -> None:
    big = "x" * (MAX_PROMPT_TEXT_CHARS + 5000)
    call = recognise(request("/v1/chat/completions",
                             {"model": "m", "messages": [{"role": "user", "content": big}]}),
                     API_SHAPES)
    assert call is not None
    assert len(call.prompt_text) == MAX_PROMPT_TEXT_CHARS
    assert call.prompt_chars == len(big)


def test_proxy_absolute_form_target_is_recognised() -> None:
    req = request("http://relay.example/v1/chat/completions",
                  {"model": "gpt-4o", "messages": []}, host="relay.example")
    call = recognise(req, API_SHAPES)
    assert call is not None and call.api == "openai.chat_completions"


# --- replies ----------------------------------------------------------------------------------


def _call(family: str, api: str = "x") -> LLMCall:
    req = request("/", b"")
    return LLMCall(flow=req.flow, ts=req.ts, api=api, family=family, request=req)


def test_openai_json_reply_fills_served_model_id_and_usage() -> None:
    body = {"id": "chatcmpl-ABfwCjPMi0ubw56UyMIIeNfJzyogq", "object": "chat.completion",
            "model": "gpt-4o-mini-2024-07-18", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 0}}}
    call = parse_response(_call("openai"), HTTPResponse(200, [("content-type", "application/json")],
                                                        json.dumps(body).encode()))
    assert call.model_served == "gpt-4o-mini-2024-07-18"
    assert call.response_id == "chatcmpl-ABfwCjPMi0ubw56UyMIIeNfJzyogq"
    assert call.usage == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_openai_sse_chunks_with_final_usage_and_done() -> None:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o",
             "choices": []}
    body = sse((None, chunk), (None, {**chunk, "usage": None}),
               (None, {**chunk, "usage": {"prompt_tokens": 5, "completion_tokens": 7}}),
               (None, "[DONE]"))
    reply = HTTPResponse(200, [("Content-Type", "text/event-stream")], body)
    call = parse_response(_call("openai"), reply)
    assert (call.model_served, call.response_id) == ("gpt-4o", "chatcmpl-1")
    assert call.usage == {"prompt_tokens": 5, "completion_tokens": 7}


def test_openai_responses_sse_events_wrap_the_response() -> None:
    body = sse(("response.created", {"type": "response.created",
                                     "response": {"id": "resp_677e", "model": "gpt-4.1"}}),
               ("response.completed", {"type": "response.completed",
                                       "response": {"id": "resp_677e", "model": "gpt-4.1",
                                                    "usage": {"input_tokens": 9}}}))
    call = parse_response(_call("openai"), HTTPResponse(200, [], body))
    assert (call.model_served, call.response_id, call.usage) == (
        "gpt-4.1", "resp_677e", {"input_tokens": 9})


def test_anthropic_stream_message_start_and_cumulative_delta() -> None:
    body = sse(
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "model": "glm-4.6",
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ("ping", {"type": "ping"}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    )
    call = parse_response(_call("anthropic"), HTTPResponse(200, [], body))
    assert call.model_served == "glm-4.6"  # what a substitution check compares with the request
    assert call.response_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert call.usage == {"input_tokens": 25, "output_tokens": 15}


def test_gemini_truncated_stream_array_reads_complete_chunks_only() -> None:
    chunk1 = {"candidates": [], "modelVersion": "gemini-2.0-flash-001", "responseId": "abc123",
              "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 6}}
    text = "[" + json.dumps(chunk1) + ",\r\n" + '{"candidates": [{"content": {"parts": [{"te'
    reply = HTTPResponse(200, [], text.encode(), body_truncated=True)
    call = parse_response(_call("gemini"), reply)
    assert (call.model_served, call.response_id) == ("gemini-2.0-flash-001", "abc123")
    assert call.usage == {"promptTokenCount": 4, "totalTokenCount": 6}


def test_ollama_ndjson_stream_final_line_has_counts() -> None:
    lines = [{"model": "llama3.2", "message": {"content": "Hi"}, "done": False},
             {"model": "llama3.2", "done": True, "prompt_eval_count": 26, "eval_count": 290,
              "total_duration": 4883583458}]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    call = parse_response(_call("ollama"), HTTPResponse(200, [], body))
    assert call.model_served == "llama3.2"
    assert call.usage == {"prompt_eval_count": 26, "eval_count": 290}


def test_garbage_reply_leaves_the_call_untouched() -> None:
    for family in ("openai", "anthropic", "gemini", "ollama"):
        call = parse_response(_call(family), HTTPResponse(502, [], b"\x00\xff<html>bad gateway"))
        assert (call.model_served, call.response_id, call.usage) == (None, None, {})


def test_reply_attached_to_the_request_is_read_during_recognition() -> None:
    reply = HTTPResponse(200, [], json.dumps({"id": "msg_01X", "model": "claude-x"}).encode())
    req = request("/v1/messages", {"model": "claude-x", "max_tokens": 5, "messages": []},
                  host="api.anthropic.com", response=reply)
    call = recognise(req, API_SHAPES)
    assert call is not None and call.response_id == "msg_01X"


# --- against the shipped api_shapes.yaml ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "api"),
    [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": []}, "openai.chat_completions"),
        ("/compatible-mode/v1/chat/completions", {"model": "qwen-max", "messages": []},
         "openai.chat_completions"),
        ("/openai/deployments/dep1/chat/completions", {"messages": []},
         "openai.azure_deployment_chat_completions"),
        ("/anthropic/v1/messages", {"model": "deepseek-chat", "max_tokens": 1, "messages": []},
         "anthropic.messages"),
        ("/v1beta/models/gemini-2.5-pro:generateContent", {"contents": []},
         "gemini.generate_content"),
        ("/api/chat", {"model": "llama3.2", "messages": []}, "ollama.chat"),
    ],
)
def test_shipped_shapes_recognise_real_paths(path: str, body: dict, api: str) -> None:
    shapes = shipped_signatures().api_shapes
    call = recognise(request(path, body), shapes)
    assert call is not None and call.api == api


# --- hostile input ----------------------------------------------------------------------------


def test_deeply_nested_body_is_unreadable_not_a_crash() -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    req = request("/v1/chat/completions", deep, [("Authorization", "Bearer test-key")])
    call = recognise(req, API_SHAPES)
    assert call is not None and call.body_unreadable == "not JSON (nested too deep)"
    nested_content: object = "bottom"
    for _ in range(200):
        nested_content = [{"type": "tool_result", "content": nested_content}]
    body = {"model": "m", "messages": [{"role": "user", "content": nested_content}]}
    call = recognise(request("/v1/chat/completions", body), API_SHAPES)
    assert call is not None and call.prompt_text == ""  # past the depth bound, not followed


def test_random_bytes_never_raise() -> None:
    import random

    rng = random.Random(1234)
    for _ in range(300):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        for path in ("/v1/chat/completions", "/v1/messages", "/api/chat",
                     "/v1beta/models/g:streamGenerateContent"):
            call = recognise(request(path, blob, [("x-api-key", "k")]), API_SHAPES)
            assert call is not None
            for reply in (blob, b"data: " + blob, b"[" + blob):
                parse_response(call, HTTPResponse(200, [], reply))


def test_json_or_none_reads_each_text() -> None:
    first = json_or_none('{"id": "a"}')
    assert json_or_none('{"id": "a"}') == first == {"id": "a"}
    assert json_or_none('{"id": "b"}') == {"id": "b"}
    assert json_or_none("not json") is None
    assert json_or_none('{"id": "a"}') == first
