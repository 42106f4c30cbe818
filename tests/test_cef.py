"""CEF rendering: header and extension escaping per the CEF spec, and a lossless round trip."""

from __future__ import annotations

import json

import pytest
from soc_helpers import NASTY_EVIDENCE, NASTY_TITLE, make_finding

from auditor.model import Severity
from auditor.outputs.alert import Alert
from auditor.outputs.cef import (
    CEF_SEVERITY,
    alert_to_cef,
    escape_extension,
    escape_header,
    parse_cef,
)


def test_escaping_rules() -> None:
    assert escape_header("a|b\\c") == "a\\|b\\\\c"
    assert escape_header("line1\nline2") == "line1 line2"
    assert escape_extension("a=b\\c|d") == "a\\=b\\\\c|d"  # '|' is literal in the extension
    assert escape_extension("x\r\ny") == "x\\r\\ny"


def test_cef_line_is_one_line_and_round_trips() -> None:
    finding = make_finding(
        title=NASTY_TITLE, evidence=NASTY_EVIDENCE, kind="relay-domain.known|odd\\kind",
        evidence_key="k=v",
    )
    alert = Alert(finding)
    line = alert_to_cef(alert)
    assert "\n" not in line and "\r" not in line
    assert line.startswith("CEF:0|AI Egress Auditor|ai-egress-auditor|")
    header, extension = parse_cef(line)
    assert header[4] == "relay-domain.known|odd\\kind"
    assert header[5] == NASTY_TITLE.replace("\n", " ")
    assert header[6] == "8"
    assert extension["msg"] == NASTY_TITLE
    assert json.loads(extension["cs1"]) == NASTY_EVIDENCE
    assert extension["cs2"] == "k=v"
    assert extension["externalId"] == alert.uid
    assert extension["dhost"] == "api.relay.example"
    assert (extension["dst"], extension["dpt"], extension["src"]) == (
        "203.0.113.7", "443", "10.0.0.5"
    )
    assert extension["rt"] == "1763900000250"
    assert extension["cs3"] == "tls 1.0"
    assert extension["requestMethod"] == "POST"


def test_ipv6_goes_to_custom_address_fields() -> None:
    line = alert_to_cef(Alert(make_finding(dst_ip="2001:db8::1", src_ip="fd00::5")))
    _, extension = parse_cef(line)
    assert "dst" not in extension and "src" not in extension
    assert extension["c6a3"] == "2001:db8::1"
    assert extension["c6a2"] == "fd00::5"


def test_severity_mapping_covers_every_severity_in_range() -> None:
    values = [CEF_SEVERITY[s] for s in Severity]
    assert values == sorted(values) and all(0 <= v <= 10 for v in values)
    assert CEF_SEVERITY[Severity.CRITICAL] >= 9  # "very high" band


def test_parse_rejects_non_cef() -> None:
    with pytest.raises(ValueError, match="not a CEF line"):
        parse_cef("hello world")
    with pytest.raises(ValueError, match="fewer than 7"):
        parse_cef("CEF:0|a|b|c")
