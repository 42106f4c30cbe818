"""relay-fingerprint: replies (and requests) that give away the relay software behind a host.

    HTTPRequest (+ its HTTPResponse) -> signatures/relay_fingerprints.yaml -> findings

A relay (中转站) is usually a one-api / new-api / sub2api / claude-relay-service / LiteLLM
deployment under some domain nobody listed; its software leaves marks in what it answers:
``X-Oneapi-Request-Id`` and ``X-New-Api-Version`` headers, ``one_api_error`` /
``new_api_error`` error JSON, LiteLLM's ``x-litellm-*`` headers (which also name the model and
upstream that really served), reply ids re-wrapped as ``chatcmpl-msg_…``, keys it issued
(``cr_…``) in the client's request. The marks are data (``relay_fingerprints.yaml``, each with
its source and the weight the knowledge gives it); only passive kinds are there, since this
tool never sends a request of its own.

- ``relay-fingerprint.software``: one finding per host and relay software. Severity from the
  strongest mark seen in the exchange: ``strong`` high (the software says its name), ``medium``
  medium, ``weak`` low (shapes other software may share, e.g. a 48-character ``sk-`` key).
  Marks of ``generic`` software (relay error bodies leaking upstream hosts or stack traces,
  relay page texts) count as "unknown relay software" unless a named software matched the same
  exchange; they are not judged on a provider's official endpoint, whose own replies may name
  its own host.

HTML marks (``html``, ``body_substring``) are only looked for in HTML replies, and error marks
only in error replies (status >= 400, or a JSON body with a top-level ``error``), so that a
model's answer that happens to say "one api" is not a relay. Evidence: the marks that matched
(id, kind, weight, source), and what LiteLLM headers reveal of the real model and upstream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identify
from auditor.llm import credential_value, find_credential, split_target
from auditor.llm.wire import decode_text, json_or_none, looks_like_sse, sse_events
from auditor.model import Finding, HTTPRequest, HTTPResponse, Observation, Severity, finding_for
from auditor.signatures import RelayFingerprint, Signatures, compiled, normalise_host

WEIGHT_SEVERITY = {"strong": Severity.HIGH, "medium": Severity.MEDIUM, "weak": Severity.LOW}
GENERIC_SOFTWARE = "generic"
# Characters of a reply body searched: relay marks sit in headers, short error bodies and the
# first bytes of a page or a stream; a long answer is not read to its end.
BODY_SCAN_CHARS = 16_384
# LiteLLM headers that say which model and upstream really answered (03_relay_software_
# fingerprints.md, section 6): copied into the evidence when present.
REVEALING_HEADERS = ("x-litellm-model-name", "x-litellm-model-api-base", "x-litellm-model-id",
                     "x-litellm-version", "x-litellm-attempted-fallbacks")


def json_at(document: Any, dotted_path: str) -> Any:
    """The value at ``a.b.c`` in nested mappings, or None."""
    for part in dotted_path.split("."):
        if not isinstance(document, dict):
            return None
        document = document.get(part)
    return document


class ExchangeView:
    """What the fingerprints are matched against, computed once per request."""

    def __init__(self, request: HTTPRequest) -> None:
        self.request = request
        self.response: HTTPResponse | None = request.response
        response = self.response
        # Lower-case header name -> first value, as ``header()`` answers: every mark asks.
        self.request_headers = header_index(request.headers)
        self.response_headers = header_index(response.headers) if response else {}
        self.text = decode_text(response.body[:BODY_SCAN_CHARS]) if response else ""
        content_type = (self.response_headers.get("content-type") or "").lower()
        self.is_html = "text/html" in content_type or self.text.lstrip()[:15].lower() in (
            "<!doctype html>",
        )
        self.json: Any = None
        if response is not None and not self.is_html:
            if looks_like_sse(content_type, self.text):
                for _event, data in sse_events(self.text):
                    if isinstance(data, dict):
                        self.json = data  # the first event carries the reply's id
                        break
            else:
                self.json = json_or_none(self.text)
        status = response.status if response else 0
        self.is_error = status >= 400 or (isinstance(self.json, dict) and "error" in self.json)

    @functools.cached_property
    def credential(self) -> str | None:
        """The API key the request carries (None: none found)."""
        found = find_credential(self.request, split_target(self.request.path)[1])
        return credential_value(found[1]) if found else None

    @functools.cached_property
    def error_message(self) -> str | None:
        for path in ("error.message", "message"):
            value = json_at(self.json, path)
            if isinstance(value, str):
                return value
        return None

    @functools.cached_property
    def response_id(self) -> str | None:
        value = json_at(self.json, "id")
        if value is None:  # Anthropic's message_start wraps the message
            value = json_at(self.json, "message.id")
        return value if isinstance(value, str) else None


def header_index(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Lower-case name -> the first value of that header (``header_value`` for every name)."""
    index: dict[str, str] = {}
    for name, value in headers:
        index.setdefault(name.lower(), value)
    return index


