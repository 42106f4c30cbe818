"""ECS rendering validates against the pinned ECS subset and maps evidence to ECS fields."""

from __future__ import annotations

import copy

from soc_helpers import NASTY_EVIDENCE, NASTY_TITLE, make_finding, validator

from auditor.model import Severity
from auditor.outputs.alert import Alert
from auditor.outputs.ecs import ECS_SEVERITY, alert_to_ecs


def test_ecs_document_is_valid_and_complete() -> None:
    finding = make_finding(title=NASTY_TITLE, evidence=NASTY_EVIDENCE)
    document = alert_to_ecs(Alert(finding), created=finding.last_seen + 5)
    validator("ecs_alert.schema.json").validate(document)
    assert document["@timestamp"] == "2025-11-23T12:13:20.250Z"
    assert document["event"]["kind"] == "alert"
    assert document["event"]["severity"] == 73
    assert document["message"] == NASTY_TITLE
    assert document["destination"] == {
        "domain": "api.relay.example",
        "address": "api.relay.example",
        "ip": "203.0.113.7",
        "port": 443,
    }
    assert document["source"] == {"ip": "10.0.0.5"}
    assert document["tls"]["version"] == "1.0"
    assert document["tls"]["version_protocol"] == "tls"
    assert document["tls"]["cipher"] == "TLS_RSA_WITH_RC4_128_SHA"
    assert document["tls"]["client"]["server_name"] == "api.relay.example"
    assert document["http"]["request"]["method"] == "POST"
    assert document["url"]["path"] == "/v1/chat/completions"
    assert document["ai_egress"]["evidence"] == NASTY_EVIDENCE
    assert document["ai_egress"]["ja4"].startswith("t10d")


def test_ecs_ip_host_and_no_tls_evidence() -> None:
    finding = make_finding(host="198.51.100.9", dst_ip=None, src_ip=None)
    document = alert_to_ecs(Alert(finding, is_new=False))
    validator("ecs_alert.schema.json").validate(document)
    assert document["destination"] == {"ip": "198.51.100.9", "port": 443}
    assert "tls" not in document and "source" not in document
    assert document["event"]["action"] == "finding-update"


def test_ecs_severity_is_monotonic_and_schema_rejects_bad_types() -> None:
    scores = [ECS_SEVERITY[s] for s in Severity]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    document = alert_to_ecs(Alert(make_finding()))
    broken = copy.deepcopy(document)
    broken["destination"]["port"] = "443"
    assert list(validator("ecs_alert.schema.json").iter_errors(broken))
    broken = copy.deepcopy(document)
    broken["destination"]["ip"] = "not-an-ip"
    assert list(validator("ecs_alert.schema.json").iter_errors(broken))
