"""Which destination names an observation reveals, and where on the wire each was seen.

Shared by the name-based detectors (``relay_domain``, ``ai_service``, ``cross_border``): a TLS
ClientHello names its server in SNI, a DNS message in its question (and CNAME answers), an HTTP
request in Host, a connection in the name the source or the pipeline's DNS book gave it. The
findings are filed under the name itself, so that a DNS lookup, the TLS handshake and the HTTP
request to the same relay merge into one finding. ``identify`` answers what the signatures say
a name is (official endpoint, relay); ``identified_names`` gives both for one observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

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

# What the signatures say a name is, and each sighting (raw name, where, address) resolved to
# its ``SeenName`` and identity, remembered for the signature set in use: the rule lists are
# scanned, names normalised, and one capture asks about the same few hundred names for every
# observation. One set at a time, so a process that loads new signatures does not keep the old
# ones alive; each memo is emptied when full, so a long-running proxy stays bounded.
NAME_CACHE_SIZE = 65536
_cache_owner: list[Signatures | None] = [None]
_identities: dict[str, Identity] = {}
_sightings: dict[tuple[str, str, str | None], tuple[SeenName, Identity] | None] = {}


@dataclass(frozen=True, slots=True)
class Identity:
    """What the signatures say a name is: an official endpoint, a relay, both or neither."""

    provider: ProviderEndpoint | None
    relay: RelayDomain | None


class SeenName(NamedTuple):
    """One destination name in an observation (a tuple: built for every sighting, cheaply)."""

    name: str  # normalised: lower case, no port, no trailing dot
    where: str  # "sni" | "dns" | "dns-cname" | "http-host" | "address"
    address: str | None  # the destination address the name stands for, when known


def _use(signatures: Signatures) -> None:
    """Make the memos hold answers for ``signatures`` (callers check ``_cache_owner`` first)."""
    _cache_owner[0] = signatures
    _identities.clear()
    _sightings.clear()


def identify(signatures: Signatures, name: str) -> Identity:
    """``provider_for_host`` and ``relay_for_host`` of ``name``, memoised per signature set."""
    if _cache_owner[0] is not signatures:
        _use(signatures)
    found = _identities.get(name)
    if found is None:
        if len(_identities) >= NAME_CACHE_SIZE:
            _identities.clear()
        found = Identity(signatures.provider_for_host(name), signatures.relay_for_host(name))
        _identities[name] = found
    return found


# The last observation's answer: the name-based detectors ask about the same observation in a
# row. Keyed by the observation and the signature set (both held, so neither id is reused).
_last_answer: list[tuple[Observation, Signatures, tuple[tuple[SeenName, Identity], ...]]] = []


def identified_names(
    obs: Observation, signatures: Signatures
) -> tuple[tuple[SeenName, Identity], ...]:
    """Every distinct destination name in ``obs``, first the most direct evidence, each with
    what ``signatures`` say it is (``identify``)."""
    if _last_answer:
        last_obs, last_signatures, answer = _last_answer[0]
        if last_obs is obs and last_signatures is signatures:
            return answer
    if _cache_owner[0] is not signatures:
        _use(signatures)
    found: list[tuple[SeenName, Identity]] = []
    names: list[str] = []  # at most a handful: a list beats a set
    for sighting in _sightings_in(obs):
        if not sighting[0]:
            continue
        resolved = _sightings.get(sighting, _UNKNOWN)
        if resolved is _UNKNOWN:
            resolved = _resolve(signatures, sighting)
        if resolved is not None and resolved[0].name not in names:
            names.append(resolved[0].name)
            found.append(resolved)
    answer = tuple(found)
    _last_answer[:] = [(obs, signatures, answer)]
    return answer


_UNKNOWN: Any = object()  # not yet in ``_sightings`` (None there means: no usable name)


def _resolve(
    signatures: Signatures, sighting: tuple[str, str, str | None]
) -> tuple[SeenName, Identity] | None:
    raw, where, address = sighting
    name = normalise_host(raw)
    resolved = (SeenName(name, where, address), identify(signatures, name)) if name else None
    if len(_sightings) >= NAME_CACHE_SIZE:
        _sightings.clear()
    _sightings[sighting] = resolved
    return resolved


def _sightings_in(obs: Observation) -> list[tuple[str | None, str, str | None]]:
    """(raw name, where, address) of every name in ``obs``, in order of evidence."""
    dst = obs.flow.dst_ip
    if isinstance(obs, DNSMessage):
        # The flow goes to the resolver: the address the name stands for is in the answers.
        resolved = obs.resolved_addresses()
        address = resolved[0][0] if resolved else None
        found = [(obs.query_name, "dns", address)]
        found += [(a.data, "dns-cname", address) for a in obs.answers if a.rtype == "CNAME"]
        return found
    if isinstance(obs, Connection):
        tls_name = obs.tls.client.server_name if obs.tls and obs.tls.client else None
        found = [(tls_name, "sni", dst)]
        found += [(request.host, "http-host", dst) for request in obs.http]
    elif isinstance(obs, TLSHandshake):
        found = [(obs.client.server_name if obs.client else None, "sni", dst)]
    elif isinstance(obs, LLMCall):
        found = [(obs.request.host, "http-host", dst)]
    elif isinstance(obs, HTTPRequest):
        found = [(obs.host, "http-host", dst)]
    else:
        found = []
    # server_name is SNI/Host when the source had one, else the pipeline's DNS-learned name.
    found.append((obs.server_name, "dns", dst))
    # Some relays are listed by bare address (relays.yaml entries with an IP as domain).
    found.append((dst, "address", dst))
    return found


def refile(finding: Finding, seen: SeenName, obs: Observation) -> Finding:
    """File ``finding`` under the seen name (a DNS message's flow points at the resolver)."""
    finding.host = seen.name
    if isinstance(obs, DNSMessage):
        finding.dst_ip = seen.address
        finding.dst_port = None
    return finding
