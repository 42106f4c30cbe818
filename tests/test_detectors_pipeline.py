"""The six core detectors together, through the real Pipeline and the shipped signatures."""

from __future__ import annotations

import json

from sample_signatures import FixedGeo, fake_anthropic_key, flow, shipped_signatures

from auditor.detectors.base import DetectionContext
from auditor.enrich.geo import GeoInfo
from auditor.model import DNSAnswer, DNSMessage, FlowTuple, HTTPRequest, Severity
from auditor.pipeline import Pipeline
from auditor.policy import Policy

RELAY_IP = "154.17.22.9"


def test_cleartext_claude_call_to_a_relay_raises_every_relevant_finding() -> None:
    key = fake_anthropic_key()
    prompt = ("Internal incident report: customer database credentials were rotated after the "
              "breach of 12 May; list the affected tenants and draft the regulator notice.")
    ctx = DetectionContext(signatures=shipped_signatures(), policy=Policy(),
                           geo=FixedGeo({RELAY_IP: GeoInfo("HK", 9312, "Example", source="t")}))
    pipeline = Pipeline(ctx)
    pipeline.feed(DNSMessage(
        flow=FlowTuple("udp", "10.1.2.3", 53000, "10.1.2.53", 53), ts=1.0,
        query_name="api.chatanywhere.tech", query_type="A", transaction_id=7, is_response=True,
        answers=[DNSAnswer("api.chatanywhere.tech", "A", RELAY_IP, 60)],
    ))
    pipeline.feed(HTTPRequest(
        flow=flow(RELAY_IP, 80), ts=2.0, method="POST", host="api.chatanywhere.tech",
        path="/v1/messages", http_version="HTTP/1.1",
        headers=[("x-api-key", key), ("anthropic-version", "2023-06-01")],
        body=json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 256,
                         "messages": [{"role": "user", "content": prompt}]}).encode(),
    ))
    result = pipeline.result()
    assert result.errors == []
    kinds = {(f.kind, f.severity) for f in result.findings}
    assert {
        ("relay-domain.known", Severity.HIGH),
        ("plaintext-llm.prompt", Severity.CRITICAL),
        ("plaintext-llm.api-key", Severity.CRITICAL),
        ("unofficial-llm-endpoint", Severity.HIGH),
        ("cross-border.destination", Severity.MEDIUM),
    } <= kinds
    assert all(f.host == "api.chatanywhere.tech" for f in result.findings)
    written = json.dumps([f.to_dict() for f in result.findings], ensure_ascii=False)
    assert key not in written
    assert prompt not in written