# One matcher per kind of mark. With no reply, the view's reply fields are empty (no headers,
# no id, neither HTML nor an error), so every reply mark is simply not seen.
def _request_header(fp: RelayFingerprint, view: ExchangeView) -> bool:
    return fp.name is not None and fp.name.lower() in view.request_headers


def _issued_key(fp: RelayFingerprint, view: ExchangeView) -> bool:
    key = view.credential
    return bool(key is not None and fp.regex and compiled(fp.regex).search(key))


def _response_header(fp: RelayFingerprint, view: ExchangeView) -> bool:
    value = view.response_headers.get(fp.name.lower()) if fp.name else None
    if value is None:
        return False
    return fp.value_regex is None or compiled(fp.value_regex).search(value.strip()) is not None


def _response_header_prefix(fp: RelayFingerprint, view: ExchangeView) -> bool:
    prefix = (fp.name_prefix or "").lower()
    return any(name.startswith(prefix) for name in view.response_headers)


def _response_id(fp: RelayFingerprint, view: ExchangeView) -> bool:
    reply_id = view.response_id
    return bool(reply_id and fp.regex and compiled(fp.regex).search(reply_id))


def _html(fp: RelayFingerprint, view: ExchangeView) -> bool:
    return view.is_html and bool(fp.regex and compiled(fp.regex).search(view.text))


def _body_substring(fp: RelayFingerprint, view: ExchangeView) -> bool:
    if not view.is_html:
        return False
    lowered = view.text.lower()
    return any(value.lower() in lowered for value in fp.values)


def _error_json(fp: RelayFingerprint, view: ExchangeView) -> bool:
    if not view.is_error:
        return False
    value = json_at(view.json, fp.json_path or "")
    if not isinstance(value, str) or value not in fp.equals:
        return False
    message = view.error_message or ""
    return fp.message_regex is None or compiled(fp.message_regex).search(message) is not None


def _error_message(fp: RelayFingerprint, view: ExchangeView) -> bool:
    message = view.error_message if view.is_error else None
    return bool(message and fp.regex and compiled(fp.regex).search(message))


def _error_leak_markers(fp: RelayFingerprint, view: ExchangeView) -> bool:
    return view.is_error and any(value in view.text for value in fp.values)


Matcher = Callable[[RelayFingerprint, ExchangeView], bool]

# Each kind of mark: the part of the exchange it reads, and its matcher. A mark whose part the
# exchange lacks cannot match (see the matchers), so it is not asked: a usual JSON reply skips
# the HTML and error marks.
REQUEST, REPLY, HTML_REPLY, ERROR_REPLY = "request", "reply", "html", "error"
MARK_KINDS: dict[str, tuple[str, Matcher]] = {
    "request_header": (REQUEST, _request_header),
    "issued_key_regex": (REQUEST, _issued_key),
    "response_header_present": (REPLY, _response_header),
    "upstream_header_leak": (REPLY, _response_header),
    "response_header_regex": (REPLY, _response_header),
    "response_header_prefix": (REPLY, _response_header_prefix),
    "response_id_regex": (REPLY, _response_id),
    "html": (HTML_REPLY, _html),
    "body_substring": (HTML_REPLY, _body_substring),
    "error_json": (ERROR_REPLY, _error_json),
    "error_message_regex": (ERROR_REPLY, _error_message),
    "error_leak_markers": (ERROR_REPLY, _error_leak_markers),
}
MARK_MATCHERS: dict[str, Matcher] = {kind: matcher for kind, (_, matcher) in MARK_KINDS.items()}
MARK_PARTS: dict[str, str] = {kind: part for kind, (part, _) in MARK_KINDS.items()}


