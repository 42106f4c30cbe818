"""The SOC click commands: findings/hosts queries, sinks status, signatures export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from soc_helpers import make_finding

from auditor.model import Severity
from auditor.soc_cli import (
    export_command,
    findings_command,
    hosts_command,
    parse_since,
    sinks_command,
)
from auditor.store import FindingsStore


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "findings.sqlite3"
    with FindingsStore(path) as store:
        store.record(make_finding(host="a.relay.example", ts=1000, severity=Severity.HIGH))
        store.record(make_finding(host="a.relay.example", ts=2000, severity=Severity.HIGH))
        store.record(make_finding(host="b.example", ts=3000, severity=Severity.LOW,
                                  kind="weak-tls.protocol"))
    return path


def test_parse_since() -> None:
    assert parse_since("2h", now=10_000) == 10_000 - 7200
    assert parse_since("7d", now=1_000_000) == 1_000_000 - 7 * 86400
    assert parse_since("1700000000") == 1_700_000_000
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_since("2023-11-14T22:13:20") == 1_700_000_000  # naive means UTC


def test_findings_json_with_filters(store_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        findings_command, ["--store", str(store_path), "--format", "json", "--severity", "medium"]
    )
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)
    assert (only["host"], only["count"], only["severity"]) == ("a.relay.example", 2, "high")
    result = runner.invoke(
        findings_command,
        ["--store", str(store_path), "--format", "jsonl", "--since", "1970-01-01T00:45:00Z"],
    )
    assert [json.loads(line)["host"] for line in result.output.splitlines()] == ["b.example"]
    table = runner.invoke(findings_command, ["--store", str(store_path)])
    assert table.exit_code == 0 and "findings (2)" in table.output


def test_hosts_csv(store_path: Path) -> None:
    result = CliRunner().invoke(hosts_command, ["--store", str(store_path), "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("host,max_severity,findings")
    assert lines[1].startswith("a.relay.example,high,2,")


def test_missing_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(findings_command, ["--store", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "none.db: no findings store here" in result.output
    assert not (tmp_path / "none.db").exists()  # a query never creates a store


def test_bad_since_is_a_usage_error(store_path: Path) -> None:
    result = CliRunner().invoke(findings_command, ["--store", str(store_path), "--since", "soon"])
    assert result.exit_code == 2 and "use a duration" in result.output


def test_sinks_status_reports_backlog_and_fails_when_stuck(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    with FindingsStore(path) as store:
        store.set_active_sinks(["webhook+http://127.0.0.1:9/x", "jsonl:/tmp/ok.jsonl"])
        store.record(make_finding())
        (stuck, *_) = store.pending("webhook+http://127.0.0.1:9/x")
        store.mark_failed("webhook+http://127.0.0.1:9/x", [stuck.id], "Connection refused")
        store.mark_delivered("jsonl:/tmp/ok.jsonl",
                             [e.id for e in store.pending("jsonl:/tmp/ok.jsonl")])
    result = CliRunner().invoke(sinks_command, ["status", "--store", str(path), "--format", "json"])
    assert result.exit_code == 1
    rows = {row["sink"]: row for row in json.loads(result.output)}
    assert rows["webhook+http://127.0.0.1:9/x"]["backlog"] == 1
    assert rows["webhook+http://127.0.0.1:9/x"]["last_error"] == "Connection refused"
    assert rows["jsonl:/tmp/ok.jsonl"]["backlog"] == 0
    assert rows["jsonl:/tmp/ok.jsonl"]["delivered"] == 1


def test_export_to_file(tmp_path: Path) -> None:
    output = tmp_path / "relays.rpz"
    result = CliRunner().invoke(export_command, ["--format", "rpz", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "$TTL 300" in output.read_text()
    result = CliRunner().invoke(export_command, ["--format", "nope"])
    assert result.exit_code == 2


def test_sinks_test_sends_a_probe(tmp_path: Path) -> None:
    target = tmp_path / "probe.jsonl"
    result = CliRunner().invoke(sinks_command, ["test", f"ocsf:{target}"])
    assert result.exit_code == 0, result.output
    (event,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert event["class_uid"] == 2004 and event["finding_info"]["types"] == ["sink-test.probe"]
    result = CliRunner().invoke(sinks_command, ["test", f"jsonl:{tmp_path}/missing/dir/x.jsonl"])
    assert result.exit_code == 1 and "delivery failed" in result.output
    result = CliRunner().invoke(sinks_command, ["test", "bogus://x"])
    assert result.exit_code == 1 and "unknown sink scheme" in result.output
