"""Ollama native API calls (``/api/chat``, ``/api/generate``, ``/api/embed``).

Part of ``auditor.llm``: reads the model, the stream flag (Ollama streams unless the body says
``"stream": false``), and the prompt (``system``, ``prompt`` and ``messages[].content``). Replies
are one JSON object or NDJSON lines; the last line (``"done": true``) carries the token counts
(``prompt_eval_count``, ``eval_count``). Ollama has no response id.
"""

from __future__ import annotations

from typing import Any

from auditor.llm.wire import (
    RequestFacts,
    decode_text,
    flag,
    int_fields,
    model_from_mapping,
    ndjson_items,
    text_of,
)
from auditor.model import HTTPResponse, LLMCall
from auditor.signatures import ApiShape

FAMILY = "ollama"

# Token-count fields of a final reply; the durations beside them are not usage.
_USAGE_FIELDS = ("prompt_eval_count", "eval_count")


def request_facts(body: Any, path: str, shape: ApiShape) -> RequestFacts:
    # Ollama's default is to stream (docs: "stream: if false the response will be returned as
    # a single response object").
    facts = RequestFacts(model=model_from_mapping(body), stream=flag(body, "stream", default=True))
    if isinstance(body, dict):
        for key in ("system", "prompt"):
            text_of(body.get(key), facts.texts)
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    text_of(message.get("content"), facts.texts)
        if "input" in body:  # /api/embed
            text_of(body["input"], facts.texts)
    return facts


def parse_response(call: LLMCall, response: HTTPResponse) -> LLMCall:
    # A non-streamed reply is a single JSON line, so NDJSON reading covers both.
    for item in ndjson_items(decode_text(response.body)):
        if not isinstance(item, dict):
            continue
        call.model_served = call.model_served or model_from_mapping(item)
        counts = int_fields(item)
        call.usage.update({k: counts[k] for k in _USAGE_FIELDS if k in counts})
    return call
