"""ai-service: the inventory of official AI services the organisation talks to.

    observations (SNI, DNS question, HTTP Host, connection name) -> this detector -> findings

Every destination whose name is an official provider endpoint (``signatures/providers.yaml``)
gets an ``ai-service.inventory`` finding (info): the per-host table then lists which providers
are in use, by whom operated, under which jurisdiction. When the policy approves a list of
providers (``allowed_providers``) and this one is not on it, ``ai-service.unapproved`` (medium)
is added. Hosts that also match a relay entry are left to ``relay-domain``, which inventories
relays and aggregators, so one host is not filed as both.
"""

from __future__ import annotations

from typing import Any, ClassVar

from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import (
    PerSeenName,
    SeenName,
    identified_names,
    named_finding,
)
from auditor.model import (
    Connection,
    DNSMessage,
    Finding,
    HTTPRequest,
    Observation,
    Severity,
    TLSHandshake,
)
from auditor.signatures import ProviderEndpoint

# What an inventory finding says of one seen name: (title, evidence).
InventoryParts = tuple[str, dict[str, Any]]


def inventory_parts(endpoint: ProviderEndpoint, seen: SeenName) -> InventoryParts:
    evidence = {
        "provider": endpoint.provider,
        "provider_name": endpoint.name,
        "operator": endpoint.operator,
        "jurisdiction": endpoint.jurisdiction,
        "kind": endpoint.kind,
        "category": "official",
        "official": True,
        "api_shapes": list(endpoint.api_shapes),
        "endpoint_domain": endpoint.domain,
        "seen_in": seen.where,
        "signature_source": endpoint.source,
    }
    return f"{endpoint.name} ({endpoint.kind}) in use", evidence


class AIServiceDetector(Detector):
    name: ClassVar[str] = "ai-service"
    description: ClassVar[str] = (
        "Inventory of official AI provider endpoints in use (signatures/providers.yaml)"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (
        TLSHandshake,
        DNSMessage,
        HTTPRequest,
        Connection,
    )

    def __init__(self) -> None:
        self._parts: PerSeenName[InventoryParts] = PerSeenName()

    def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Finding]:
        # A list, not a generator: asked of every DNS message, handshake and connection, most
        # of which name no provider, and an empty generator costs more than the answer.
        signatures, policy = ctx.signatures, ctx.policy
        found: list[Finding] = []
        for seen, identity in identified_names(obs, signatures):
            endpoint = identity.provider
            if endpoint is None or identity.relay is not None:
                continue
            known_parts = self._parts.values_for(signatures)
            parts = known_parts.get(seen)
            if parts is None:
                parts = known_parts[seen] = inventory_parts(endpoint, seen)
            title, evidence = parts
            found.append(
                named_finding(
                    obs,
                    seen,
                    detector=self.name,
                    kind="ai-service.inventory",
                    severity=Severity.INFO,
                    title=title,
                    evidence=dict(evidence),  # each finding its own, as if built afresh
                    evidence_key=endpoint.provider,
                )
            )
            if not policy.provider_allowed(endpoint.provider):
                found.append(
                    named_finding(
                        obs,
                        seen,
                        detector=self.name,
                        kind="ai-service.unapproved",
                        severity=Severity.MEDIUM,
                        title=f"{endpoint.name} is not an approved AI provider",
                        evidence={
                            **evidence,
                            "approved_providers": sorted(policy.allowed_providers),
                        },
                        evidence_key=endpoint.provider,
                    )
                )
        return found
