"""Reading LLM API bodies off the wire: JSON, SSE event streams, JSON stream arrays, NDJSON.

Sits under ``auditor.llm``: the family modules (``openai``, ``anthropic``, ``gemini``,
``ollama``) use these helpers to turn a captured body prefix (possibly truncated, possibly not
UTF-8) into Python values, and to collect prompt text within a fixed bound. Nothing here raises
on bad input: what cannot be read comes back as ``None`` or an empty list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Prompt text kept per call: enough for an excerpt, a digest and a secret scan, bounded so one
# huge request (a pasted document) cannot hold megabytes per observation in memory.
MAX_PROMPT_TEXT_CHARS = 64 * 1024
# How deep content parts are followed (message -> blocks -> tool_result -> blocks is 4); deeper
# nesting is not a shape any API uses, and following it would let a body exhaust the stack.
MAX_CONTENT_DEPTH = 16


@dataclass(slots=True)
class RequestFacts:
    """What a family module read from one request body and path."""

    model: str | None = None
    stream: bool = False
    texts: list[str] = field(default_factory=list)  # prompt pieces in wire order


@dataclass(slots=True)
class BodyReading:
    """A request body read as JSON; ``error`` says why it could not be (then ``value`` is None)."""

    value: Any = None
    error: str | None = None


def read_json_body(
    body: bytes, truncated: bool = False, body_error: str | None = None
) -> BodyReading:
    """The body as a JSON value, or why not ("truncated", "not UTF-8", "not JSON", ...)."""
    if body_error:
        return BodyReading(error=f"undecodable: {body_error}")
    if not body:
        return BodyReading(error="empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return BodyReading(error="not UTF-8")
    try:
        return BodyReading(value=json.loads(text))
    except RecursionError:
        return BodyReading(error="not JSON (nested too deep)")
    except ValueError:
        # A cut-off JSON document is the usual case for a body larger than what was kept.
        return BodyReading(error="truncated" if truncated else "not JSON")


def decode_text(body: bytes) -> str:
    """The body as text, replacing bytes that are not UTF-8 (a truncated multi-byte char)."""
    return body.decode("utf-8", "replace")


def json_or_none(text: str) -> Any:
    """``text`` as a JSON value, or None when it is not one (too deeply nested included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def looks_like_sse(content_type: str | None, text: str) -> bool:
    if content_type and "text/event-stream" in content_type.lower():
        return True
    head = text.lstrip()[:16]
    return head.startswith(("data:", "event:", ":"))


def sse_events(text: str) -> Iterator[tuple[str | None, Any]]:
    """(event name, parsed JSON data) per SSE event; events whose data is not JSON are skipped.

    A truncated final event is dropped (its JSON does not parse) rather than guessed at.
    """
    event_name: str | None = None
    data_lines: list[str] = []

    def flush() -> Iterator[tuple[str | None, Any]]:
        if data_lines:
            value = json_or_none("\n".join(data_lines))
            if value is not None:
                yield event_name, value

    for raw_line in text.splitlines():
        line = raw_line.rstrip("\r")
        if not line:
            yield from flush()
            event_name, data_lines = None, []
        elif line.startswith("event:"):
            event_name = line[6:].strip()
        elif line.startswith("data:"):
            data_lines.append(line[5:].lstrip(" "))
    yield from flush()


def json_array_items(text: str) -> Iterator[Any]:
    """Items of a JSON array read one at a time, stopping quietly where the text was cut.

    Gemini's ``streamGenerateContent`` without ``alt=sse`` answers with one JSON array whose
    items arrive as chunks; a captured prefix is usually an unterminated array.
    """
    decoder = json.JSONDecoder()
    index = text.find("[")
    if index < 0:
        return
    index += 1
    length = len(text)
    while index < length:
        while index < length and text[index] in " \t\r\n,":
            index += 1
        if index >= length or text[index] == "]":
            return
        try:
            item, index = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):
            return
        yield item


def ndjson_items(text: str) -> Iterator[Any]:
    """One JSON value per line (Ollama streams); unparsable lines are skipped."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            value = json_or_none(line)
            if value is not None:
                yield value


def int_fields(mapping: Any) -> dict[str, int]:
    """The integer-valued top-level fields of a usage mapping (nested details dropped)."""
    if not isinstance(mapping, dict):
        return {}
    return {
        str(k): int(v)
        for k, v in mapping.items()
        if isinstance(v, int) and not isinstance(v, bool)
    }


def text_of(value: Any, out: list[str], depth: int = 0) -> None:
    """Append the text a content value carries: a string, or text parts/blocks of a list.

    Covers the content shapes of all four families: ``"..."``, ``[{"type": "text", "text":
    "..."}]``, Responses API ``input_text``/``output_text`` parts, Gemini ``{"text": ...}``
    parts and Anthropic ``tool_result`` blocks whose ``content`` is itself text or blocks.
    """
    if depth > MAX_CONTENT_DEPTH:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            text_of(item, out, depth + 1)
    elif isinstance(value, dict):
        text = value.get("text")
        if isinstance(text, str):
            out.append(text)
        elif "content" in value:  # a message item or tool_result block wrapping more content
            text_of(value["content"], out, depth + 1)


def bounded_prompt(texts: list[str]) -> tuple[str, int]:
    """(prompt text cut at ``MAX_PROMPT_TEXT_CHARS``, total characters before cutting)."""
    joined = "\n".join(t for t in texts if t)
    return joined[:MAX_PROMPT_TEXT_CHARS], len(joined)


def model_from_mapping(mapping: Any, key: str = "model") -> str | None:
    if isinstance(mapping, dict):
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def flag(mapping: Any, key: str | None, default: bool = False) -> bool:
    """A boolean body field such as ``stream``; anything not a real boolean counts as default."""
    if key and isinstance(mapping, dict):
        value = mapping.get(key)
        if isinstance(value, bool):
            return value
    return default
