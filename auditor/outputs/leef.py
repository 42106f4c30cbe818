"""IBM QRadar Log Event Extended Format (LEEF 2.0) rendering of an alert, for syslog sinks.

    store/outbox -> Alert -> **leef** -> syslog sink (``syslog+...://host:port?format=leef``)

``LEEF:2.0|Vendor|Product|Version|EventID|^|key=value^key=value...``: the event id is the
finding kind; attributes are separated by ``^`` (declared in the header's delimiter field, as
LEEF 2.0 allows). LEEF defines no escape syntax, so values are made safe: ``\\`` and the
delimiter are backslash-escaped and CR/LF become ``\\r``/``\\n`` (one event per line); ``|`` and
``\\`` in header fields are backslash-escaped as in CEF.

Predefined keys used: ``devTime`` (with ``devTimeFormat``), ``sev``, ``cat``, ``src``, ``dst``,
``dstPort``, ``url``; custom keys: ``dhost``, ``name``, ``detector``, ``findingUid``,
``count``, ``alert``, ``evidence`` (JSON), ``tlsVersion``, ``tlsCipher``, ``ja4``.

Severity (LEEF ``sev`` 1-10):

    =========  ========
    auditor    sev
    =========  ========
    info       1
    low        3
    medium     5
    high       8
    critical   10
    =========  ========
"""

from __future__ import annotations

import json

from auditor.model import Severity
from auditor.outputs.alert import (
    PRODUCT_NAME,
    PRODUCT_VENDOR,
    Alert,
    iso8601,
    network_facts,
    product_version,
)

LEEF_DELIMITER = "^"

LEEF_SEVERITY: dict[Severity, int] = {
    Severity.INFO: 1,
    Severity.LOW: 3,
    Severity.MEDIUM: 5,
    Severity.HIGH: 8,
    Severity.CRITICAL: 10,
}

# devTimeFormat in Java SimpleDateFormat, as LEEF expects.
DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSX"


def escape_header(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r", " ").replace("\n", " ")


def escape_value(value: str) -> str:
    value = value.replace("\\", "\\\\").replace(LEEF_DELIMITER, "\\" + LEEF_DELIMITER)
    return value.replace("\r", "\\r").replace("\n", "\\n")


def alert_to_leef(alert: Alert) -> str:
    finding = alert.finding
    attributes: list[tuple[str, str]] = [
        ("devTime", iso8601(finding.last_seen)),
        ("devTimeFormat", DEV_TIME_FORMAT),
        ("sev", str(LEEF_SEVERITY[finding.severity])),
        ("cat", finding.detector),
        ("name", finding.title),
        ("dhost", finding.host),
    ]
    if finding.dst_ip:
        attributes.append(("dst", finding.dst_ip))
    if finding.dst_port is not None:
        attributes.append(("dstPort", str(finding.dst_port)))
    if finding.src_ip:
        attributes.append(("src", finding.src_ip))
    attributes += [
        ("detector", finding.detector),
        ("findingUid", alert.uid),
        ("count", str(finding.count)),
        ("alert", "new" if alert.is_new else "update"),
        ("evidence", json.dumps(finding.evidence, ensure_ascii=False, sort_keys=True, default=str)),
    ]
    facts = network_facts(finding.evidence)
    if facts.tls_version:
        attributes.append(("tlsVersion", f"{facts.tls_protocol} {facts.tls_version}"))
    if facts.cipher:
        attributes.append(("tlsCipher", facts.cipher))
    if facts.ja4:
        attributes.append(("ja4", facts.ja4))
    if facts.url:
        attributes.append(("url", facts.url))
    header = "|".join(
        [
            "LEEF:2.0",
            escape_header(PRODUCT_VENDOR),
            escape_header(PRODUCT_NAME),
            escape_header(product_version()),
            escape_header(finding.kind),
            LEEF_DELIMITER,
        ]
    )
    body = LEEF_DELIMITER.join(f"{key}={escape_value(value)}" for key, value in attributes)
    return f"{header}|{body}"
