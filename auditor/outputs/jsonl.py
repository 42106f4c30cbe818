"""Plain JSON rendering of an alert: the finding as ``Finding.to_dict`` plus its identity.

    store/outbox -> Alert -> **jsonl** -> sink (``jsonl:PATH``, or ``format=json`` on HTTP/syslog)

One JSON object per line in files; the same object is the default body of webhooks and Splunk
HEC events. Severity stays the auditor's own label (info, low, medium, high, critical).
"""

from __future__ import annotations

import json
from typing import Any

from auditor.outputs.alert import Alert, iso8601


def alert_to_json(alert: Alert) -> dict[str, Any]:
    finding = alert.finding
    record = finding.to_dict()
    record["evidence_key"] = finding.evidence_key
    record["uid"] = alert.uid
    record["alert"] = "new" if alert.is_new else "update"
    record["first_seen_iso"] = iso8601(finding.first_seen)
    record["last_seen_iso"] = iso8601(finding.last_seen)
    return record


def alert_to_json_line(alert: Alert) -> str:
    """One line, no embedded newline (JSON escapes them), UTF-8 kept readable."""
    return json.dumps(alert_to_json(alert), ensure_ascii=False, sort_keys=True, default=str)
