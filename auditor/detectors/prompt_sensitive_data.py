"""prompt-sensitive-data: secrets and personal data inside the prompts sent to LLMs.

    LLMCall.prompt_text -> patterns (signatures/sensitive_data.yaml + key_formats.yaml)
                        -> validators (auditor.llm.validators) -> findings

What is looked for is data: ``sensitive_data.yaml`` (private key blocks, JWTs, passwords in
connection strings, e-mail addresses, phone numbers, payment cards with Luhn, IBANs with
mod-97, US SSNs outside the never-issued ranges, Chinese resident IDs with their ISO 7064
check character) plus every API-key format of ``key_formats.yaml`` (severity high) except
the catch-all ``generic`` ones, which would call any long ``sk-`` word a key.

- ``prompt-sensitive-data.secret``: at least one secret in the prompt.
- ``prompt-sensitive-data.pii``: at least one item of personal data.

Severity: the highest of the items found (from the signature entry), raised one step (up to
critical) when the destination is riskier than an official, in-policy endpoint: a relay in
``relays.yaml``, a host that is not an official endpoint for the call's API family, or a
destination the policy does not allow (GeoIP country, or the operator's jurisdiction). Calls to
a loopback address stay at their base severity: the prompt did not leave the machine.

Evidence never holds a value: counts by type, and at most ``SAMPLES_PER_TYPE`` masked samples
per type (first and last four characters for long values, e.g. ``4111…1111``; e-mail addresses
keep only their domain). One finding per host, category and set of types found.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from auditor.detectors.addresses import is_loopback
from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identify
from auditor.llm.validators import VALIDATORS
from auditor.model import Finding, LLMCall, Observation, Severity, finding_for
from auditor.redact import SecretPattern, SecretPatterns
from auditor.signatures import Signatures, normalise_host

# Masked samples kept per type in the evidence: enough to find the item in the source, not to
# read it back.
SAMPLES_PER_TYPE = 2
# Key formats whose provider is this label are catch-alls (e.g. any "sk-" + 20 characters).
GENERIC_KEY_PROVIDER = "generic"
# Severity of an API key found in a prompt (key_formats.yaml entries carry none of their own).
KEY_IN_PROMPT_SEVERITY = Severity.HIGH

CATEGORIES = ("secret", "pii")


@dataclass(frozen=True, slots=True)
class SensitiveMatcher:
    """One compiled thing to look for, whichever file it came from."""

    type_id: str
    category: str
    severity: Severity
    # The regex, and its keywords: it runs only when the prompt holds one.
    secret: SecretPattern
    validator: str


def matchers_for(signatures: Signatures) -> list[SensitiveMatcher]:
    """The compiled patterns of one signature set, built once per set."""
    return _compiled_matchers(signatures)[0]


@functools.lru_cache(maxsize=1)  # one signature set at a time
def _compiled_matchers(signatures: Signatures) -> tuple[list[SensitiveMatcher], SecretPatterns]:
    """``matchers_for``, and their patterns with the index of their keywords."""
    matchers = [
        SensitiveMatcher(
            entry.id, entry.category, Severity.parse(entry.severity),
            SecretPattern.of(entry.pattern, entry.keywords), entry.validator,
        )
        for entry in signatures.sensitive_data
    ]
    matchers += [
        SensitiveMatcher(f"api-key:{key_format.id}", "secret", KEY_IN_PROMPT_SEVERITY,
                         SecretPattern.of(key_format.pattern, key_format.keywords), "none")
        for key_format in signatures.key_formats
        if key_format.provider != GENERIC_KEY_PROVIDER
    ]  # fmt: skip
    return matchers, SecretPatterns(matcher.secret for matcher in matchers)


def mask_value(type_id: str, value: str) -> str:
    """A sample that says what was found without saying the value."""
    compact = "".join(value.split())
    if "@" in compact and type_id.startswith("email"):
        return "…@" + compact.rsplit("@", 1)[1]
    if len(compact) >= 12:
        return f"{compact[:4]}…{compact[-4:]}"
    return f"…({len(compact)} chars)"


@dataclass
class PromptScan:
    counts: Counter[str]
    samples: dict[str, list[str]]
    severity: dict[str, Severity]  # highest base severity per category


def scan_prompt(
    text: str, signatures: Signatures, reveal: bool = False, prefilter: bool = True
) -> dict[str, PromptScan]:
    """What of each category ``text`` holds; categories with nothing found are absent.

    ``prefilter=False`` runs every regex whatever the keywords say (the tests compare both)."""
    found: dict[str, PromptScan] = {}
    matchers, patterns = _compiled_matchers(signatures)
    # Most regexes need a literal (a key prefix, "@", "://"): substring tests over the folded
    # prompt are far cheaper than regex passes that cannot match. casefold, not lower:
    # re.IGNORECASE also equates "ſ" with "s" and the Kelvin sign with "k", which casefold maps
    # too, so a (?i) match's keyword is still found in the folded text.
    to_run = patterns.may_occur_in(text.casefold()) if prefilter else range(len(matchers))
    # Text already counted: a phone number inside an international one, the password part of
    # a connection string read as an e-mail address, are the same item, counted once (entries
    # earlier in the file win).
    claimed: list[tuple[int, int]] = []
    for index in to_run:
        matcher = matchers[index]
        check = VALIDATORS[matcher.validator]
        for match in matcher.secret.pattern.finditer(text):
            # Key formats with a capture group mark the key itself; the rest the whole match.
            value = next((g for g in match.groups() if g), match.group(0))
            start, end = match.span()
            if any(start < other_end and other_start < end for other_start, other_end in claimed):
                continue
            if not check(value):
                continue
            claimed.append((start, end))
            scan = found.setdefault(matcher.category, PromptScan(Counter(), {}, {}))
            scan.counts[matcher.type_id] += 1
            samples = scan.samples.setdefault(matcher.type_id, [])
            if len(samples) < SAMPLES_PER_TYPE:
                samples.append(value if reveal else mask_value(matcher.type_id, value))
            scan.severity[matcher.category] = max(
                scan.severity.get(matcher.category, Severity.INFO), matcher.severity
            )
    return found


def destination_risks(call: LLMCall, ctx: DetectionContext) -> list[str]:
    """Why the destination is riskier than an official, in-policy endpoint (empty: it is not)."""
    if is_loopback(call.flow.dst_ip):
        return []
    host = normalise_host(call.request.host or call.host)
    identity = identify(ctx.signatures, host)
    risks: list[str] = []
    if identity.relay is not None:
        risks.append(f"relay ({identity.relay.domain})")
    if identity.provider is None or call.family not in identity.provider.api_shapes:
        risks.append("not an official endpoint for this API")
    country = ctx.geo.lookup(call.flow.dst_ip).country
    if country and not ctx.policy.country_allowed(country):
        risks.append(f"cross-border (address in {country})")
    if identity.provider is not None and not ctx.policy.jurisdiction_allowed(
        identity.provider.jurisdiction
    ):
        risks.append(f"cross-border (operator in {identity.provider.jurisdiction})")
    return risks


class PromptSensitiveDataDetector(Detector):
    name: ClassVar[str] = "prompt-sensitive-data"
    description: ClassVar[str] = "Secrets and personal data inside LLM prompts"
    observes: ClassVar[tuple[type[Observation], ...]] = (LLMCall,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        assert isinstance(obs, LLMCall)
        if not obs.prompt_text:
            return
        found = scan_prompt(obs.prompt_text, ctx.signatures, ctx.policy.reveal_evidence)
        if not found:
            return
        risks = destination_risks(obs, ctx)
        host = normalise_host(obs.request.host or obs.host)
        for category in CATEGORIES:
            scan = found.get(category)
            if scan is None:
                continue
            base = scan.severity[category]
            severity = Severity(min(base + 1, Severity.CRITICAL)) if risks else base
            types = sorted(scan.counts)
            what = "secrets" if category == "secret" else "personal data"
            finding = finding_for(
                obs,
                detector=self.name,
                kind=f"prompt-sensitive-data.{category}",
                severity=severity,
                title=f"Prompt to {host} holds {what}: {', '.join(types)}",
                evidence={
                    "counts": dict(sorted(scan.counts.items())),
                    "samples": {t: scan.samples[t] for t in types},
                    "api": obs.api,
                    "model": obs.model_requested,
                    "host": host,
                    "base_severity": base.label,
                    "destination_risks": risks,
                },
                evidence_key=",".join(types),
            )
            finding.host = host
            yield finding
