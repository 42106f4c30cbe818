"""LEEF 2.0 rendering: header, declared delimiter, safe values."""

from __future__ import annotations

import json
import re

from soc_helpers import NASTY_EVIDENCE, NASTY_TITLE, make_finding

from auditor.model import Severity
from auditor.outputs.alert import Alert
from auditor.outputs.leef import alert_to_leef


def _attributes(line: str) -> dict[str, str]:
    body = line.split("|", 6)[6]
    parts = re.split(r"(?<!\\)\^", body)
    pairs = dict(part.split("=", 1) for part in parts)
    return {key: _unescape(value) for key, value in pairs.items()}


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append({"n": "\n", "r": "\r"}.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def test_leef_header_and_attributes() -> None:
    evidence = {**NASTY_EVIDENCE, "caret": "a^b"}
    finding = make_finding(title=NASTY_TITLE, evidence=evidence, severity=Severity.CRITICAL)
    line = alert_to_leef(Alert(finding))
    assert "\n" not in line
    header = line.split("|")[:6]
    assert header[0] == "LEEF:2.0"
    assert header[4] == "relay-domain.known"
    assert header[5] == "^"
    attributes = _attributes(line)
    assert attributes["sev"] == "10"
    assert attributes["name"] == NASTY_TITLE
    assert attributes["dst"] == "203.0.113.7"
    assert attributes["dstPort"] == "443"
    assert attributes["devTime"] == "2025-11-23T12:13:20.250Z"
    assert json.loads(attributes["evidence"]) == evidence
