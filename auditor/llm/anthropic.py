"""Anthropic Messages API calls (api.anthropic.com and services that speak its shape).

Part of ``auditor.llm``: reads the requested model, ``stream`` and the prompt text (``system``
plus the text blocks of ``messages``) from a request recognised as ``anthropic.*``, and from the
reply the served model, message id and usage, either from the JSON ``message`` or from the SSE
stream (``message_start`` carries model, id and input usage; ``message_delta`` the cumulative
output usage).
"""

from __future__ import annotations

import re
from typing import Any

from auditor.llm.wire import (
    RequestFacts,
    decode_text,
    flag,
    int_fields,
    json_or_none,
    looks_like_sse,
    model_from_mapping,
    sse_events,
    text_of,
)
from auditor.model import HTTPResponse, LLMCall
from auditor.signatures import ApiShape

FAMILY = "anthropic"

# Bedrock-style paths name the model (/model/<id>/invoke); the body then has no "model".
_PATH_MODEL = re.compile(r"/model/([^/]+)/invoke")


def request_facts(body: Any, path: str, shape: ApiShape) -> RequestFacts:
    facts = RequestFacts(model=model_from_mapping(body))
    if facts.model is None:
        in_path = _PATH_MODEL.search(path)
        if in_path:
            facts.model = in_path.group(1)
    facts.stream = flag(body, shape.streaming_key or "stream")
    if isinstance(body, dict):
        text_of(body.get("system"), facts.texts)
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    text_of(message.get("content"), facts.texts)
    return facts


def parse_response(call: LLMCall, response: HTTPResponse) -> LLMCall:
    text = decode_text(response.body)
    if looks_like_sse(response.header("content-type"), text):
        for event, data in sse_events(text):
            if not isinstance(data, dict):
                continue
            kind = data.get("type") or event
            if kind == "message_start":
                _absorb_message(call, data.get("message"))
            elif kind == "message_delta":
                call.usage.update(int_fields(data.get("usage")))
    else:
        _absorb_message(call, json_or_none(text))
    return call


def _absorb_message(call: LLMCall, message: Any) -> None:
    if not isinstance(message, dict):
        return
    call.model_served = call.model_served or model_from_mapping(message)
    if call.response_id is None and isinstance(message.get("id"), str):
        call.response_id = message["id"]
    call.usage.update(int_fields(message.get("usage")))
