"""Google Gemini API calls (generateContent / streamGenerateContent, AI Studio and Vertex).

Part of ``auditor.llm``: the model is in the path (``.../models/<model>:<action>``), streaming is
the ``streamGenerateContent`` action, and the prompt is ``systemInstruction`` plus
``contents[].parts[].text``. Replies carry ``modelVersion``, ``responseId`` and
``usageMetadata``: one JSON object, a JSON array of chunks (stream without ``alt=sse``, usually
cut off in a capture), or SSE ``data:`` chunks (``alt=sse``).
"""

from __future__ import annotations

import re
from typing import Any

from auditor.llm.wire import (
    RequestFacts,
    decode_text,
    int_fields,
    json_array_items,
    json_or_none,
    looks_like_sse,
    model_from_mapping,
    sse_events,
    text_of,
)
from auditor.model import HTTPResponse, LLMCall
from auditor.signatures import ApiShape

FAMILY = "gemini"

# "/v1beta/models/gemini-2.0-flash:generateContent", also Vertex ".../publishers/google/models/…"
_PATH_MODEL_ACTION = re.compile(r"models/([^/:]+):([A-Za-z]+)")
_STREAM_ACTION = "streamGenerateContent"


def request_facts(body: Any, path: str, shape: ApiShape) -> RequestFacts:
    facts = RequestFacts()
    in_path = _PATH_MODEL_ACTION.search(path)
    if in_path:
        facts.model = in_path.group(1)
        facts.stream = in_path.group(2) == _STREAM_ACTION
    if isinstance(body, dict):
        # REST accepts both camelCase and snake_case field names.
        for key in ("systemInstruction", "system_instruction"):
            instruction = body.get(key)
            if isinstance(instruction, dict):
                text_of(instruction.get("parts"), facts.texts)
            else:
                text_of(instruction, facts.texts)
        contents = body.get("contents")
        if isinstance(contents, dict):
            contents = [contents]
        if isinstance(contents, list):
            for content in contents:
                if isinstance(content, dict):
                    text_of(content.get("parts"), facts.texts)
                else:
                    text_of(content, facts.texts)
    return facts


def parse_response(call: LLMCall, response: HTTPResponse) -> LLMCall:
    text = decode_text(response.body)
    if looks_like_sse(response.header("content-type"), text):
        for _event, data in sse_events(text):
            _absorb(call, data)
    elif text.lstrip().startswith("["):
        for item in json_array_items(text):
            _absorb(call, item)
    else:
        _absorb(call, json_or_none(text))
    return call


def _absorb(call: LLMCall, chunk: Any) -> None:
    if not isinstance(chunk, dict):
        return
    call.model_served = call.model_served or model_from_mapping(chunk, "modelVersion")
    if call.response_id is None and isinstance(chunk.get("responseId"), str):
        call.response_id = chunk["responseId"]
    call.usage.update(int_fields(chunk.get("usageMetadata")))
