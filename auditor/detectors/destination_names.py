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

# What the signatures say a name is, and what an observation's names come to (keyed by the
# facts they are read from), remembered for the signature set in use: the rule lists are
# scanned, names normalised, and one capture shows the same few hundred names in every
# observation. One set at a time, so a process that loads new signatures does not keep the old
# ones alive; each memo is emptied when full, so a long-running proxy stays bounded.
NAME_CACHE_SIZE = 65536
_cache_owner: list[Signatures | None] = [None]
_identities: dict[str, Identity] = {}
_answers: dict[tuple[Any, ...], tuple[tuple[SeenName, Identity], ...]] = {}


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
    _answers.clear()


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
    facts = name_facts(obs)
    found = _answers.get(facts)
    if found is None:
        if len(_answers) >= NAME_CACHE_SIZE:
            _answers.clear()
        found = _answers[facts] = _identified(signatures, facts)
    _last_answer[:] = [(obs, signatures, found)]
    return found


def name_facts(obs: Observation) -> tuple[Any, ...]:
    """What of ``obs`` its destination names are read from: (kind of evidence, then the raw
    names and addresses). Observations with equal facts name the same destinations."""
    dst = obs.flow.dst_ip
    if isinstance(obs, DNSMessage):
        # The flow goes to the resolver: the address the name stands for is in the answers.
        resolved = obs.resolved_addresses()
        address = resolved[0][0] if resolved else None
        cnames = [a.data for a in obs.answers if a.rtype == "CNAME"]
        return (DNSMessage, obs.query_name, address, *cnames)
    if isinstance(obs, Connection):
        tls_name = obs.tls.client.server_name if obs.tls and obs.tls.client else None
        return (Connection, obs.server_name, dst, tls_name, *(r.host for r in obs.http))
    if isinstance(obs, TLSHandshake):
        return (TLSHandshake, obs.server_name, dst, obs.client.server_name if obs.client else None)
    if isinstance(obs, LLMCall):
        return (HTTPRequest, obs.server_name, dst, obs.request.host)
    if isinstance(obs, HTTPRequest):
        return (HTTPRequest, obs.server_name, dst, obs.host)
    return (Observation, obs.server_name, dst)


def _sightings(facts: tuple[Any, ...]) -> list[tuple[str | None, str, str | None]]:
    """(raw name, where, address) of every name in an observation with these ``name_facts``,
    in order of evidence."""
    kind = facts[0]
    if kind is DNSMessage:
        _, query_name, address, *cnames = facts
        return [(query_name, "dns", address), *((c, "dns-cname", address) for c in cnames)]
    _, server_name, dst, *names = facts
    if kind is Connection:
        tls_name, *http_hosts = names
        found = [(tls_name, "sni", dst), *((h, "http-host", dst) for h in http_hosts)]
    elif kind is TLSHandshake:
        found = [(names[0], "sni", dst)]
    elif kind is HTTPRequest:
        found = [(names[0], "http-host", dst)]
    else:
        found = []
    # server_name is SNI/Host when the source had one, else the pipeline's DNS-learned name.
    found.append((server_name, "dns", dst))
    # Some relays are listed by bare address (relays.yaml entries with an IP as domain).
    found.append((dst, "address", dst))
    return found


def _identified(
    signatures: Signatures, facts: tuple[Any, ...]
) -> tuple[tuple[SeenName, Identity], ...]:
    found: list[tuple[SeenName, Identity]] = []
    for raw, where, address in _sightings(facts):
        name = normalise_host(raw) if raw else ""
        if name and all(seen.name != name for seen, _ in found):
            found.append((SeenName(name, where, address), identify(signatures, name)))
    return tuple(found)


def refile(finding: Finding, seen: SeenName, obs: Observation) -> Finding:
    """File ``finding`` under the seen name (a DNS message's flow points at the resolver)."""
    finding.host = seen.name
    if isinstance(obs, DNSMessage):
        finding.dst_ip = seen.address
        finding.dst_port = None
    return finding
