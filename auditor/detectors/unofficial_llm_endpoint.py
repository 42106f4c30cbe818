"""unofficial-llm-endpoint: an LLM API spoken to a host that is not an official endpoint for it.

    LLMCall -> this detector -> findings

A request in API family F (OpenAI, Anthropic, Gemini, Ollama shapes) is expected at a host that
``signatures/providers.yaml`` lists as serving F officially. Several providers serve another
family's shape on their own hosts (DeepSeek, Zhipu, Moonshot and MiniMax serve Anthropic- and
OpenAI-compatible APIs); the providers file says so per endpoint, so those are not findings.
Anything else is a relay, a self-hosted gateway or an impostor that receives prompts and keys.

Severity (kind ``unofficial-llm-endpoint``):
- high: the usual case, an unknown or relay host receiving the call;
- medium: a known aggregator (relays.yaml category "aggregator"): a real business, but still a
  third party holding prompts and keys rather than the model's provider;
- low: an internal address (RFC 1918, RFC 6598 CGNAT, ULA; not the RFC 5737 documentation
  ranges, which stand for Internet hosts): an internal gateway or model server; the data stays in
  the organisation's network (its onward traffic, if any, is audited on its own);
- info: loopback: a local model server such as Ollama on 127.0.0.1; nothing left the machine.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import ClassVar

from auditor.detectors.addresses import address_scope
from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identify
from auditor.detectors.relay_domain import AGGREGATOR_CATEGORY
from auditor.model import Finding, LLMCall, Observation, Severity, finding_for
from auditor.signatures import Signatures, normalise_host

# How many official hosts for the family to list in evidence (enough to show what was expected).
MAX_OFFICIAL_HOSTS_IN_EVIDENCE = 10


@functools.lru_cache(maxsize=16)  # a few API families per signature set
def official_for_family(
    signatures: Signatures, family: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(provider ids, endpoint domains) that serve ``family`` officially (per signature set)."""
    endpoints = [p for p in signatures.providers if family in p.api_shapes]
    providers = tuple(sorted({p.provider for p in endpoints}))
    domains = tuple(sorted({p.domain for p in endpoints}))
    return providers, domains


class UnofficialLLMEndpointDetector(Detector):
    name: ClassVar[str] = "unofficial-llm-endpoint"
    description: ClassVar[str] = (
        "LLM API calls to hosts that are not official endpoints for that API family"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (LLMCall,)

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        assert isinstance(obs, LLMCall)
        sigs = ctx.signatures
        host = normalise_host(obs.request.host or obs.host)
        identity = identify(sigs, host)
        endpoint = identity.provider
        if endpoint is not None and obs.family in endpoint.api_shapes:
            return
        relay = identity.relay
        scope = address_scope(obs.flow.dst_ip)
        if scope == "loopback":
            severity, why = Severity.INFO, "loopback: a local model server; nothing left the host"
        elif scope == "private":
            severity, why = Severity.LOW, "private address: an internal gateway or model server"
        elif relay is not None and relay.category == AGGREGATOR_CATEGORY:
            severity, why = Severity.MEDIUM, "known aggregator: a third party, not the provider"
        else:
            severity, why = Severity.HIGH, "the prompt and key went to a host of unknown standing"
        providers, domains = official_for_family(sigs, obs.family)
        yield finding_for(
            obs,
            detector=self.name,
            kind="unofficial-llm-endpoint",
            severity=severity,
            title=f"{obs.family} API call to {host}, not an official {obs.family} endpoint",
            evidence={
                "api": obs.api,
                "family": obs.family,
                "model_requested": obs.model_requested,
                "host": host,
                "address_scope": scope,
                "reason": why,
                "host_provider": endpoint.provider if endpoint else None,
                "host_serves": list(endpoint.api_shapes) if endpoint else [],
                "relay_category": relay.category if relay else None,
                "official_providers": list(providers),
                "official_hosts": list(domains[:MAX_OFFICIAL_HOSTS_IN_EVIDENCE]),
            },
            evidence_key=obs.family,
        )