def fingerprint_matches(fp: RelayFingerprint, view: ExchangeView) -> bool:
    """Does the exchange show this mark? A kind this version does not know: never."""
    matcher = MARK_MATCHERS.get(fp.kind)
    return matcher is not None and matcher(fp, view)


Mark = tuple[RelayFingerprint, Matcher]


@functools.lru_cache(maxsize=64)  # 16 exchange shapes per signature set
def marks_to_ask(
    signatures: Signatures, reply: bool, html: bool, error: bool, official: bool
) -> tuple[Mark, ...]:
    """The marks worth asking of an exchange with these parts, in file order: not those of a
    part it lacks, nor generic marks on an official endpoint (its own replies may name it)."""
    parts = {REQUEST} | {
        part for part, present in ((REPLY, reply), (HTML_REPLY, html), (ERROR_REPLY, error))
        if present
    }
    return tuple(
        (fp, MARK_MATCHERS[fp.kind])
        for fp in signatures.relay_fingerprints
        if MARK_PARTS.get(fp.kind) in parts
        and not (official and GENERIC_SOFTWARE in fp.software)
    )


class RelayFingerprintDetector(Detector):
    name: ClassVar[str] = "relay-fingerprint"
    description: ClassVar[str] = (
        "Replies and requests that give away relay software (one-api, new-api, LiteLLM, ...)"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (HTTPRequest,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        assert isinstance(obs, HTTPRequest)
        sigs = ctx.signatures
        if not sigs.relay_fingerprints:
            return
        host = normalise_host(obs.host or obs.server_name or obs.flow.dst_ip)
        official = identify(sigs, host).provider is not None
        view = ExchangeView(obs)
        marks = marks_to_ask(
            sigs, view.response is not None, view.is_html, view.is_error, official
        )
        by_software: dict[str, list[RelayFingerprint]] = {}
        for fp, matcher in marks:
            if matcher(fp, view):
                for software in fp.software:
                    by_software.setdefault(software, []).append(fp)
        if not by_software:
            return
        if len(by_software) > 1:
            # A named software explains the generic marks too ("new api" in a New API page).
            by_software.pop(GENERIC_SOFTWARE, None)
        yield from self._findings(obs, host, by_software, view)

    def _findings(
        self,
        obs: HTTPRequest,
        host: str,
        by_software: dict[str, list[RelayFingerprint]],
        view: ExchangeView,
    ) -> Iterator[Finding]:
        revealed = {
            name: value
            for name in REVEALING_HEADERS
            if (value := view.response_headers.get(name)) is not None
        }
        for software, marks in by_software.items():
            severity = max(WEIGHT_SEVERITY[m.weight] for m in marks)
            label = "unknown relay software" if software == GENERIC_SOFTWARE else software
            evidence: dict[str, Any] = {
                "software": label,
                "marks": [
                    {"id": m.id, "kind": m.kind, "weight": m.weight, "source": m.source}
                    for m in marks
                ],
                "host": host,
                "path": split_target(obs.path)[0],
                "status": view.response.status if view.response else None,
            }
            if revealed:
                evidence["revealed"] = revealed
            finding = finding_for(
                obs,
                detector=self.name,
                kind="relay-fingerprint.software",
                severity=severity,
                title=f"{host} answers like {label} (relay software)",
                evidence=evidence,
                evidence_key=label,
            )
            finding.host = host
            yield finding
