"""Where a destination address is: country (and ASN where the data has it), offline.

Flow: the pipeline and the detectors (cross-border, the per-host table, connection records) call
``DetectionContext.geo.lookup(dst_ip)``; ``open_geo`` builds that lookup once at start-up from
``--geoip-db`` (or none) and the loaded signatures. Nothing here touches the network.

Databases
* ``PackagedGeoLookup`` (the default, ``GeoLookup.default``): ``iptocc``, a PyPI package whose
  wheel embeds the five Regional Internet Registries' delegation statistics (ARIN, RIPE NCC,
  APNIC, LACNIC, AFRINIC). Code licence: MIT OR Apache-2.0. Data: the RIRs' public delegation
  files, which they publish for anyone to use; no separate licence, no EULA. It gives the
  country a block is *registered* to (about 95% agreement with commercial geolocation for
  IPv4, per its README), no ASN.
  Not chosen: ``geoip2fast`` (code MIT) adds AS names, but its data file is derived from
  MaxMind GeoLite2 and so falls under the GeoLite2 End User License Agreement (attribution,
  redistribution limits, duty to refresh or delete old data); its shipped file is dated
  2024-06 and carries AS names without AS numbers.
* ``MaxMindGeoLookup(path)``: a ``.mmdb`` the user supplies (GeoLite2/GeoIP2 Country, City or
  ASN), read with ``maxminddb``. Licensing of that file is the user's.

Every lookup also sets ``GeoInfo.anycast`` when the address falls in a range of
``signatures/anycast.yaml`` (published CDN / anycast ranges): there the country is only where
the nearest edge answered. Private, loopback, link-local and other non-global addresses are
``NOT_ROUTABLE``. Lookups are cached (LRU) because a capture asks about the same few
destinations over and over.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.signatures import AnycastNetwork, Signatures

# Distinct destinations kept in the lookup cache; a capture rarely has more.
LOOKUP_CACHE_SIZE = 65536


class GeoDatabaseError(ValueError):
    """A GeoIP database cannot be opened or is not what it claims to be."""


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

    @staticmethod
    def default(signatures: Signatures | None = None) -> GeoLookup:
        """The packaged offline database, with the anycast ranges of ``signatures``."""
        return PackagedGeoLookup(signatures.anycast_networks if signatures else ())


class AnycastRanges:
    """Membership test for the anycast / CDN ranges of ``signatures/anycast.yaml``."""

    def __init__(self, networks: Iterable[AnycastNetwork] = ()) -> None:
        # (version, network address, netmask, operator) with integers: the same test as
        # ``addr in network`` without its attribute lookups, for every range of every address.
        self._ranges = tuple(
            (
                entry.network.version,
                int(entry.network.network_address),
                int(entry.network.netmask),
                entry.operator,
            )
            for entry in networks
        )

    def operator_for(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        version, value = addr.version, int(addr)
        for range_version, network, netmask, operator in self._ranges:
            # tens of ranges: a scan is cheaper than an index
            if range_version == version and value & netmask == network:
                return operator
        return None


class _CachingGeoLookup(GeoLookup):
    """Shared part of the real lookups: routability, anycast flag, LRU cache, error count."""

    def __init__(self, anycast_networks: Iterable[AnycastNetwork] = ()) -> None:
        self.anycast = AnycastRanges(anycast_networks)
        self.errors = 0  # records the database could not decode (skipped, counted)
        self._cached_lookup = functools.lru_cache(maxsize=LOOKUP_CACHE_SIZE)(self._lookup_global)
        # Keyed by the address text as observations carry it: parsing it costs more than the
        # database lookup, and the same few hundred addresses come back all the time.
        self.lookup = functools.lru_cache(maxsize=LOOKUP_CACHE_SIZE)(self._lookup_text)  # type: ignore[method-assign]

    def lookup(self, ip: str) -> GeoInfo:
        return self._lookup_text(ip)

    def _lookup_text(self, ip: str) -> GeoInfo:
        try:
            addr = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            return NOT_ROUTABLE
        if not addr.is_global:
            return NOT_ROUTABLE
        return self._cached_lookup(addr)

    def _lookup_global(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> GeoInfo:
        info = self._query(addr)
        if self.anycast.operator_for(addr) is not None:
            info = replace(info, anycast=True)
        return info

    def _query(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> GeoInfo:
        raise NotImplementedError


class PackagedGeoLookup(_CachingGeoLookup):
    """Country by RIR delegation data embedded in the ``iptocc`` wheel (no ASN)."""

    name = "iptocc"

    def __init__(self, anycast_networks: Iterable[AnycastNetwork] = ()) -> None:
        try:
            import iptocc
        except ImportError:
            raise GeoDatabaseError(
                "the packaged GeoIP database needs the 'iptocc' package: pip install iptocc"
            ) from None
        self._country_code = iptocc.country_code
        super().__init__(anycast_networks)

    def _query(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> GeoInfo:
        try:
            country = self._country_code(str(addr))
        except (ValueError, TypeError):
            self.errors += 1
            country = None
        return GeoInfo(country=country.upper() if country else None, source=self.name)


class MaxMindGeoLookup(_CachingGeoLookup):
    """A user-given MaxMind DB file: GeoIP2/GeoLite2 Country, City or ASN."""

    def __init__(self, path: str | Path, anycast_networks: Iterable[AnycastNetwork] = ()) -> None:
        import maxminddb

        self.path = Path(path)
        if self.path.is_dir():
            raise GeoDatabaseError(f"{self.path}: is a directory, not a GeoIP .mmdb file")
        if not self.path.is_file():
            raise GeoDatabaseError(f"{self.path}: GeoIP database not found")
        try:
            self._reader = maxminddb.open_database(str(self.path))
        except (maxminddb.InvalidDatabaseError, ValueError):
            raise GeoDatabaseError(
                f"{self.path}: not a MaxMind DB file (expected a GeoLite2/GeoIP2 Country, City "
                "or ASN .mmdb)"
            ) from None
        except OSError as exc:
            raise GeoDatabaseError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self.database_type = str(self._reader.metadata().database_type)
        self.name = f"maxmind:{self.database_type}"
        super().__init__(anycast_networks)

    def _query(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> GeoInfo:
        import maxminddb

        try:
            record = self._reader.get(addr)
        except (maxminddb.InvalidDatabaseError, ValueError):
            self.errors += 1  # a corrupt record: skip it, the analysis goes on
            return GeoInfo(country=None, source=self.name)
        return geo_info_from_record(record, self.name)

    def close(self) -> None:
        self._reader.close()


def geo_info_from_record(record: Any, source: str) -> GeoInfo:
    """Country (where traffic goes, else where the block is registered) and ASN of a record."""
    if not isinstance(record, dict):
        return GeoInfo(country=None, source=source)
    country: str | None = None
    for key in ("country", "registered_country"):
        part = record.get(key)
        if isinstance(part, dict) and isinstance(part.get("iso_code"), str):
            country = part["iso_code"].upper()
            break
    asn = record.get("autonomous_system_number")
    as_org = record.get("autonomous_system_organization")
    return GeoInfo(
        country=country,
        asn=asn if isinstance(asn, int) else None,
        as_org=as_org if isinstance(as_org, str) else None,
        source=source,
    )


def open_geo(path: str | None, signatures: Signatures | None) -> GeoLookup:
    """``MaxMindGeoLookup(path)`` when a path is given, else the packaged database.

    Raises ``GeoDatabaseError`` (a ``ValueError``) with a one-line message naming the file.
    """
    anycast_networks = signatures.anycast_networks if signatures is not None else ()
    if path:
        return MaxMindGeoLookup(path, anycast_networks)
    return PackagedGeoLookup(anycast_networks)
