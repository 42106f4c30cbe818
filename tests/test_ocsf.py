"""OCSF Detection Finding rendering validates against the pinned OCSF 1.x subset."""

from __future__ import annotations

import copy

import pytest
from soc_helpers import NASTY_EVIDENCE, make_finding, validator

from auditor.model import Severity
from auditor.outputs.alert import Alert
from auditor.outputs.ocsf import alert_to_ocsf


@pytest.mark.parametrize(
    ("severity", "severity_id", "caption"),
    [
        (Severity.INFO, 1, "Informational"),
        (Severity.LOW, 2, "Low"),
        (Severity.MEDIUM, 3, "Medium"),
        (Severity.HIGH, 4, "High"),
        (Severity.CRITICAL, 5, "Critical"),
    ],
)
def test_ocsf_severity_mapping(severity: Severity, severity_id: int, caption: str) -> None:
    event = alert_to_ocsf(Alert(make_finding(severity=severity)))
    validator("ocsf_detection_finding.schema.json").validate(event)
    assert (event["severity_id"], event["severity"]) == (severity_id, caption)


def test_ocsf_create_then_update_with_network_tls_http_evidence() -> None:
    finding = make_finding(evidence=NASTY_EVIDENCE)
    created = alert_to_ocsf(Alert(finding, is_new=True))
    updated = alert_to_ocsf(Alert(finding, is_new=False))
    schema = validator("ocsf_detection_finding.schema.json")
    schema.validate(created)
    schema.validate(updated)
    assert (created["class_uid"], created["category_uid"]) == (2004, 2)
    assert (created["activity_id"], created["type_uid"]) == (1, 200401)
    assert (updated["activity_id"], updated["type_uid"]) == (2, 200402)
    # the finding uid is stable across alerts about the same finding
    assert created["finding_info"]["uid"] == updated["finding_info"]["uid"]
    assert created["time"] == 1_763_900_000_250
    (evidence,) = created["evidences"]
    assert evidence["dst_endpoint"] == {
        "hostname": "api.relay.example", "domain": "api.relay.example",
        "ip": "203.0.113.7", "port": 443,
    }
    assert evidence["src_endpoint"] == {"ip": "10.0.0.5"}
    assert evidence["tls"] == {
        "version": "1.0", "cipher": "TLS_RSA_WITH_RC4_128_SHA", "sni": "api.relay.example"
    }
    assert evidence["ja4_fingerprint_list"][0]["value"].startswith("t10d")
    assert evidence["http_request"]["http_method"] == "POST"
    assert evidence["http_request"]["url"]["path"] == "/v1/chat/completions"
    assert evidence["data"] == NASTY_EVIDENCE


def test_ocsf_without_tls_version_has_no_tls_object() -> None:
    event = alert_to_ocsf(Alert(make_finding(evidence={"sni": "x.example"})))
    validator("ocsf_detection_finding.schema.json").validate(event)
    assert "tls" not in event["evidences"][0]


def test_ocsf_schema_catches_missing_required() -> None:
    event = alert_to_ocsf(Alert(make_finding()))
    broken = copy.deepcopy(event)
    del broken["finding_info"]["uid"]
    assert list(validator("ocsf_detection_finding.schema.json").iter_errors(broken))
    broken = copy.deepcopy(event)
    broken["class_uid"] = 2001
    assert list(validator("ocsf_detection_finding.schema.json").iter_errors(broken))
