"""ai-service: inventory of official provider endpoints, and unapproved providers."""

from __future__ import annotations

from sample_signatures import flow, make_context, shipped_signatures

from auditor.detectors.ai_service import AIServiceDetector
from auditor.model import ClientHello, Connection, Severity, TLSHandshake
from auditor.policy import Policy


def hello(sni: str) -> TLSHandshake:
    return TLSHandshake(
        flow=flow("162.159.140.245"), ts=1_700_000_000.0, server_name=sni,
        client=ClientHello(0x0301, 0x0303, [0x1301], [0], [0x0304], sni),
    )


def test_official_api_is_inventoried_as_info() -> None:
    [finding] = AIServiceDetector().inspect(hello("api.anthropic.com"), make_context())
    assert (finding.kind, finding.severity) == ("ai-service.inventory", Severity.INFO)
    assert finding.host == "api.anthropic.com"
    evidence = finding.evidence
    assert evidence["provider"] == "anthropic"
    assert evidence["official"] is True and evidence["category"] == "official"
    assert evidence["kind"] == "api" and evidence["api_shapes"] == ["anthropic"]
    assert evidence["jurisdiction"] == "US"


def test_unapproved_provider_adds_a_medium_finding() -> None:
    ctx = make_context(policy=Policy(allowed_providers={"openai"}))
    findings = list(AIServiceDetector().inspect(hello("api.deepseek.com"), ctx))
    assert sorted((f.kind, f.severity) for f in findings) == [
        ("ai-service.inventory", Severity.INFO),
        ("ai-service.unapproved", Severity.MEDIUM),
    ]
    approved = list(AIServiceDetector().inspect(hello("api.openai.com"), ctx))
    assert [f.kind for f in approved] == ["ai-service.inventory"]


def test_unknown_hosts_and_relays_are_not_inventoried_here() -> None:
    ctx = make_context()
    assert list(AIServiceDetector().inspect(hello("www.example.org"), ctx)) == []
    # openrouter.ai is in both files in the fixture: relay-domain owns it.
    assert list(AIServiceDetector().inspect(hello("openrouter.ai"), ctx)) == []


def test_connection_named_from_dns_is_inventoried() -> None:
    connection = Connection(flow=flow("104.18.33.45"), ts=5.0, server_name="chatgpt.com",
                            first_seen=1.0, last_seen=5.0)
    [finding] = AIServiceDetector().inspect(connection, make_context())
    assert finding.evidence["kind"] == "web" and finding.evidence["seen_in"] == "dns"


def test_shipped_providers_know_openai() -> None:
    ctx = make_context(signatures=shipped_signatures())
    [finding] = AIServiceDetector().inspect(hello("api.openai.com"), ctx)
    assert finding.evidence["provider"] == "openai"
    assert "openai" in finding.evidence["api_shapes"]
