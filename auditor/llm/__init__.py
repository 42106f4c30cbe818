"""Recognising LLM API calls in HTTP requests, and reading their replies.

    HTTPRequest -> recognise() -> LLMCall -> detectors (plaintext-llm, unofficial-llm-endpoint, ...)

The pipeline calls ``recognise`` for every ``HTTPRequest``. A request is an LLM call when its
method and path (without query) match an API shape from ``signatures/api_shapes.yaml`` and its
JSON body has that shape's top-level keys. When the body cannot be read (not UTF-8, not JSON,
cut off, undecodable), path plus a credential header or query parameter is enough; the call
then records why the body was unreadable. One module per API family pulls out the model,
stream flag and prompt text (``openai``, ``anthropic``, ``gemini``, ``ollama``);
``parse_response`` fills the served model, response id and usage from the reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from auditor.llm import anthropic, gemini, ollama, openai
from auditor.llm.wire import BodyReading, RequestFacts, bounded_prompt, read_json_body
from auditor.model import HTTPRequest, HTTPResponse, LLMCall
from auditor.signatures import ApiShape, normalise_host

log = logging.getLogger(__name__)

FAMILY_MODULES: dict[str, ModuleType] = {
    module.FAMILY: module for module in (openai, anthropic, gemini, ollama)
}

# Where API keys travel when a shape does not list its own: the headers and query parameter the
# official SDKs use (OpenAI/compatible: Authorization Bearer; Anthropic: x-api-key; Azure:
# api-key; Gemini: x-goog-api-key or ?key=). Checked after the shape's own list.
DEFAULT_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
DEFAULT_CREDENTIAL_QUERY = ("key",)

_BEARER = "bearer "


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """(path, query parameters) of a request target, also in absolute form (proxy requests)."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    else:
        path, _, query = target.partition("?")
    # Most targets have no query: skip parse_qs's work for the {} it would give.
    return path, parse_qs(query, keep_blank_values=True) if query else {}


def credential_value(header_value: str) -> str:
    """The key in a credential header value: without a ``Bearer`` scheme, trimmed."""
    value = header_value.strip()
    if value.lower().startswith(_BEARER):
        value = value[len(_BEARER) :].strip()
    return value


def find_credential(
    request: HTTPRequest, query: dict[str, list[str]], shape: ApiShape | None = None
) -> tuple[str, str] | None:
    """(where, key) of the API key the request carries: header name, or ``?param`` for a query."""
    header_names = (*(shape.credential_headers if shape else ()), *DEFAULT_CREDENTIAL_HEADERS)
    for name in dict.fromkeys(header_names):
        raw = request.header(name)
        value = credential_value(raw) if raw else ""
        if value:
            return name, value
    query_names = (*(shape.credential_query if shape else ()), *DEFAULT_CREDENTIAL_QUERY)
    for name in dict.fromkeys(query_names):
        values = [v for v in query.get(name, []) if v]
        if values:
            return f"?{name}", values[0]
    return None


# The last request's answer: the pipeline and two detectors ask about the same request in a
# row, and the answer costs a JSON parse of the body.
_last_answer: list[tuple[HTTPRequest, list[ApiShape], LLMCall | None]] = []


def recognise(request: HTTPRequest, shapes: list[ApiShape]) -> LLMCall | None:
    """The LLM call ``request`` is, or None when it matches no API shape."""
    if _last_answer:
        last_request, last_shapes, answer = _last_answer[0]
        if last_request is request and last_shapes is shapes:
            return answer
    answer = _recognise(request, shapes)
    _last_answer[:] = [(request, shapes, answer)]
    return answer


def _recognise(request: HTTPRequest, shapes: list[ApiShape]) -> LLMCall | None:
    path, query = split_target(request.path)
    method = request.method.upper()
    reading: BodyReading | None = None
    for shape in shapes:
        if shape.method != method or not shape.path_pattern.search(path):
            continue
        if shape.family not in FAMILY_MODULES:
            continue  # a shape for a family this version cannot parse
        if reading is None:  # read the body once, only for requests whose path matched
            reading = read_json_body(request.body, request.body_truncated, request.body_error)
        credential = find_credential(request, query, shape)
        if reading.value is not None:
            body = reading.value
            if not isinstance(body, dict) or not all(key in body for key in shape.body_keys):
                continue
            return _build_call(request, shape, path, body, credential, None)
        if credential is not None:
            return _build_call(request, shape, path, None, credential, reading.error)
    return None


def _build_call(
    request: HTTPRequest,
    shape: ApiShape,
    path: str,
    body: Any,
    credential: tuple[str, str] | None,
    body_error: str | None,
) -> LLMCall:
    module = FAMILY_MODULES[shape.family]
    facts: RequestFacts = module.request_facts(body, path, shape)
    prompt_text, prompt_chars = bounded_prompt(facts.texts)
    server_name = request.server_name or (normalise_host(request.host) if request.host else None)
    call = LLMCall(
        flow=request.flow,
        ts=request.ts,
        server_name=server_name,
        origin=request.origin,
        api=shape.id,
        family=shape.family,
        request=request,
        model_requested=facts.model,
        stream=facts.stream,
        prompt_text=prompt_text,
        prompt_chars=prompt_chars,
        credential_header=credential[0] if credential else None,
        credential=credential[1] if credential else None,
        body_unreadable=body_error,
    )
    if request.response is not None:
        parse_response(call, request.response)
    return call


def parse_response(call: LLMCall, response: HTTPResponse) -> LLMCall:
    """Fill ``model_served``, ``response_id`` and ``usage`` of ``call`` from its reply.

    A reply that cannot be read leaves the call as it was: the request side is still true.
    """
    module = FAMILY_MODULES.get(call.family)
    if module is None:
        return call
    parser: Callable[[LLMCall, HTTPResponse], LLMCall] = module.parse_response
    try:
        return parser(call, response)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        log.debug("unreadable %s reply on %s: %s", call.family, call.host, exc)
        return call


__all__ = [
    "FAMILY_MODULES",
    "credential_value",
    "find_credential",
    "parse_response",
    "recognise",
    "split_target",
]
