"""OpenAI-shaped API calls: Chat Completions, Responses, Completions, Embeddings, Azure OpenAI.

Part of ``auditor.llm``: after ``recognise`` matched a request to an ``openai.*`` shape from
``signatures/api_shapes.yaml``, this module reads the requested model, the stream flag and the
prompt text from the body, and later the served model, response id and usage from the reply
(a JSON body, or ``data:`` SSE chunks ending in ``[DONE]``). Many non-OpenAI services speak this
shape; whether the host is entitled to is the detectors' question, not this module's.
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

FAMILY = "openai"

# Azure OpenAI names the deployment in the path (/openai/deployments/<name>/chat/completions);
# the body then has no "model", and the deployment name is what the tenant asked for.
_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")

# Body fields that carry prompt text, in the order they are read. Chat Completions: messages;
# Responses API: instructions + input; legacy Completions and Embeddings: prompt / input.
_PROMPT_FIELDS = ("instructions", "messages", "input", "prompt")


def request_facts(body: Any, path: str, shape: ApiShape) -> RequestFacts:
    facts = RequestFacts(model=model_from_mapping(body))
    if facts.model is None:
        deployment = _AZURE_DEPLOYMENT.search(path)
        if deployment:
            facts.model = deployment.group(1)
    facts.stream = flag(body, shape.streaming_key or "stream")
    if isinstance(body, dict):
        for key in _PROMPT_FIELDS:
            if key in body:
                text_of(body[key], facts.texts)
    return facts


def parse_response(call: LLMCall, response: HTTPResponse) -> LLMCall:
    text = decode_text(response.body)
    if looks_like_sse(response.header("content-type"), text):
        for _event, data in sse_events(text):
            _absorb(call, data)
    else:
        _absorb(call, json_or_none(text))
    return call


def _absorb(call: LLMCall, data: Any) -> None:
    if not isinstance(data, dict):
        return
    # Responses API events wrap the response object: {"type": "response.completed", "response": {}}
    obj = data.get("response") if isinstance(data.get("response"), dict) else data
    call.model_served = call.model_served or model_from_mapping(obj)
    if call.response_id is None and isinstance(obj.get("id"), str):
        call.response_id = obj["id"]
    usage = int_fields(obj.get("usage"))
    if usage:  # the final chunk carries the totals; later values win
        call.usage.update(usage)
