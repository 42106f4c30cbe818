"""Elastic Common Schema (ECS 8.x) rendering of an alert.

    store/outbox -> Alert -> **ecs** -> sink (``ecs:PATH``, or ``format=ecs`` on any transport)

Field choices: ``event.kind: alert``, ``event.category: [network]``, ``event.type: [info]``,
``rule.*`` names the detector and finding kind, ``destination.*``/``source.*`` the flow,
``tls.*``/``http.*``/``url.*`` are filled when the evidence carries them. What ECS has no field
for (repeat count, the redacted evidence, the finding's stable id) goes under
``ai_egress.*``, a custom field set as ECS recommends for non-ECS data.

Severity (``event.severity`` and ``event.risk_score``, ECS numbers; ``log.level`` the label),
matching the default risk scores of Elastic Security rules:

    =========  ==============  ===============
    auditor    event.severity  log.level
    =========  ==============  ===============
    info       0               info
    low        21              low
    medium     47              medium
    high       73              high
    critical   99              critical
    =========  ==============  ===============
"""

from __future__ import annotations

from typing import Any

from auditor.model import Severity
from auditor.outputs.alert import (
    PRODUCT_NAME,
    PRODUCT_VENDOR,
    Alert,
    is_ip_address,
    iso8601,
    network_facts,
)

ECS_VERSION = "8.11.0"

ECS_SEVERITY: dict[Severity, int] = {
    Severity.INFO: 0,
    Severity.LOW: 21,
    Severity.MEDIUM: 47,
    Severity.HIGH: 73,
    Severity.CRITICAL: 99,
}


def alert_to_ecs(alert: Alert, *, created: float | None = None) -> dict[str, Any]:
    finding = alert.finding
    score = ECS_SEVERITY[finding.severity]
    destination: dict[str, Any] = {}
    if is_ip_address(finding.host):
        destination["ip"] = finding.host
    else:
        destination["domain"] = finding.host
        destination["address"] = finding.host
    if finding.dst_ip:
        destination["ip"] = finding.dst_ip
    if finding.dst_port is not None:
        destination["port"] = int(finding.dst_port)
    document: dict[str, Any] = {
        "@timestamp": iso8601(finding.last_seen),
        "ecs": {"version": ECS_VERSION},
        "message": finding.title,
        "log": {"level": finding.severity.label},
        "event": {
            "kind": "alert",
            "category": ["network"],
            "type": ["info"],
            "module": PRODUCT_NAME,
            "dataset": f"{PRODUCT_NAME}.finding",
            "id": alert.uid,
            "severity": score,
            "risk_score": float(score),
            "start": iso8601(finding.first_seen),
            "end": iso8601(finding.last_seen),
            "action": "finding-new" if alert.is_new else "finding-update",
        },
        "rule": {
            "id": finding.kind,
            "name": finding.kind,
            "category": finding.detector,
            "description": finding.title,
        },
        "observer": {"vendor": PRODUCT_VENDOR, "product": PRODUCT_NAME, "type": "sensor"},
        "destination": destination,
        "ai_egress": {
            "detector": finding.detector,
            "kind": finding.kind,
            "evidence_key": finding.evidence_key,
            "count": finding.count,
            "evidence": finding.evidence,
        },
    }
    if created is not None:
        document["event"]["created"] = iso8601(created)
    if finding.src_ip:
        document["source"] = {"ip": finding.src_ip}
    facts = network_facts(finding.evidence)
    if facts.has_tls:
        tls: dict[str, Any] = {}
        if facts.tls_version:
            tls["version"] = facts.tls_version
            tls["version_protocol"] = facts.tls_protocol
        if facts.cipher:
            tls["cipher"] = facts.cipher
        client: dict[str, Any] = {}
        if facts.server_name:
            client["server_name"] = facts.server_name
        if facts.ja3:
            client["ja3"] = facts.ja3
        if client:
            tls["client"] = client
        if tls:
            document["tls"] = tls
        if facts.ja4:  # ECS has no JA4 field yet
            document["ai_egress"]["ja4"] = facts.ja4
    if facts.has_http:
        http: dict[str, Any] = {}
        if facts.http_method:
            http["request"] = {"method": facts.http_method.upper()}
        if facts.http_version:
            http["version"] = facts.http_version.removeprefix("HTTP/")
        if http:
            document["http"] = http
        url: dict[str, Any] = {}
        if facts.url:
            url["original"] = facts.url
        if facts.http_path:
            url["path"] = facts.http_path.split("?", 1)[0]
        if url:
            url.setdefault("domain", finding.host)
            document["url"] = url
        if facts.user_agent:
            document["user_agent"] = {"original": facts.user_agent}
    return document
