"""What kind of address a destination is, for the detectors that judge by it.

``unofficial-llm-endpoint`` grades a call by the address's scope; ``plaintext-llm``,
``credential-exposure`` and ``prompt-sensitive-data`` do not count a loopback destination as
data that left the machine.
"""

from __future__ import annotations

import functools
import ipaddress

# Distinct addresses remembered: parsing costs more than the check.
ADDRESS_CACHE_SIZE = 65536

# Networks an organisation's own servers live in. Not ``ipaddress.is_private``: that also covers
# the RFC 5737/3849 documentation ranges, which stand for Internet hosts in examples and samples.
INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def address_scope(address: str) -> str:
    """The scope of an address: "loopback", "private" or "public" (anything unparsable)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "public"
    if parsed.is_loopback:
        return "loopback"
    if parsed.is_link_local or any(
        parsed.version == net.version and parsed in net for net in INTERNAL_NETWORKS
    ):
        return "private"
    return "public"


def is_loopback(address: str) -> bool:
    return address_scope(address) == "loopback"
