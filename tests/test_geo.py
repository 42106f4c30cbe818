"""Tests of auditor.enrich.geo: packaged database, user .mmdb files, anycast flag, errors."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from auditor.enrich.geo import (
    NOT_ROUTABLE,
    AnycastRanges,
    GeoDatabaseError,
    GeoLookup,
    MaxMindGeoLookup,
    PackagedGeoLookup,
    geo_info_from_record,
    open_geo,
)
from auditor.signatures import AnycastNetwork, Signatures, load_signatures


@pytest.fixture(scope="module")
def packaged() -> PackagedGeoLookup:
    return PackagedGeoLookup(load_signatures().anycast_networks)


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("8.8.8.8", "US"),  # Google, ARIN
        ("2001:4860:4860::8888", "US"),
        ("114.114.114.114", "CN"),  # 114DNS, APNIC (CN)
        ("223.5.5.5", "CN"),  # AliDNS
        ("81.2.69.142", "GB"),  # MaxMind's own test address block, RIPE (GB)
    ],
)
def test_packaged_database_knows_public_addresses(
    packaged: PackagedGeoLookup, address: str, country: str
) -> None:
    info = packaged.lookup(address)
    assert info.country == country
    assert info.source == "iptocc"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.1.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "not an address",
        "",
    ],
)
def test_non_global_and_garbage_addresses_are_not_routable(
    packaged: PackagedGeoLookup, address: str
) -> None:
    assert packaged.lookup(address) is NOT_ROUTABLE


def test_anycast_ranges_match_as_ipaddress_containment() -> None:
    networks = load_signatures().anycast_networks
    ranges = AnycastRanges(networks)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ipaddress.ip_address("::ffff:104.16.0.1"),  # an IPv4 range's bits, but IPv6
        ipaddress.ip_address("::1"),
    ]
    for entry in networks:
        first, last = entry.network.network_address, entry.network.broadcast_address
        addresses += [first, last, first - 1, last + 1]
    for address in addresses:
        expected = next(
            (
                e.operator
                for e in networks
                if e.network.version == address.version and address in e.network
            ),
            None,
        )
        assert ranges.operator_for(address) == expected, address


def test_anycast_flag_comes_from_signatures(packaged: PackagedGeoLookup) -> None:
    # 1.1.1.1 is registered to APNIC/AU but announced everywhere: the flag says so
    one = packaged.lookup("1.1.1.1")
    assert one.country == "AU" and one.anycast
    assert packaged.lookup("104.16.0.1").anycast  # Cloudflare CDN range
    assert packaged.lookup("2606:4700::6810:1").anycast
    assert not packaged.lookup("114.114.114.114").anycast
    # without anycast ranges the same address is not flagged
    assert not PackagedGeoLookup(()).lookup("1.1.1.1").anycast


def test_lookups_are_cached(packaged: PackagedGeoLookup) -> None:
    first = packaged.lookup("9.9.9.9")
    assert packaged.lookup("9.9.9.9") is first


def test_open_geo_default_is_packaged() -> None:
    sigs = Signatures(
        anycast_networks=[
            AnycastNetwork(ipaddress.ip_network("114.114.114.0/24"), "Test CDN", "test")
        ]
    )
    geo = open_geo(None, sigs)
    assert isinstance(geo, PackagedGeoLookup)
    assert isinstance(GeoLookup.default(), PackagedGeoLookup)
    hit = geo.lookup("114.114.114.114")
    assert (hit.country, hit.anycast) == ("CN", True)


def test_missing_mmdb_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.mmdb"
    with pytest.raises(GeoDatabaseError, match=r"nowhere\.mmdb: GeoIP database not found"):
        open_geo(str(missing), None)


def test_garbage_mmdb_names_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"this is not a MaxMind database\n" * 20)
    with pytest.raises(GeoDatabaseError, match=r"garbage\.mmdb: not a MaxMind DB file"):
        open_geo(str(garbage), None)
    with pytest.raises(GeoDatabaseError, match="is a directory"):
        open_geo(str(tmp_path), None)


def test_geo_database_error_is_a_value_error() -> None:
    # the CLI turns ValueError/OSError into a one-line message: keep it catchable that way
    assert issubclass(GeoDatabaseError, ValueError)


def _write_mmdb(path: Path, database_type: str, networks: dict[str, dict[str, object]]) -> None:
    writer_module = pytest.importorskip(
        "mmdb_writer", reason="mmdb-writer (test extra) is needed to build a tiny .mmdb"
    )
    netaddr = pytest.importorskip("netaddr", reason="netaddr (test extra) is needed by mmdb-writer")
    writer = writer_module.MMDBWriter(
        ip_version=6, database_type=database_type, ipv4_compatible=True
    )
    for cidr, record in networks.items():
        writer.insert_network(netaddr.IPSet([cidr]), record)
    writer.to_db_file(str(path))


def test_country_mmdb_is_read(tmp_path: Path) -> None:
    db = tmp_path / "country.mmdb"
    # public blocks with made-up countries: the answer must come from this file, not iptocc
    _write_mmdb(
        db,
        "GeoLite2-Country",
        {
            "81.2.69.0/24": {"country": {"iso_code": "FR"}},
            "2a00:1450::/32": {"registered_country": {"iso_code": "de"}},
        },
    )
    anycast = [AnycastNetwork(ipaddress.ip_network("81.2.69.128/25"), "Test CDN", "test")]
    geo = MaxMindGeoLookup(db, anycast)
    assert geo.name == "maxmind:GeoLite2-Country"
    low = geo.lookup("81.2.69.7")
    assert (low.country, low.anycast, low.source) == ("FR", False, "maxmind:GeoLite2-Country")
    assert geo.lookup("81.2.69.200").anycast
    # registered_country is the fallback when a record has no country
    assert geo.lookup("2a00:1450::5").country == "DE"
    # an address the database does not hold is unknown, not an error
    assert geo.lookup("8.8.8.8").country is None
    assert geo.lookup("127.0.0.1") is NOT_ROUTABLE
    geo.close()


def test_asn_mmdb_is_read(tmp_path: Path) -> None:
    db = tmp_path / "asn.mmdb"
    _write_mmdb(
        db,
        "GeoLite2-ASN",
        {
            "9.9.9.0/24": {
                "autonomous_system_number": 64500,
                "autonomous_system_organization": "Example Transit",
            },
        },
    )
    geo = open_geo(str(db), None)
    info = geo.lookup("9.9.9.9")
    assert (info.asn, info.as_org, info.country) == (64500, "Example Transit", None)


def test_record_parsing_tolerates_odd_records() -> None:
    assert geo_info_from_record(None, "x").country is None
    assert geo_info_from_record({"country": "FR"}, "x").country is None
    odd = geo_info_from_record({"autonomous_system_number": "64500"}, "x")
    assert odd.asn is None
