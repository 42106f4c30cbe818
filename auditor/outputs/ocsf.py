"""OCSF 1.x Detection Finding (class_uid 2004, category_uid 2 "Findings") rendering of an alert.

    store/outbox -> Alert -> **ocsf** -> sink (``ocsf:PATH``, or ``format=ocsf`` on any transport)

The first alert about a finding is activity 1 (Create), later ones (after the alert window or a
severity raise) activity 2 (Update); ``type_uid`` = class_uid * 100 + activity_id.
``finding_info.uid`` is the finding's stable id, ``finding_info.analytic`` names the detector
(a rule), and ``evidences`` carries the destination/source endpoints and, when the finding's
evidence has them, ``tls`` (version, cipher, SNI, JA4) and ``http_request``; the redacted
evidence itself goes in ``evidences[].data``. Times are OCSF ``timestamp_t``: epoch milliseconds.

Severity (``severity_id`` and its caption ``severity``):

    =========  ===========  ===============
    auditor    severity_id  severity
    =========  ===========  ===============
    info       1            Informational
    low        2            Low
    medium     3            Medium
    high       4            High
    critical   5            Critical
    =========  ===========  ===============
"""

from __future__ import annotations

from typing import Any

from auditor.model import Severity
from auditor.outputs.alert import (
    PRODUCT_NAME,
    PRODUCT_VENDOR,
    Alert,
    epoch_ms,
    is_ip_address,
    network_facts,
    product_version,
)

OCSF_VERSION = "1.1.0"
CLASS_UID = 2004
CATEGORY_UID = 2
ACTIVITY_CREATE = 1
ACTIVITY_UPDATE = 2

OCSF_SEVERITY: dict[Severity, tuple[int, str]] = {
    Severity.INFO: (1, "Informational"),
    Severity.LOW: (2, "Low"),
    Severity.MEDIUM: (3, "Medium"),
    Severity.HIGH: (4, "High"),
    Severity.CRITICAL: (5, "Critical"),
}


def alert_to_ocsf(alert: Alert, *, created: float | None = None) -> dict[str, Any]:
    finding = alert.finding
    activity_id = ACTIVITY_CREATE if alert.is_new else ACTIVITY_UPDATE
    severity_id, severity = OCSF_SEVERITY[finding.severity]
    dst_endpoint: dict[str, Any] = {}
    if is_ip_address(finding.host):
        dst_endpoint["ip"] = finding.host
    else:
        dst_endpoint["hostname"] = finding.host
        dst_endpoint["domain"] = finding.host
    if finding.dst_ip:
        dst_endpoint["ip"] = finding.dst_ip
    if finding.dst_port is not None:
        dst_endpoint["port"] = int(finding.dst_port)
    evidence: dict[str, Any] = {"dst_endpoint": dst_endpoint, "data": finding.evidence}
    if finding.src_ip:
        evidence["src_endpoint"] = {"ip": finding.src_ip}
    facts = network_facts(finding.evidence)
    # OCSF tls requires ``version``: only write the object when the version is known.
    if facts.tls_version:
        tls: dict[str, Any] = {"version": facts.tls_version}
        if facts.cipher:
            tls["cipher"] = facts.cipher
        if facts.server_name:
            tls["sni"] = facts.server_name
        evidence["tls"] = tls
    if facts.ja4:
        evidence["ja4_fingerprint_list"] = [{"type_id": 1, "type": "JA4", "value": facts.ja4}]
    if facts.has_http:
        request: dict[str, Any] = {}
        if facts.http_method:
            request["http_method"] = facts.http_method.upper()
        if facts.http_version:
            request["version"] = facts.http_version
        if facts.user_agent:
            request["user_agent"] = facts.user_agent
        url: dict[str, Any] = {"hostname": finding.host}
        if facts.http_path:
            url["path"] = facts.http_path.split("?", 1)[0]
        if facts.url:
            url["url_string"] = facts.url
        request["url"] = url
        evidence["http_request"] = request
    time_ms = epoch_ms(created if created is not None else finding.last_seen)
    return {
        "activity_id": activity_id,
        "activity_name": "Create" if alert.is_new else "Update",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"Detection Finding: {'Create' if alert.is_new else 'Update'}",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "time": time_ms,
        "start_time": epoch_ms(finding.first_seen),
        "end_time": epoch_ms(finding.last_seen),
        "count": finding.count,
        "message": finding.title,
        "is_alert": True,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": PRODUCT_NAME,
                "vendor_name": PRODUCT_VENDOR,
                "version": product_version(),
            },
            "uid": f"{alert.uid}-{epoch_ms(finding.last_seen)}",
        },
        "finding_info": {
            "uid": alert.uid,
            "title": finding.title,
            "types": [finding.kind],
            "first_seen_time": epoch_ms(finding.first_seen),
            "last_seen_time": epoch_ms(finding.last_seen),
            "analytic": {
                "name": finding.detector,
                "uid": finding.kind,
                "type_id": 1,
                "type": "Rule",
            },
        },
        "evidences": [evidence],
    }
