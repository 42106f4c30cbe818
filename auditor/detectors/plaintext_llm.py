"""plaintext-llm: prompts and API keys that crossed the network readable.

    LLMCall / HTTPRequest -> this detector -> findings

- ``plaintext-llm.prompt`` (critical): an LLM call sent over cleartext HTTP; anyone on the path
  read the prompt. Evidence: API, model, prompt size, a short excerpt with secrets masked (key
  formats from ``signatures/key_formats.yaml`` plus generic secret shapes), and the prompt's
  SHA-256 so the same prompt can be correlated without storing it. Calls to a loopback address
  never left the machine: info, kept in the inventory but not raised as an exposure.
- ``plaintext-llm.api-key`` (critical): an API key in a cleartext header or query parameter,
  from an LLM call or from any other cleartext request whose Authorization / key header holds a
  known key format. Evidence: where it was, the key masked (prefix, length, SHA-256 prefix; the
  key itself only with ``policy.reveal_evidence``) and the key format id that matched. One
  finding per key and host.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, ClassVar

from auditor.detectors.addresses import is_loopback
from auditor.detectors.base import DetectionContext, Detector
from auditor.llm import credential_value, recognise, split_target
from auditor.model import Finding, HTTPRequest, LLMCall, Observation, Severity, finding_for
from auditor.redact import (
    SecretPattern,
    SecretPatterns,
    excerpt,
    fingerprint,
    mask_secret,
    text_digest,
)
from auditor.signatures import KeyFormat, Signatures

# Headers of a non-LLM request checked for keys, besides those the API shapes name: the two
# that carry keys for most HTTP APIs. A value there is reported only if a key format matches,
# so an ordinary session token in Authorization is not called an AI key.
GENERIC_KEY_HEADERS = ("authorization", "x-api-key")


def matching_key_format(value: str, signatures: Signatures) -> KeyFormat | None:
    """The first key format ``value`` matches (remembered: the same keys come back)."""
    return _matching_key_format(value, signatures)


@functools.lru_cache(maxsize=4096)
def _matching_key_format(value: str, signatures: Signatures) -> KeyFormat | None:
    patterns = key_patterns(signatures)
    for index in patterns.may_occur_in(value.casefold()):
        if patterns.patterns[index].pattern.search(value):
            return signatures.key_formats[index]
    return None


@functools.lru_cache(maxsize=4)
def key_patterns(signatures: Signatures) -> SecretPatterns:
    """The key formats (with their keywords) as patterns to mask, built once per signature set."""
    return SecretPatterns(SecretPattern.of(k.pattern, k.keywords) for k in signatures.key_formats)


class PlaintextLLMDetector(Detector):
    name: ClassVar[str] = "plaintext-llm"
    description: ClassVar[str] = "LLM prompts and API keys sent over cleartext HTTP"
    observes: ClassVar[tuple[type[Observation], ...]] = (LLMCall, HTTPRequest)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        if isinstance(obs, LLMCall):
            if not obs.request.encrypted:
                yield from self._call_in_cleartext(obs, ctx)
        # LLM calls are reported from their LLMCall (the pipeline feeds both); reporting the
        # key from the HTTPRequest too would count one request twice.
        elif (
            isinstance(obs, HTTPRequest)
            and not obs.encrypted
            and recognise(obs, ctx.signatures.api_shapes) is None
        ):
            yield from self._key_in_plain_request(obs, ctx)

    def _call_in_cleartext(self, call: LLMCall, ctx: DetectionContext) -> Iterable[Finding]:
        policy, sigs = ctx.policy, ctx.signatures
        local = is_loopback(call.flow.dst_ip)
        evidence: dict[str, Any] = {
            "api": call.api,
            "family": call.family,
            "model": call.model_requested,
            "prompt_chars": call.prompt_chars,
            "prompt_excerpt": excerpt(
                call.prompt_text, policy.excerpt_chars, policy.reveal_evidence, key_patterns(sigs)
            ),
            "prompt_sha256": text_digest(call.prompt_text),
            "path": split_target(call.request.path)[0],
        }
        if call.body_unreadable:
            evidence["body_unreadable"] = call.body_unreadable
        if local:
            evidence["note"] = "loopback destination: the prompt did not leave this machine"
        yield finding_for(
            call,
            detector=self.name,
            kind="plaintext-llm.prompt",
            severity=Severity.INFO if local else Severity.CRITICAL,
            title=(
                "LLM prompt sent over loopback HTTP" if local
                else "LLM prompt sent in cleartext: the prompt crossed the network readable"
            ),
            evidence=evidence,
            evidence_key=call.api,
        )
        if call.credential and call.credential_header:
            yield self._key_finding(call, call.credential_header, call.credential, ctx, local)

    def _key_in_plain_request(
        self, request: HTTPRequest, ctx: DetectionContext
    ) -> Iterable[Finding]:
        sigs = ctx.signatures
        shape_headers = [h for shape in sigs.api_shapes for h in shape.credential_headers]
        reported: set[str] = set()
        for header in dict.fromkeys((*GENERIC_KEY_HEADERS, *shape_headers)):
            value = request.header(header)
            key = credential_value(value) if value else None
            if not key or key in reported or matching_key_format(key, sigs) is None:
                continue
            reported.add(key)
            yield self._key_finding(request, header, key, ctx, is_loopback(request.flow.dst_ip))

    def _key_finding(
        self, obs: Observation, where: str, key: str, ctx: DetectionContext, local: bool
    ) -> Finding:
        key_format = matching_key_format(key, ctx.signatures)
        return finding_for(
            obs,
            detector=self.name,
            kind="plaintext-llm.api-key",
            severity=Severity.INFO if local else Severity.CRITICAL,
            title=f"API key sent in cleartext ({where})",
            evidence={
                "header": where,
                "key": mask_secret(key, ctx.policy.reveal_evidence),
                "key_format": key_format.id if key_format else None,
                "key_provider": key_format.provider if key_format else None,
            },
            evidence_key=fingerprint(key),
        )

