"""relay-domain: traffic to a known relay / reseller / aggregator of AI APIs (中转站).

    observations (SNI, DNS question, HTTP Host, connection name) -> this detector -> findings

A relay sits between the organisation and the model provider: it sees every prompt and key,
may swap the model, and its operator and jurisdiction are usually unknown. The domains are data
(``signatures/relays.yaml``, each with its public source); this module only decides how severe
a match is:

- ``relay-domain.known`` (high): a confirmed reseller or charity relay, or a public instance of
  relay software. Confirmed entries of other categories (a relay directory, a relay-software
  vendor's site) are about relays rather than relays themselves: medium.
- ``relay-domain.suspected`` (medium): an entry whose confidence is "suspected" (e.g. a user
  submission to a relay ranking that nobody verified).
- ``relay-domain.aggregator`` (low): a legitimate business reselling many upstreams
  (OpenRouter-like); still a third party holding the prompts.

One finding per host and relay domain: the DNS lookup, TLS handshake and HTTP request to the
same host merge into it.
"""

from __future__ import annotations

from typing import ClassVar

from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identified_names, refile
from auditor.model import (
    Connection,
    DNSMessage,
    Finding,
    HTTPRequest,
    Observation,
    Severity,
    TLSHandshake,
    finding_for,
)
from auditor.signatures import RelayDomain

# Categories of relays.yaml that are relay endpoints proper (traffic to them carries prompts).
RELAY_ENDPOINT_CATEGORIES = frozenset(
    {"relay_reseller", "relay_charity", "selfhosted_proxy_public_instance"}
)
AGGREGATOR_CATEGORY = "aggregator"
SUSPECTED_CONFIDENCE = "suspected"


def classify(relay: RelayDomain) -> tuple[str, Severity]:
    """(finding kind, severity) for traffic to ``relay``."""
    if relay.category == AGGREGATOR_CATEGORY:
        return "relay-domain.aggregator", Severity.LOW
    if relay.confidence == SUSPECTED_CONFIDENCE:
        return "relay-domain.suspected", Severity.MEDIUM
    if relay.category in RELAY_ENDPOINT_CATEGORIES:
        return "relay-domain.known", Severity.HIGH
    return "relay-domain.known", Severity.MEDIUM


class RelayDomainDetector(Detector):
    name: ClassVar[str] = "relay-domain"
    description: ClassVar[str] = (
        "Traffic to a known relay, reseller or aggregator of AI APIs (signatures/relays.yaml)"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (
        TLSHandshake,
        DNSMessage,
        HTTPRequest,
        Connection,
    )

    def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Finding]:
        # A list, not a generator: asked of every DNS message, handshake and connection, most
        # of which name no relay, and an empty generator costs more than the answer.
        found: list[Finding] = []
        for seen, identity in identified_names(obs, ctx.signatures):
            relay = identity.relay
            if relay is None:
                continue
            kind, severity = classify(relay)
            evidence = {
                "relay_domain": relay.domain,
                "matched_host": seen.name,
                "category": relay.category,
                "confidence": relay.confidence,
                "operator": relay.operator or "unknown",
                "platform": relay.platform,
                "seen_in": seen.where,
                "signature_source": relay.source,
            }
            if relay.notes:
                evidence["notes"] = relay.notes
            finding = finding_for(
                obs,
                detector=self.name,
                kind=kind,
                severity=severity,
                title=f"Traffic to AI relay {relay.domain} ({relay.category}, {relay.confidence})",
                evidence=evidence,
                evidence_key=relay.domain,
            )
            found.append(refile(finding, seen, obs))
        return found
