"""Where a destination address is: country (and ASN where the data has it), offline.

The default database ships inside a Python package (see ``GeoLookup.default``); a MaxMind
``.mmdb`` (GeoLite2/GeoIP2 Country, City or ASN) given with ``--geoip-db`` replaces it.
Private, loopback and link-local addresses have no country.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GeoInfo:
    country: str | None  # ISO 3166 alpha-2, None when unknown or not routable
    asn: int | None = None
    as_org: str | None = None
    anycast: bool = False  # address in a known anycast/CDN range: country says little
    source: str = ""  # which database answered

    @property
    def known(self) -> bool:
        return self.country is not None


NOT_ROUTABLE = GeoInfo(country=None, source="not routable")


def is_routable(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return addr.is_global


class GeoLookup:
    """Interface: ``lookup(ip) -> GeoInfo``. Implementations live in this module."""

    name = "none"

    def lookup(self, ip: str) -> GeoInfo:
        return NOT_ROUTABLE if not is_routable(ip) else GeoInfo(country=None, source=self.name)
