"""Signature exports: each format's syntax, suffix/exact/IP handling, stable ids."""

from __future__ import annotations

import json
import re

import pytest

from auditor.exports import export_entries, export_signatures, suricata_sids
from auditor.signatures import (
    DomainRule,
    ProviderEndpoint,
    RelayDomain,
    Signatures,
    load_signatures,
)


def small_signatures() -> Signatures:
    def relay(domain: str, match: str, regex: str | None = None) -> RelayDomain:
        return RelayDomain(
            rule=DomainRule(domain, match, regex), category="relay_reseller",
            confidence="confirmed", operator="Op\tName", source="test fixture",
        )

    return Signatures(
        relays=[
            relay("relay.example", "suffix"),
            relay("api.exact.example", "exact"),
            relay("198.51.100.7", "exact"),
            relay("regex.example", "regex", r"^x\d+\.regex\.example$"),
        ],
        providers=[
            ProviderEndpoint(
                rule=DomainRule("api.provider.example", "exact"), provider="prov", name="Prov",
                operator="Prov Inc", jurisdiction="US", kind="api", api_shapes=("openai",),
                source="test fixture",
            )
        ],
    )


def test_selection_and_regex_entries_left_out() -> None:
    entries, skipped = export_entries(small_signatures(), "relays")
    assert [e.domain for e in entries] == ["198.51.100.7", "api.exact.example", "relay.example"]
    assert skipped == 1
    entries, _ = export_entries(small_signatures(), "all")
    assert "api.provider.example" in {e.domain for e in entries}
    entries, _ = export_entries(small_signatures(), "providers")
    assert [e.domain for e in entries] == ["api.provider.example"]


def test_zeek_intel() -> None:
    text = export_signatures(small_signatures(), "zeek-intel")
    rows = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    assert "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc" in text.splitlines()
    assert all(len(row) == 4 for row in rows)  # a tab in the operator name must not add a column
    kinds = {row[0]: row[1] for row in rows}
    assert kinds == {
        "198.51.100.7": "Intel::ADDR",
        "api.exact.example": "Intel::DOMAIN",
        "relay.example": "Intel::DOMAIN",
    }
    assert "exact names only" in text and "1 regex entries left out" in text


def _suricata_matches(rule: str, name: str) -> bool:
    """What dotprefix/startswith/endswith with this rule's content do to a buffer."""
    content = re.search(r'content:"([^"]+)"', rule)
    assert content is not None
    needle = content.group(1)
    buffer = "." + name.lower() if "dotprefix" in rule else name.lower()
    if "startswith" in rule:
        return buffer == needle
    return buffer.endswith(needle)


def test_suricata_rules() -> None:
    text = export_signatures(small_signatures(), "suricata")
    rules = [line for line in text.splitlines() if line.startswith("alert")]
    assert len(rules) == 1 + 3 + 3  # the IP entry gets one ip rule
    for rule in rules:
        assert re.fullmatch(r'alert \w+ any any -> \S+ any \(msg:"[^";]+"; .* sid:\d+; rev:1;\)',
                            rule), rule
    sids = [int(s) for s in re.findall(r"sid:(\d+);", text)]
    assert len(set(sids)) == len(sids) and all(1_000_000 <= s <= 1_999_999 for s in sids)
    suffix_rules = [r for r in rules if "relay.example" in r and "api.exact" not in r]
    assert {r.split()[1] for r in suffix_rules} == {"tls", "dns", "http"}
    for rule in suffix_rules:
        assert _suricata_matches(rule, "relay.example")
        assert _suricata_matches(rule, "API.relay.example")
        assert not _suricata_matches(rule, "evilrelay.example")
        if " http " not in rule:
            assert "nocase" in rule
        else:
            assert "nocase" not in rule  # http.host is already lower case
    exact_rules = [r for r in rules if "api.exact.example" in r]
    assert all(_suricata_matches(r, "api.exact.example") for r in exact_rules)
    assert not any(_suricata_matches(r, "x.api.exact.example") for r in exact_rules)
    assert any(r.startswith("alert ip any any -> 198.51.100.7 any") for r in rules)


def test_suricata_sids_are_stable_when_entries_change() -> None:
    entries, _ = export_entries(small_signatures(), "relays")
    before = dict(zip([e.domain for e in entries], suricata_sids(entries), strict=True))
    after = dict(zip([e.domain for e in entries[1:]], suricata_sids(entries[1:]), strict=True))
    assert all(before[domain] == sid for domain, sid in after.items())


def test_rpz_zone() -> None:
    text = export_signatures(small_signatures(), "rpz", now=1_700_000_000)
    lines = text.splitlines()
    assert "@ IN SOA localhost. hostmaster.localhost. (1700000000 3600 600 86400 300)" in lines
    assert "relay.example CNAME ." in lines and "*.relay.example CNAME ." in lines
    assert "api.exact.example CNAME ." in lines and "*.api.exact.example CNAME ." not in lines
    assert "32.7.100.51.198.rpz-ip CNAME ." in lines


def test_hosts_file() -> None:
    text = export_signatures(small_signatures(), "hosts")
    entries = [line for line in text.splitlines() if not line.startswith("#")]
    assert entries == ["0.0.0.0 api.exact.example", "0.0.0.0 relay.example"]


def test_stix2_bundle() -> None:
    bundle = json.loads(export_signatures(small_signatures(), "stix2", now=1_700_000_000))
    assert bundle["type"] == "bundle"
    identity, *indicators = bundle["objects"]
    assert identity["type"] == "identity"
    patterns = {i["name"]: i["pattern"] for i in indicators}
    assert patterns["AI egress relay: relay.example"] == (
        "[domain-name:value = 'relay.example' OR domain-name:value LIKE '%.relay.example']"
    )
    assert patterns["AI egress relay: api.exact.example"] == (
        "[domain-name:value = 'api.exact.example']"
    )
    assert patterns["AI egress relay: 198.51.100.7"] == "[ipv4-addr:value = '198.51.100.7']"
    for indicator in indicators:
        assert indicator["spec_version"] == "2.1"
        assert indicator["pattern_type"] == "stix"
        assert indicator["created_by_ref"] == identity["id"]
        assert indicator["valid_from"] == "2023-11-14T22:13:20.000Z"
        assert re.fullmatch(r"indicator--[0-9a-f-]{36}", indicator["id"])
    again = json.loads(export_signatures(small_signatures(), "stix2", now=1_800_000_000))
    assert [o["id"] for o in again["objects"]] == [o["id"] for o in bundle["objects"]]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        export_signatures(small_signatures(), "csv")


def test_shipped_signatures_export() -> None:
    sigs = load_signatures()
    entries, _ = export_entries(sigs, "all")
    assert entries, "the shipped signatures have exportable domains"
    for fmt in ("zeek-intel", "suricata", "rpz", "hosts", "stix2"):
        assert export_signatures(sigs, fmt, "all", now=1_700_000_000).strip()
