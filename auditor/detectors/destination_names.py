"""Which destination names an observation reveals, and where on the wire each was seen.

Shared by the name-based detectors (``relay_domain``, ``ai_service``, ``cross_border``): a TLS
ClientHello names its server in SNI, a DNS message in its question (and CNAME answers), an HTTP
request in Host, a connection in the name the source or the pipeline's DNS book gave it. The
findings are filed under the name itself, so that a DNS lookup, the TLS handshake and the HTTP
request to the same relay merge into one finding. ``identify`` answers what the signatures say
a name is (official endpoint, relay), remembered per name because every observation asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.model import (
    Connection,
    DNSMessage,
    Finding,
    HTTPRequest,
    LLMCall,
    Observation,
    TLSHandshake,
)
from auditor.signatures import ProviderEndpoint, RelayDomain, Signatures, normalise_host

# Names remembered for the signature set in use: the rule lists are scanned linearly, and one
# capture asks about the same few hundred names for every observation. One set at a time, so a
# process that loads new signatures does not keep the old ones alive.
NAME_CACHE_SIZE = 65536
_cache_owner: list[Signatures] = []
_cache: dict[str, Identity] = {}


@dataclass(frozen=True, slots=True)
class Identity:
    """What the signatures say a name is: an official endpoint, a relay, both or neither."""

    provider: ProviderEndpoint | None
    relay: RelayDomain | None


def identify(signatures: Signatures, name: str) -> Identity:
    """``provider_for_host`` and ``relay_for_host`` of ``name``, memoised per signature set."""
    if not _cache_owner or _cache_owner[0] is not signatures:
        _cache_owner[:] = [signatures]
        _cache.clear()
    found = _cache.get(name)
    if found is None:
        if len(_cache) >= NAME_CACHE_SIZE:
            _cache.clear()
        found = Identity(signatures.provider_for_host(name), signatures.relay_for_host(name))
        _cache[name] = found
    return found


@dataclass(frozen=True, slots=True)
class SeenName:
    name: str  # normalised: lower case, no port, no trailing dot
    where: str  # "sni" | "dns" | "dns-cname" | "http-host" | "address"
    address: str | None  # the destination address the name stands for, when known


# The last observation's answer: several detectors ask about the same observation in a row.
_last_seen: list[tuple[Observation, list[SeenName]]] = []


def names_seen(obs: Observation) -> list[SeenName]:
    """Every distinct destination name in ``obs``, first the most direct evidence."""
    if _last_seen and _last_seen[0][0] is obs:
        return list(_last_seen[0][1])
    found = _names_seen(obs)
    _last_seen[:] = [(obs, found)]
    return list(found)


def _names_seen(obs: Observation) -> list[SeenName]:
    found: list[SeenName] = []
    dst = obs.flow.dst_ip

    def add(raw: str | None, where: str, address: str | None) -> None:
        if not raw:
            return
        name = normalise_host(raw)
        if name and all(seen.name != name for seen in found):
            found.append(SeenName(name, where, address))

    if isinstance(obs, DNSMessage):
        # The flow goes to the resolver: the address the name stands for is in the answers.
        addresses = [a for a, _ in obs.resolved_addresses()]
        add(obs.query_name, "dns", addresses[0] if addresses else None)
        for answer in obs.answers:
            if answer.rtype == "CNAME":
                add(answer.data, "dns-cname", addresses[0] if addresses else None)
        return found
    if isinstance(obs, TLSHandshake):
        add(obs.client.server_name if obs.client else None, "sni", dst)
    elif isinstance(obs, LLMCall):
        add(obs.request.host, "http-host", dst)
    elif isinstance(obs, HTTPRequest):
        add(obs.host, "http-host", dst)
    elif isinstance(obs, Connection):
        tls_name = obs.tls.client.server_name if obs.tls and obs.tls.client else None
        add(tls_name, "sni", dst)
        for request in obs.http:
            add(request.host, "http-host", dst)
    # server_name is SNI/Host when the source had one, else the pipeline's DNS-learned name.
    add(obs.server_name, "dns", dst)
    # Some relays are listed by bare address (relays.yaml entries with an IP as domain).
    add(dst, "address", dst)
    return found


def refile(finding: Finding, seen: SeenName, obs: Observation) -> Finding:
    """File ``finding`` under the seen name (a DNS message's flow points at the resolver)."""
    finding.host = seen.name
    if isinstance(obs, DNSMessage):
        finding.dst_ip = seen.address
        finding.dst_port = None
    return finding
