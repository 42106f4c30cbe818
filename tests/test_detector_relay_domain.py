"""relay-domain: SNI, DNS, Host and connection names matched against relays.yaml."""

from __future__ import annotations

from sample_signatures import RESOLVER, flow, make_context, shipped_signatures

from auditor.detectors.relay_domain import RelayDomainDetector
from auditor.model import (
    ClientHello,
    Connection,
    DNSAnswer,
    DNSMessage,
    FlowTuple,
    HTTPRequest,
    Severity,
    TLSHandshake,
)
from auditor.pipeline import Pipeline

RELAY_IP = "104.21.48.17"


def hello(sni: str | None) -> TLSHandshake:
    return TLSHandshake(
        flow=flow(RELAY_IP), ts=1_700_000_000.0, server_name=sni,
        client=ClientHello(0x0301, 0x0303, [0x1301, 0xC02F], [0, 16], [0x0304, 0x0303], sni),
    )


def dns_answer(name: str, address: str) -> DNSMessage:
    return DNSMessage(
        flow=FlowTuple("udp", "10.1.2.3", 53000, RESOLVER, 53), ts=1_699_999_999.0,
        query_name=name, query_type="A", transaction_id=0x1234, is_response=True, rcode=0,
        answers=[DNSAnswer(name, "A", address, 300)],
    )


def test_confirmed_reseller_in_sni_is_high_and_filed_under_the_host() -> None:
    findings = list(RelayDomainDetector().inspect(hello("api.chatanywhere.tech"), make_context()))
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.kind, finding.severity) == ("relay-domain.known", Severity.HIGH)
    assert finding.host == "api.chatanywhere.tech"
    assert finding.evidence_key == "chatanywhere.tech"
    assert finding.evidence["relay_domain"] == "chatanywhere.tech"
    assert finding.evidence["seen_in"] == "sni"
    assert finding.evidence["category"] == "relay_reseller"
    assert finding.evidence["signature_source"] == "test fixture for chatanywhere.tech"


def test_suspected_and_aggregator_severities() -> None:
    ctx = make_context()
    [suspected] = RelayDomainDetector().inspect(hello("4nim0sity99.dpdns.org"), ctx)
    assert (suspected.kind, suspected.severity) == ("relay-domain.suspected", Severity.MEDIUM)
    assert suspected.evidence["platform"] == "new-api"
    [aggregator] = RelayDomainDetector().inspect(hello("openrouter.ai"), ctx)
    assert (aggregator.kind, aggregator.severity) == ("relay-domain.aggregator", Severity.LOW)
    [charity] = RelayDomainDetector().inspect(hello("anyrouter.top"), ctx)
    assert (charity.kind, charity.severity) == ("relay-domain.known", Severity.HIGH)


def test_official_and_lookalike_hosts_are_not_relays() -> None:
    ctx = make_context()
    for name in ("api.openai.com", "notchatanywhere.tech", "chatanywhere.tech.example.net"):
        assert list(RelayDomainDetector().inspect(hello(name), ctx)) == []
    assert list(RelayDomainDetector().inspect(hello(None), ctx)) == []


def test_dns_query_is_filed_under_the_queried_name_and_resolved_address() -> None:
    [finding] = RelayDomainDetector().inspect(
        dns_answer("api.chatanywhere.tech.", RELAY_IP), make_context()
    )
    assert finding.host == "api.chatanywhere.tech"
    assert finding.dst_ip == RELAY_IP  # not the resolver
    assert finding.evidence["seen_in"] == "dns"


def test_http_host_header() -> None:
    request = HTTPRequest(
        flow=flow(RELAY_IP, 80), ts=1.0, method="POST", host="api.chatanywhere.tech",
        path="/v1/chat/completions", http_version="HTTP/1.1", headers=[],
    )
    [finding] = RelayDomainDetector().inspect(request, make_context())
    assert finding.evidence["seen_in"] == "http-host"


def test_pipeline_names_a_connection_without_sni_from_dns_and_reports_the_relay() -> None:
    pipeline = Pipeline(make_context(), detectors=[RelayDomainDetector()])
    pipeline.feed(dns_answer("api.chatanywhere.tech", RELAY_IP))
    pipeline.feed(Connection(flow=flow(RELAY_IP), ts=1_700_000_005.0, first_seen=1_700_000_001.0,
                             last_seen=1_700_000_005.0, app_protocol="tls"))
    findings = pipeline.result().findings
    assert [(f.kind, f.host, f.severity) for f in findings] == [
        ("relay-domain.known", "api.chatanywhere.tech", Severity.HIGH)
    ]
    # The DNS answer and the connection are one finding about one host.
    assert findings[0].count == 2
    assert findings[0].dst_ip == RELAY_IP


def test_shipped_relays_flag_a_listed_reseller_and_not_openai() -> None:
    ctx = make_context(signatures=shipped_signatures())
    [finding] = RelayDomainDetector().inspect(hello("api.chatanywhere.tech"), ctx)
    assert finding.kind == "relay-domain.known" and finding.severity == Severity.HIGH
    assert finding.evidence["signature_source"]
    assert list(RelayDomainDetector().inspect(hello("api.openai.com"), ctx)) == []


def test_cname_to_a_relay_is_caught_in_dns() -> None:
    message = dns_answer("ai.corp-tools.example", RELAY_IP)
    cname = DNSAnswer("ai.corp-tools.example", "CNAME", "api.chatanywhere.tech", 60)
    message.answers.insert(0, cname)
    [finding] = RelayDomainDetector().inspect(message, make_context())
    assert finding.host == "api.chatanywhere.tech"
    assert finding.evidence["seen_in"] == "dns-cname"
