"""Enforcement in the proxy: block LLM calls the detectors flag, or mask keys in prompts.

    client -> mitmproxy -> [request: this addon judges it with the detector core] -> upstream
                                   \\-> blocked: a 403 answer from the proxy, nothing goes on

Opt-in and separate from the audit addon (``addons/egress_enforce.py``; the audit addon itself
never changes traffic). At ``request`` time the request is turned into the same ``HTTPRequest``
observation the audit addon feeds, and run through a fresh ``Pipeline`` (the same detectors,
signatures and policy, nothing kept between requests). Then:

- ``enforce_block_severity`` / ``enforce_block_kinds``: a finding at or above the severity, or
  of a listed kind or detector (``relay-domain`` or ``relay-domain.known``), answers the client
  with 403 and a JSON error in the shape OpenAI/Anthropic SDKs surface; the request is not sent.
- ``enforce_redact_keys``: API keys of ``signatures/key_formats.yaml`` inside the request body
  (a key pasted into a prompt) are masked before the request goes on. The credential headers the
  API itself needs are left alone.

What a request alone shows is what can be enforced: the destination's name (relay, unofficial
endpoint, unapproved provider), cleartext, keys. TLS weaknesses are reported by the audit addon,
not blocked here. If judging fails the request goes on (fail-open) and the failure is counted.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, http
from mitmproxy.exceptions import OptionsError

from auditor.model import Finding, Severity
from auditor.proxy.adapter import (
    DEFAULT_MAX_BODY_SCAN,
    DETECTION_OPTIONS,
    declare_detection_options,
    detection_context_from,
    guarded,
    http_request_from,
)
from auditor.redact import mask_secret

if TYPE_CHECKING:
    from mitmproxy.addonmanager import Loader

    from auditor.detectors.base import DetectionContext

log = logging.getLogger(__name__)

BLOCK_STATUS = 403  # what OpenAI and Anthropic answer for a request that is not permitted
SEVERITY_CHOICES = ["", *(s.label for s in Severity)]
# Bodies redaction may rewrite: text the client wrote. Binary uploads are left as they are.
REDACTABLE_CONTENT_TYPE = re.compile(r"^(application/(json|x-www-form-urlencoded|.*\+json)|text/)")


def blocked_answer(findings: list[Finding]) -> http.Response:
    """A JSON error SDKs show as it is: which policy finding stopped the request."""
    worst = max(findings, key=lambda f: f.severity)
    kinds = sorted({f.kind for f in findings})
    message = (
        f"Blocked by the organisation's AI egress policy: {', '.join(kinds)} "
        f"({worst.host}: {worst.title})"
    )
    # One body both SDKs read: OpenAI's {"error": {message, type, param, code}} and Anthropic's
    # {"type": "error", "error": {type, message}} ("permission_error" is Anthropic's 403 type).
    body = {
        "type": "error",
        "error": {
            "type": "permission_error",
            "code": "blocked_by_egress_policy",
            "param": None,
            "message": message,
        },
    }
    return http.Response.make(
        BLOCK_STATUS,
        json.dumps(body).encode(),
        {"content-type": "application/json", "x-auditor-blocked": ",".join(kinds)},
    )


class EgressEnforce:
    """mitmproxy addon: stop (or mask keys in) LLM calls the detectors flag, before they leave."""

    def __init__(self) -> None:
        self.context: DetectionContext | None = None
        self.block_severity: Severity | None = None
        self.block_kinds: frozenset[str] = frozenset()
        self.redact_keys = False
        self.max_body_scan = DEFAULT_MAX_BODY_SCAN
        self.stats: Counter[str] = Counter()

    def load(self, loader: Loader) -> None:
        declare_detection_options(loader)
        loader.add_option(
            "enforce_block_severity",
            str,
            "",
            "Block requests with a finding at or above this severity (empty: off).",
            choices=SEVERITY_CHOICES,
        )
        loader.add_option(
            "enforce_block_kinds",
            str,
            "",
            "Comma-separated finding kinds or detector names to block, "
            "e.g. plaintext-llm.prompt,relay-domain (empty: off).",
        )
        loader.add_option(
            "enforce_redact_keys",
            bool,
            False,
            "Mask API keys found in request bodies (prompts) before they are sent upstream.",
        )

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        if "enforce_block_severity" in updated:
            text = options.enforce_block_severity
            try:
                self.block_severity = Severity.parse(text) if text else None
            except ValueError as exc:
                raise OptionsError(f"enforce_block_severity: {exc}") from None
        if "enforce_block_kinds" in updated:
            kinds = [k.strip() for k in options.enforce_block_kinds.split(",")]
            if any(" " in k for k in kinds):
                raise OptionsError(
                    f"enforce_block_kinds: {options.enforce_block_kinds!r}: "
                    "expected kinds or detector names separated by commas"
                )
            self.block_kinds = frozenset(k for k in kinds if k)
        if "enforce_redact_keys" in updated:
            self.redact_keys = bool(options.enforce_redact_keys)
        if "auditor_max_body_scan" in updated and hasattr(options, "auditor_max_body_scan"):
            self.max_body_scan = max(1, int(options.auditor_max_body_scan))
        if self.context is None or updated & DETECTION_OPTIONS:
            self.context = detection_context_from(options)

    @property
    def active(self) -> bool:
        return bool(self.block_severity is not None or self.block_kinds or self.redact_keys)

    def hook_failed(self, hook: str, exc: Exception) -> None:
        self.stats[f"errors.{hook}"] += 1
        log.warning(
            "[auditor] enforcement %s failed; the request went on unchanged: %s: %s",
            hook,
            type(exc).__name__,
            exc,
            exc_info=self.stats[f"errors.{hook}"] <= 3,
        )

    def blocks(self, finding: Finding) -> bool:
        if self.block_severity is not None and finding.severity >= self.block_severity:
            return True
        return finding.kind in self.block_kinds or finding.detector in self.block_kinds

    def judge(self, flow: http.HTTPFlow) -> list[Finding]:
        """The findings the detector core makes of this request alone."""
        from auditor.pipeline import Pipeline

        assert self.context is not None
        scratch = Pipeline(self.context)  # fresh: nothing is merged or kept across requests
        scratch.feed(http_request_from(flow, self.max_body_scan))
        return list(scratch.findings.values())

    @guarded
    def request(self, flow: http.HTTPFlow) -> None:
        if not self.active or flow.response is not None or self.context is None:
            return
        if self.block_severity is not None or self.block_kinds:
            blocking = [f for f in self.judge(flow) if self.blocks(f)]
            if blocking:
                flow.response = blocked_answer(blocking)
                self.stats["blocked"] += 1
                kinds = ", ".join(sorted({f.kind for f in blocking}))
                host, path = blocking[0].host, flow.request.path
                log.warning("[auditor] BLOCKED %s %s: %s", host, path, kinds)
                return
        if self.redact_keys:
            masked = self.redact(flow)
            if masked:
                self.stats["keys_masked"] += masked
                host = flow.request.pretty_host
                log.warning("[auditor] MASKED %d key(s) in the request body to %s", masked, host)

    def redact(self, flow: http.HTTPFlow) -> int:
        """Mask key-format matches in the request body; the number masked."""
        request = flow.request
        raw = request.raw_content
        content_type = (request.headers.get("content-type") or "").lower()
        if not raw or not REDACTABLE_CONTENT_TYPE.match(content_type):
            return 0
        if len(raw) > self.max_body_scan:
            # Rewriting needs the whole body; one larger than the scan bound goes on as it is.
            self.stats["redact.skipped_large_body"] += 1
            return 0
        text = request.get_text(strict=False)
        if text is None:
            return 0
        assert self.context is not None
        masked = 0
        for key_format in self.context.signatures.key_formats:
            text, count = key_format.pattern.subn(_masked_match, text)
            masked += count
        if masked:
            request.text = text  # mitmproxy re-encodes and fixes content-length
        return masked

    @guarded
    def done(self) -> None:
        if self.active:
            counts: dict[str, Any] = dict(sorted(self.stats.items()))
            log.info("[auditor] enforcement: %s", counts or "nothing blocked or masked")


def _masked_match(match: re.Match[str]) -> str:
    # Patterns with a group mark the key itself inside context (e.g. "api_key = <key>").
    if match.re.groups and match.group(1):
        start, end = match.span(1)
        whole = match.group(0)
        offset = match.start(0)
        return whole[: start - offset] + mask_secret(match.group(1)) + whole[end - offset :]
    return mask_secret(match.group(0))
