"""cross-border: AI traffic leaving the organisation's allowed countries or jurisdictions.

    Connection / LLMCall -> this detector -> findings

Both sources emit a ``Connection`` per flow, so judging handshakes and requests as well would
only count the same flow several times.

Only AI-related destinations are judged, never every CDN connection: a name that is an
official provider endpoint or a relay in the signatures, or any host an LLM call was seen on
(the ``LLMCall`` itself is judged, so unknown hosts are covered the moment they carry a call).

- ``cross-border.destination`` (medium): the address's GeoIP country is not allowed by the
  policy. Low when the address is anycast/CDN: the country is only where the nearest edge
  answered, not where the data is processed; the evidence says so.
- ``cross-border.jurisdiction``: the operator's jurisdiction (providers.yaml) is not allowed.
  High for an API (the organisation's data is sent to a provider governed elsewhere, or an LLM
  call was seen), medium for web/auth hosts. Region-scoped cloud endpoints (the tenant picks the
  region) and "unknown" jurisdictions are not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identified_names
from auditor.model import Connection, Finding, LLMCall, Observation, Severity, finding_for
from auditor.signatures import ProviderEndpoint, RelayDomain

# Provider endpoint kinds that receive the organisation's data through an API.
API_KINDS = frozenset({"api", "cloud"})


class CrossBorderDetector(Detector):
    name: ClassVar[str] = "cross-border"
    description: ClassVar[str] = (
        "AI destinations in countries or jurisdictions the policy does not allow"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (Connection, LLMCall)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        # Not a generator: asked of every connection, most of which go nowhere AI-related, and
        # an empty generator costs more than the answer.
        endpoint, relay = self._ai_identity(obs, ctx)
        if endpoint is None and relay is None and not isinstance(obs, LLMCall):
            return []  # not an AI destination: a country alone is not a finding
        return self._judge(obs, ctx, endpoint, relay)

    def _judge(
        self,
        obs: Observation,
        ctx: DetectionContext,
        endpoint: ProviderEndpoint | None,
        relay: RelayDomain | None,
    ) -> Iterator[Finding]:
        policy = ctx.policy
        geo = ctx.geo.lookup(obs.flow.dst_ip)
        foreign_address = bool(geo.country) and not policy.country_allowed(geo.country)
        foreign_operator = (
            endpoint is not None
            and not endpoint.region_scoped
            and not policy.jurisdiction_allowed(endpoint.jurisdiction)
        )
        if not foreign_address and not foreign_operator:
            return  # the usual case: the evidence below is built only for a finding
        about: dict[str, Any] = {
            "address": obs.flow.dst_ip,
            "country": geo.country,
            "asn": geo.asn,
            "as_org": geo.as_org,
            "geo_source": geo.source,
            "home_jurisdiction": policy.home_jurisdiction,
            "provider": endpoint.provider if endpoint else None,
            "operator": endpoint.operator if endpoint else (relay.operator if relay else None),
            "relay_domain": relay.domain if relay else None,
            "llm_call_seen": isinstance(obs, LLMCall),
        }
        if foreign_address:
            evidence = {**about, "allowed_countries": sorted(policy.allowed_countries)}
            if geo.anycast:
                evidence["note"] = (
                    "anycast/CDN address: the country is where the nearest edge answered, not "
                    "where the data is processed"
                )
            yield finding_for(
                obs,
                detector=self.name,
                kind="cross-border.destination",
                severity=Severity.LOW if geo.anycast else Severity.MEDIUM,
                title=f"AI traffic to an address in {geo.country}",
                evidence=evidence,
                evidence_key=geo.country,
            )
        if foreign_operator:
            assert endpoint is not None
            sends_data = endpoint.kind in API_KINDS or isinstance(obs, LLMCall)
            yield finding_for(
                obs,
                detector=self.name,
                kind="cross-border.jurisdiction",
                severity=Severity.HIGH if sends_data else Severity.MEDIUM,
                title=(
                    f"{endpoint.name} is operated under {endpoint.jurisdiction} jurisdiction "
                    f"(home: {policy.home_jurisdiction})"
                ),
                evidence={
                    **about,
                    "jurisdiction": endpoint.jurisdiction,
                    "basis": endpoint.jurisdiction_basis or endpoint.source,
                    "endpoint_kind": endpoint.kind,
                    "allowed_jurisdictions": sorted(policy.allowed_jurisdictions),
                },
                evidence_key=endpoint.jurisdiction,
            )

    @staticmethod
    def _ai_identity(
        obs: Observation, ctx: DetectionContext
    ) -> tuple[ProviderEndpoint | None, RelayDomain | None]:
        """The provider endpoint and relay entry the observation's destination names match."""
        endpoint: ProviderEndpoint | None = None
        relay: RelayDomain | None = None
        for _seen, identity in identified_names(obs, ctx.signatures):
            endpoint = endpoint or identity.provider
            relay = relay or identity.relay
        return endpoint, relay
