"""cross-border: AI destinations outside the allowed countries and jurisdictions."""

from __future__ import annotations

import json

from sample_signatures import API_SHAPES, FixedGeo, flow, make_context, shipped_signatures

from auditor.detectors.cross_border import CrossBorderDetector
from auditor.enrich.geo import GeoInfo
from auditor.llm import recognise
from auditor.model import Connection, HTTPRequest, LLMCall, Severity
from auditor.policy import Policy

DEEPSEEK_IP = "116.205.40.10"
OPENAI_IP = "162.159.140.245"
CDN_IP = "104.18.6.192"
UNKNOWN_IP = "45.158.21.49"

GEO = FixedGeo({
    DEEPSEEK_IP: GeoInfo("CN", 55990, "Huawei Cloud", source="fixed"),
    OPENAI_IP: GeoInfo("US", 13335, "Cloudflare", anycast=True, source="fixed"),
    CDN_IP: GeoInfo("DE", 13335, "Cloudflare", anycast=True, source="fixed"),
    UNKNOWN_IP: GeoInfo("HK", 9312, "Example Transit", source="fixed"),
})


def connection(name: str | None, dst_ip: str) -> Connection:
    return Connection(flow=flow(dst_ip), ts=1_700_000_010.0, server_name=name,
                      first_seen=1_700_000_000.0, last_seen=1_700_000_010.0)


def findings(obs: Connection | LLMCall, policy: Policy | None = None) -> dict:
    ctx = make_context(policy=policy, geo=GEO)
    return {f.kind: f for f in CrossBorderDetector().inspect(obs, ctx)}


def test_chinese_api_from_a_us_organisation() -> None:
    found = findings(connection("api.deepseek.com", DEEPSEEK_IP))
    destination = found["cross-border.destination"]
    assert destination.severity == Severity.MEDIUM
    assert destination.evidence["country"] == "CN" and destination.evidence["asn"] == 55990
    jurisdiction = found["cross-border.jurisdiction"]
    assert jurisdiction.severity == Severity.HIGH
    assert jurisdiction.evidence["jurisdiction"] == "CN"
    assert jurisdiction.evidence["home_jurisdiction"] == "US"
    assert jurisdiction.evidence["operator"] == "Deepseek Inc."
    assert jurisdiction.evidence["basis"] == "privacy policy: servers in the PRC"


def test_allowed_by_policy_means_no_finding() -> None:
    policy = Policy(allowed_countries={"CN"}, allowed_jurisdictions={"CN"})
    assert findings(connection("api.deepseek.com", DEEPSEEK_IP), policy) == {}
    assert findings(connection("api.openai.com", OPENAI_IP)) == {}


def test_anycast_address_is_low_and_says_why() -> None:
    found = findings(connection("api.openai.com", CDN_IP))
    assert list(found) == ["cross-border.destination"]
    assert found["cross-border.destination"].severity == Severity.LOW
    assert "anycast" in found["cross-border.destination"].evidence["note"]


def test_ordinary_cdn_connection_is_not_judged() -> None:
    assert findings(connection("static.example-shop.com", UNKNOWN_IP)) == {}
    assert findings(connection(None, UNKNOWN_IP)) == {}


def test_llm_call_on_an_unknown_host_is_judged_by_address() -> None:
    request = HTTPRequest(
        flow=flow(UNKNOWN_IP), ts=1.0, method="POST", host="gpt.cheap-tokens.example",
        path="/v1/chat/completions", http_version="HTTP/1.1", headers=[],
        body=json.dumps({"model": "gpt-4o", "messages": []}).encode(), encrypted=True,
    )
    call = recognise(request, API_SHAPES)
    assert call is not None
    found = findings(call)
    assert list(found) == ["cross-border.destination"]
    assert found["cross-border.destination"].evidence["country"] == "HK"
    assert found["cross-border.destination"].evidence["llm_call_seen"] is True


def test_eu_home_allows_eea_destinations() -> None:
    policy = Policy(home_jurisdiction="EU", allowed_jurisdictions={"US"})
    assert findings(connection("api.openai.com", CDN_IP), policy) == {}


def test_shipped_providers_put_deepseek_in_cn() -> None:
    ctx = make_context(signatures=shipped_signatures(), geo=GEO)
    found = {f.kind: f for f in CrossBorderDetector().inspect(
        connection("api.deepseek.com", DEEPSEEK_IP), ctx)}
    assert found["cross-border.jurisdiction"].severity == Severity.HIGH
    assert found["cross-border.jurisdiction"].evidence["jurisdiction"] == "CN"
