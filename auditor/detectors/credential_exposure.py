"""credential-exposure: provider API keys handed to hosts that are not the provider's own.

    HTTPRequest / LLMCall (credential header or ?key=) -> this detector -> findings

A key for OpenAI, Anthropic, Google, DeepSeek, ... (formats: ``signatures/key_formats.yaml``)
is only safe at that provider's official endpoints (``signatures/providers.yaml``, matched by
provider id). Anywhere else, a third party now holds it and can spend it or read what it opens.

- ``credential-exposure.foreign-host`` (high; critical when the host is a known relay in
  ``relays.yaml``): a key whose format names a provider with official endpoints was sent to a
  host that is not one of them. Formats whose provider has no endpoint in providers.yaml (cloud
  keys, relay-issued keys, generic ``sk-`` shapes) say nothing about where they belong and are
  left out of this kind.
- ``credential-exposure.key-reuse`` (medium): the same key (by ``auditor.redact.fingerprint``,
  any key format) was sent to several destination hosts. The hosts per key are remembered in
  bounded state (``MAX_KEYS_REMEMBERED`` keys, least recently seen out; ``MAX_HOSTS_PER_KEY``).

Calls to a loopback address never left the machine (a local gateway) and are not judged.
Evidence: the key masked (prefix, length, SHA-256 prefix; the key itself only with
``policy.reveal_evidence``), its format id and provider, where it travelled, and the hosts.
Keys are looked for in the credential headers and query parameter the official SDKs use
(``auditor.llm.find_credential``) on every request; an LLM call is judged from its
``LLMCall`` (which knows its API shape's own header) and not again from its ``HTTPRequest``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, ClassVar

from auditor.detectors.addresses import is_loopback
from auditor.detectors.base import DetectionContext, Detector
from auditor.detectors.destination_names import identify
from auditor.detectors.plaintext_llm import matching_key_format
from auditor.llm import find_credential, recognise, split_target
from auditor.model import Finding, HTTPRequest, LLMCall, Observation, Severity, finding_for
from auditor.redact import fingerprint, mask_secret
from auditor.signatures import KeyFormat, Signatures, normalise_host

# Distinct keys whose destinations are remembered: a site has a few hundred keys; beyond this
# the least recently seen is forgotten (its reuse may then go unnoticed, memory stays bounded).
MAX_KEYS_REMEMBERED = 10_000
# Destinations listed per key: enough to show the spread without growing with every host.
MAX_HOSTS_PER_KEY = 32


def request_host(obs: Observation, request: HTTPRequest) -> str:
    """The destination name of a request: Host header, else the name or address of the flow."""
    return normalise_host(request.host or obs.server_name or obs.flow.dst_ip)


@functools.lru_cache(maxsize=256)
def official_hosts_of(signatures: Signatures, provider: str) -> tuple[str, ...]:
    """The endpoint domains of ``provider``, sorted (per signature set: every key asks)."""
    return tuple(sorted(p.domain for p in signatures.providers if p.provider == provider))


class CredentialExposureDetector(Detector):
    name: ClassVar[str] = "credential-exposure"
    description: ClassVar[str] = (
        "Provider API keys sent to hosts that are not the provider's, and keys sent to many hosts"
    )
    observes: ClassVar[tuple[type[Observation], ...]] = (LLMCall, HTTPRequest)

    def __init__(self) -> None:
        # key fingerprint -> destination hosts it was sent to, in first-seen order
        self.hosts_by_key: OrderedDict[str, list[str]] = OrderedDict()

    def inspect(self, obs: Observation, ctx: DetectionContext) -> Iterable[Finding]:
        if isinstance(obs, LLMCall):
            request = obs.request
            if not obs.credential or not obs.credential_header:
                return
            where, key = obs.credential_header, obs.credential
        else:
            assert isinstance(obs, HTTPRequest)
            # An LLM call is judged from its LLMCall. Asked first: the pipeline recognises
            # every request anyway, and the answer is remembered.
            if recognise(obs, ctx.signatures.api_shapes) is not None:
                return
            request = obs
            found = find_credential(request, split_target(request.path)[1])
            if found is None:
                return
            where, key = found
        if is_loopback(obs.flow.dst_ip):
            return
        key_format = matching_key_format(key, ctx.signatures)
        if key_format is None:
            return  # an opaque session token or a key of unknown shape: nothing to say
        host = request_host(obs, request)
        base_evidence: dict[str, Any] = {
            "key": mask_secret(key, ctx.policy.reveal_evidence),
            "key_format": key_format.id,
            "key_provider": key_format.provider,
            "sent_in": where,
            "host": host,
            "encrypted": request.encrypted,
        }
        foreign = self._foreign_host(obs, host, key, key_format, base_evidence, ctx)
        if foreign is not None:
            yield foreign
        reuse = self._reuse(obs, host, key, base_evidence)
        if reuse is not None:
            yield reuse

    def _foreign_host(
        self,
        obs: Observation,
        host: str,
        key: str,
        key_format: KeyFormat,
        base_evidence: dict[str, Any],
        ctx: DetectionContext,
    ) -> Finding | None:
        sigs = ctx.signatures
        official_hosts = official_hosts_of(sigs, key_format.provider)
        if not official_hosts:
            return None  # not a provider with known endpoints: no "right" host to compare with
        identity = identify(sigs, host)
        if identity.provider is not None and identity.provider.provider == key_format.provider:
            return None
        relay = identity.relay
        evidence = {
            **base_evidence,
            "host_is": (
                f"relay ({relay.category}, {relay.confidence})" if relay
                else f"official endpoint of {identity.provider.provider}" if identity.provider
                else "not an official endpoint"
            ),
            "official_hosts": list(official_hosts[:10]),
        }
        if relay is not None:
            evidence["relay_domain"] = relay.domain
        finding = finding_for(
            obs,
            detector=self.name,
            kind="credential-exposure.foreign-host",
            severity=Severity.CRITICAL if relay is not None else Severity.HIGH,
            title=f"{key_format.provider} API key sent to {host}, not to {key_format.provider}",
            evidence=evidence,
            evidence_key=fingerprint(key),
        )
        finding.host = host
        return finding

    def _reuse(
        self, obs: Observation, host: str, key: str, base_evidence: dict[str, Any]
    ) -> Finding | None:
        key_id = fingerprint(key)
        hosts = self.hosts_by_key.get(key_id)
        if hosts is None:
            hosts = self.hosts_by_key[key_id] = []
            if len(self.hosts_by_key) > MAX_KEYS_REMEMBERED:
                self.hosts_by_key.popitem(last=False)
        self.hosts_by_key.move_to_end(key_id)
        if host not in hosts and len(hosts) < MAX_HOSTS_PER_KEY:
            hosts.append(host)
        if len(hosts) < 2 or host not in hosts:
            return None
        finding = finding_for(
            obs,
            detector=self.name,
            kind="credential-exposure.key-reuse",
            severity=Severity.MEDIUM,
            title=f"The same API key was sent to {len(hosts)} hosts",
            evidence={**base_evidence, "hosts": list(hosts), "host_count": len(hosts)},
            evidence_key=key_id,
        )
        finding.host = host
        return finding
