"""ArcSight Common Event Format (CEF:0) rendering of an alert, for syslog sinks.

    store/outbox -> Alert -> **cef** -> syslog sink (``syslog+udp|tcp|tls://``, RFC 5424 header)

``CEF:0|Vendor|Product|Version|Device Event Class ID|Name|Severity|Extension`` where the class
id is the finding kind and the name its title. Escaping follows the CEF specification: in the
header ``\\`` and ``|`` are backslash-escaped (a newline is not allowed there, so it becomes a
space); in extension values ``\\`` and ``=`` are backslash-escaped and CR/LF become ``\\r`` /
``\\n``, so one event is always one line.

Extension keys: ``rt``/``start``/``end`` (epoch ms), ``cnt`` repeat count, ``dhost`` host,
``dst``/``dpt`` destination (IPv6 in ``c6a3``), ``src`` client (IPv6 in ``c6a2``), ``cat``
detector, ``msg`` title, ``externalId`` the finding's stable id, ``act`` new/update, ``cs1``
evidence (JSON), ``cs2`` evidence key, ``cs3`` TLS version, ``cs4`` cipher, ``cs5`` JA4,
``requestMethod``/``request`` when the evidence has HTTP facts.

Severity (CEF 0-10: 0-3 low, 4-6 medium, 7-8 high, 9-10 very high):

    =========  ============
    auditor    CEF severity
    =========  ============
    info       1
    low        3
    medium     5
    high       8
    critical   10
    =========  ============
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from auditor.model import Severity
from auditor.outputs.alert import (
    PRODUCT_NAME,
    PRODUCT_VENDOR,
    Alert,
    epoch_ms,
    network_facts,
    product_version,
)

CEF_SEVERITY: dict[Severity, int] = {
    Severity.INFO: 1,
    Severity.LOW: 3,
    Severity.MEDIUM: 5,
    Severity.HIGH: 8,
    Severity.CRITICAL: 10,
}


def escape_header(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def escape_extension(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("=", "\\=")
    return value.replace("\r", "\\r").replace("\n", "\\n")


def _ip_fields(address: str | None, v4_key: str, v6_key: str) -> list[tuple[str, str]]:
    if not address:
        return []
    try:
        version = ipaddress.ip_address(address).version
    except ValueError:
        return []
    if version == 4:
        return [(v4_key, address)]
    return [(v6_key, address), (f"{v6_key}Label", "destinationIPv6" if v6_key == "c6a3"
                                else "sourceIPv6")]


def alert_extension(alert: Alert) -> list[tuple[str, str]]:
    """The extension as ordered (key, unescaped value) pairs."""
    finding = alert.finding
    pairs: list[tuple[str, str]] = [
        ("rt", str(epoch_ms(finding.last_seen))),
        ("start", str(epoch_ms(finding.first_seen))),
        ("end", str(epoch_ms(finding.last_seen))),
        ("cnt", str(finding.count)),
        ("dhost", finding.host),
    ]
    pairs += _ip_fields(finding.dst_ip, "dst", "c6a3")
    if finding.dst_port is not None:
        pairs.append(("dpt", str(finding.dst_port)))
    pairs += _ip_fields(finding.src_ip, "src", "c6a2")
    pairs += [
        ("cat", finding.detector),
        ("msg", finding.title),
        ("externalId", alert.uid),
        ("act", "new" if alert.is_new else "update"),
        ("cs1Label", "evidence"),
        ("cs1", json.dumps(finding.evidence, ensure_ascii=False, sort_keys=True, default=str)),
        ("cs2Label", "evidenceKey"),
        ("cs2", finding.evidence_key),
    ]
    facts = network_facts(finding.evidence)
    if facts.tls_version:
        pairs += [("cs3Label", "tlsVersion"), ("cs3", f"{facts.tls_protocol} {facts.tls_version}")]
    if facts.cipher:
        pairs += [("cs4Label", "tlsCipher"), ("cs4", facts.cipher)]
    if facts.ja4:
        pairs += [("cs5Label", "ja4"), ("cs5", facts.ja4)]
    if facts.http_method:
        pairs.append(("requestMethod", facts.http_method.upper()))
    if facts.url or facts.http_path:
        pairs.append(("request", facts.url or f"{finding.host}{facts.http_path}"))
    return pairs


def alert_to_cef(alert: Alert) -> str:
    finding = alert.finding
    header = [
        "CEF:0",
        escape_header(PRODUCT_VENDOR),
        escape_header(PRODUCT_NAME),
        escape_header(product_version()),
        escape_header(finding.kind),
        escape_header(finding.title),
        str(CEF_SEVERITY[finding.severity]),
    ]
    pairs = alert_extension(alert)
    extension = " ".join(f"{key}={escape_extension(value)}" for key, value in pairs)
    return "|".join(header) + "|" + extension


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Split a CEF line into its 7 unescaped header fields and extension mapping.

    The inverse of ``alert_to_cef`` (used to check round trips through a real syslog daemon).
    Raises ValueError on a line that is not CEF.
    """
    start = line.find("CEF:")
    if start < 0:
        raise ValueError("not a CEF line: no 'CEF:' prefix")
    text = line[start:]
    header: list[str] = []
    current: list[str] = []
    i = 0
    while len(header) < 7:
        if i >= len(text):
            raise ValueError("not a CEF line: fewer than 7 header fields")
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in "\\|":
            current.append(text[i + 1])
            i += 2
            continue
        if char == "|":
            header.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    return header, _parse_extension(text[i:])


def _parse_extension(text: str) -> dict[str, Any]:
    # A key is the last run of non-space characters before an unescaped '='.
    pairs: dict[str, str] = {}
    tokens: list[tuple[int, int]] = []  # (start of key, index of '=')
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "=":
            key_start = text.rfind(" ", 0, i) + 1
            tokens.append((key_start, i))
        i += 1
    for n, (key_start, eq) in enumerate(tokens):
        value_end = tokens[n + 1][0] - 1 if n + 1 < len(tokens) else len(text)
        raw = text[eq + 1 : value_end]
        pairs[text[key_start:eq]] = _unescape_extension(raw)
    return pairs


def _unescape_extension(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            out.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)
