"""Webhook body for an alert: the alert as JSON, optionally with a Slack-compatible ``text``.

    store/outbox -> Alert -> body (jsonl | ecs | ocsf) -> **webhook** -> HTTP sink

The sink (``webhook+https://...``, see ``auditor.sinks``) POSTs one body per alert as
``application/json``. With ``slack=1`` the body also has a top-level ``text`` line, which is
what Slack (and Mattermost, Rocket.Chat) incoming webhooks display.

Severity: the body carries it in its own format (see ``jsonl``, ``ecs``, ``ocsf``); the
``text`` line starts with the auditor's label in capitals, e.g. ``[HIGH]``.
"""

from __future__ import annotations

from typing import Any

from auditor.outputs.alert import Alert


def slack_text(alert: Alert) -> str:
    finding = alert.finding
    seen = f"seen {finding.count} time{'s' if finding.count != 1 else ''}"
    state = "new finding" if alert.is_new else "still happening"
    return (
        f"[{finding.severity.name}] {finding.title} — host {finding.host} "
        f"({finding.kind}, {seen}, {state})"
    )


def webhook_body(alert: Alert, body: dict[str, Any], *, slack: bool = False) -> dict[str, Any]:
    if not slack:
        return body
    return {"text": slack_text(alert), **body}
