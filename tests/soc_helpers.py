"""Shared test data for the SOC-integration tests (store, sinks, formats)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from auditor.model import Finding, Severity

SCHEMAS = Path(__file__).parent / "schemas"

# Values that break naive CEF/LEEF/syslog writers: every escape-worthy character at once.
NASTY_TITLE = "Relay a|b \\ c=d\nsecond line"
NASTY_EVIDENCE: dict[str, Any] = {
    "relay_domain": "api.relay.example",
    "note": "key=value | pipe \\ backslash\nnew line\r\nand unicode: déjà vu",
    "tls_version": "TLS 1.0",
    "cipher_suite": "TLS_RSA_WITH_RC4_128_SHA",
    "sni": "api.relay.example",
    "ja4": "t10d0909h1_aaaaaaaaaaaa_bbbbbbbbbbbb",
    "method": "post",
    "path": "/v1/chat/completions?x=1",
}


def make_finding(
    host: str = "api.relay.example",
    *,
    kind: str = "relay-domain.known",
    severity: Severity = Severity.HIGH,
    ts: float = 1_763_900_000.25,
    evidence: dict[str, Any] | None = None,
    title: str = "Traffic to a known AI relay",
    evidence_key: str = "",
    dst_ip: str | None = "203.0.113.7",
    src_ip: str | None = "10.0.0.5",
) -> Finding:
    return Finding(
        detector=kind.split(".", 1)[0],
        kind=kind,
        severity=severity,
        host=host,
        title=title,
        evidence=dict(evidence if evidence is not None else {"relay_domain": host}),
        first_seen=ts,
        last_seen=ts,
        evidence_key=evidence_key,
        dst_ip=dst_ip,
        dst_port=443,
        src_ip=src_ip,
    )


def validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
