"""Splunk HTTP Event Collector (HEC) event envelope for an alert.

    store/outbox -> Alert -> body (jsonl | ecs | ocsf) -> **splunk_hec** -> HTTP sink

The sink (``splunk-hec://host:port?token=...``, see ``auditor.sinks``) POSTs these envelopes to
``/services/collector/event`` with ``Authorization: Splunk <token>``; several may be sent in
one request, concatenated, as HEC allows. ``time`` is the finding's last sighting (epoch
seconds); ``event`` is the body in the chosen format.

Severity: HEC has no severity field of its own; the event body carries it (``severity`` label
in the plain JSON body, ``event.severity``/``log.level`` in ECS, ``severity_id`` in OCSF), and
``fields.severity`` repeats the auditor's label as an indexed field for fast searches.
"""

from __future__ import annotations

from typing import Any

from auditor.outputs.alert import PRODUCT_NAME, Alert

DEFAULT_SOURCETYPE = f"{PRODUCT_NAME}:finding"
EVENT_PATH = "/services/collector/event"


def hec_event(
    alert: Alert,
    body: dict[str, Any],
    *,
    index: str | None = None,
    sourcetype: str | None = None,
    source: str = PRODUCT_NAME,
    host: str | None = None,
) -> dict[str, Any]:
    finding = alert.finding
    envelope: dict[str, Any] = {
        "time": round(finding.last_seen, 3),
        "source": source,
        "sourcetype": sourcetype or DEFAULT_SOURCETYPE,
        "event": body,
        "fields": {
            "severity": finding.severity.label,
            "detector": finding.detector,
            "kind": finding.kind,
            "finding_uid": alert.uid,
        },
    }
    if index:
        envelope["index"] = index
    if host:
        envelope["host"] = host
    return envelope
