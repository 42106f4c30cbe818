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

    def inspect(self, obs: Observation, ctx: DetectionContext) -> list[Finding]:
        # A list, not a generator: asked of every DNS message, handshake and connection, most
        # of which name no provider, and an empty generator costs more than the answer.
        signatures, policy = ctx.signatures, ctx.policy
        found: list[Finding] = []
        for seen, identity in identified_names(obs, signatures):
            endpoint = identity.provider
            if endpoint is None or identity.relay is not None:
                continue
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
            found.append(
                refile(
                    finding_for(
                        obs,
                        detector=self.name,
                        kind="ai-service.inventory",
                        severity=Severity.INFO,
                        title=f"{endpoint.name} ({endpoint.kind}) in use",
                        evidence=evidence,
                        evidence_key=endpoint.provider,
                    ),
                    seen,
                    obs,
                )
            )
            if not policy.provider_allowed(endpoint.provider):
                found.append(
                    refile(
                        finding_for(
                            obs,
                            detector=self.name,
                            kind="ai-service.unapproved",
                            severity=Severity.MEDIUM,
                            title=f"{endpoint.name} is not an approved AI provider",
                            evidence={
                                **evidence,
                                "approved_providers": sorted(policy.allowed_providers),
                            },
                            evidence_key=endpoint.provider,
                        ),
                        seen,
                        obs,
                    )
                )
        return found
