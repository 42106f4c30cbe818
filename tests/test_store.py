"""Tests for auditor.store: permissions, schema, dedupe, queries, host roll-up, outbox window."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from auditor.model import Finding, Severity
from auditor.store import SCHEMA_VERSION, FindingsStore, StoreError


def make_finding(
    host: str = "api.relay.example",
    kind: str = "relay-domain.known",
    severity: Severity = Severity.HIGH,
    ts: float = 1_700_000_000.0,
    evidence_key: str = "",
    detector: str = "relay-domain",
) -> Finding:
    return Finding(
        detector=detector,
        kind=kind,
        severity=severity,
        host=host,
        title=f"{kind} on {host}",
        evidence={"relay_domain": host, "note": "a=b|c\\d"},
        first_seen=ts,
        last_seen=ts,
        evidence_key=evidence_key,
        dst_ip="203.0.113.7",
        dst_port=443,
        src_ip="10.0.0.5",
    )


def test_store_file_is_owner_only_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "findings.sqlite3"
    with FindingsStore(path) as store:
        store.record(make_finding())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert store.schema_version == SCHEMA_VERSION


def test_repeat_updates_count_and_last_seen(tmp_path: Path) -> None:
    with FindingsStore(tmp_path / "f.db") as store:
        assert store.record(make_finding(ts=100.0)) is True
        assert store.record(make_finding(ts=250.0)) is False
        assert store.record(make_finding(ts=50.0)) is False
        # a different evidence key is a different finding
        assert store.record(make_finding(ts=60.0, evidence_key="other")) is True
        found = {f.evidence_key: f for f in store.findings()}
    assert len(found) == 2
    merged = found[""]
    assert merged.count == 3
    assert (merged.first_seen, merged.last_seen) == (50.0, 250.0)
    assert merged.evidence == {"relay_domain": "api.relay.example", "note": "a=b|c\\d"}


def test_more_severe_repeat_raises_severity(tmp_path: Path) -> None:
    def finding(severity: Severity, label: str) -> Finding:
        found = make_finding(severity=severity)
        found.title, found.evidence = f"title {label}", {"seen": label}
        return found

    with FindingsStore(tmp_path / "f.db") as store:
        store.record(finding(Severity.LOW, "low"))
        store.record(finding(Severity.CRITICAL, "critical"))
        store.record(finding(Severity.MEDIUM, "medium"))
        (only,) = store.findings()
    # the most severe occurrence's title and evidence, not the latest one's
    assert only.severity is Severity.CRITICAL and only.count == 3
    assert (only.title, only.evidence) == ("title critical", {"seen": "critical"})


def test_dedupe_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    with FindingsStore(path) as store:
        store.record(make_finding())
    with FindingsStore(path) as store:
        assert store.record(make_finding()) is False
        assert [f.count for f in store.findings()] == [2]


def test_query_filters(tmp_path: Path) -> None:
    with FindingsStore(tmp_path / "f.db") as store:
        store.record(make_finding(host="a.relay.example", ts=100, severity=Severity.LOW))
        store.record(make_finding(host="relay.example", ts=200, severity=Severity.HIGH))
        store.record(make_finding(host="notrelay.example", ts=300, severity=Severity.MEDIUM))
        store.record(
            make_finding(host="x_y.example", ts=400, detector="weak-tls", kind="weak-tls.protocol")
        )
        hosts = [f.host for f in store.findings(host="relay.example")]
        assert sorted(hosts) == ["a.relay.example", "relay.example"]
        assert [f.host for f in store.findings(since=250)] == ["x_y.example", "notrelay.example"]
        assert {f.host for f in store.findings(min_severity=Severity.MEDIUM)} == {
            "relay.example",
            "notrelay.example",
            "x_y.example",
        }
        assert [f.host for f in store.findings(detector="weak-tls")] == ["x_y.example"]
        # LIKE wildcards in the filter are literal
        assert store.findings(host="x%y.example") == []
        # most severe first
        assert store.findings()[0].severity is Severity.HIGH


def test_hosts_rollup(tmp_path: Path) -> None:
    with FindingsStore(tmp_path / "f.db") as store:
        assert store.hosts().empty
        store.record(make_finding(host="a.example", kind="k1", severity=Severity.LOW, ts=10))
        store.record(make_finding(host="a.example", kind="k2", severity=Severity.HIGH, ts=20))
        store.record(make_finding(host="a.example", kind="k2", severity=Severity.HIGH, ts=30))
        store.record(make_finding(host="b.example", kind="k1", severity=Severity.MEDIUM, ts=5))
        frame = store.hosts()
    assert list(frame["host"]) == ["a.example", "b.example"]
    first = frame.iloc[0]
    assert first["max_severity"] == "high"
    assert first["findings"] == 3
    assert first["distinct"] == 2
    assert first["kinds"] == "k1, k2"
    assert first["first_seen"] == "1970-01-01T00:00:10Z"
    assert first["last_seen"] == "1970-01-01T00:00:30Z"


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match=r"junk\.db: not a findings store"):
        FindingsStore(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    FindingsStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 999")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this auditor"):
        FindingsStore(path)


def test_outbox_once_per_window_and_on_escalation(tmp_path: Path) -> None:
    with FindingsStore(tmp_path / "f.db", alert_window=3600) as store:
        store.set_active_sinks(["webhook", "syslog"])
        store.record(make_finding(ts=1000))
        store.record(make_finding(ts=1500))  # inside the window: no new alert
        store.record(make_finding(ts=4599))  # 3599 s after the alert: still inside
        pending = store.pending("webhook")
        assert len(pending) == 1 and pending[0].is_new
        store.record(make_finding(ts=4600))  # window passed
        store.record(make_finding(ts=4700, severity=Severity.CRITICAL))  # escalation
        pending = store.pending("webhook")
        assert [p.is_new for p in pending] == [True, False, False]
        assert pending[1].finding.count == 4
        assert pending[2].finding.severity is Severity.CRITICAL
        assert len(store.pending("syslog")) == 3
        store.mark_delivered("webhook", [p.id for p in pending[:2]])
        store.mark_failed("syslog", [store.pending("syslog")[0].id], "connection refused\nretrying")
        status = {s.name: s for s in store.sink_status()}
    assert status["webhook"].backlog == 1 and status["webhook"].delivered == 2
    assert status["syslog"].backlog == 3
    assert status["syslog"].last_error == "connection refused retrying"


def test_prune_forgets_only_old_delivered_rows(tmp_path: Path) -> None:
    clock = iter([100.0, 100.0, 200.0, 200.0, 300.0]).__next__
    with FindingsStore(tmp_path / "f.db", clock=clock) as store:
        store.set_active_sinks(["s"])
        store.record(make_finding(host="old.example"))  # enqueued at 100
        store.record(make_finding(host="new.example"))  # enqueued at 100
        old, _still_pending = store.pending("s")
        store.mark_delivered("s", [old.id])  # 200
        assert store.prune_delivered(older_than=150) == 1  # the undelivered one stays
        assert [e.finding.host for e in store.pending("s")] == ["new.example"]


def test_migrations_upgrade_an_old_store_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.store as store_module

    path = tmp_path / "f.db"
    with FindingsStore(path) as store:
        store.record(make_finding())
    upgraded = (*store_module.MIGRATIONS, "ALTER TABLE findings ADD COLUMN triage TEXT")
    monkeypatch.setattr(store_module, "MIGRATIONS", upgraded)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(upgraded))
    with FindingsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION + 1
        assert [f.count for f in store.findings()] == [1]  # data kept
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(findings)")]
    assert "triage" in columns


def test_failed_migration_rolls_back_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.store as store_module

    path = tmp_path / "f.db"
    FindingsStore(path).close()
    broken = (*store_module.MIGRATIONS, "ALTER TABLE findings ADD COLUMN x TEXT; SELECT nonsense(")
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(broken))
    expected = f"upgrading the store to schema version {SCHEMA_VERSION + 1} failed"
    with pytest.raises(StoreError, match=expected):
        FindingsStore(path)
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(findings)")]
    assert "x" not in columns
    version = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone()
    assert version == (SCHEMA_VERSION,)


def test_unreadable_outbox_row_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    with FindingsStore(path) as store:
        store.set_active_sinks(["s"])
        store.record(make_finding(host="broken.example"))
        store.record(make_finding(host="fine.example"))
    db = sqlite3.connect(path)
    db.execute("UPDATE outbox SET payload = '{not json' WHERE id = 1")
    db.commit()
    db.close()
    with FindingsStore(path) as store:
        assert [e.finding.host for e in store.pending("s")] == ["fine.example"]
        assert [e.finding.host for e in store.pending("s")] == ["fine.example"]  # stays skipped
    row = sqlite3.connect(path).execute("SELECT last_error FROM outbox WHERE id = 1").fetchone()
    assert row[0].startswith("skipped: unreadable payload")


def test_store_notices_rows_other_writers_changed(tmp_path: Path) -> None:
    """The store remembers the rows it wrote; another writer raising a severity or deleting a
    row (by hand: the auditor deletes none) is still taken into account."""
    path = tmp_path / "f.db"

    def finding(severity: Severity, title: str) -> Finding:
        found = make_finding(severity=severity)
        found.title = title
        return found

    with FindingsStore(path) as store, FindingsStore(path) as other:
        store.record(finding(Severity.LOW, "by store"))
        other.record(finding(Severity.CRITICAL, "by other"))
        store.record(finding(Severity.HIGH, "by store, again"))  # less than the stored one
        (only,) = store.findings()
        assert (only.severity, only.title, only.count) == (Severity.CRITICAL, "by other", 3)

        db = sqlite3.connect(path)
        db.execute("DELETE FROM findings")
        db.commit()
        db.close()
        assert store.record(finding(Severity.LOW, "after the delete")) is True
        (only,) = store.findings()
        assert (only.severity, only.title, only.count) == (Severity.LOW, "after the delete", 1)


def test_failed_batch_leaves_no_remembered_rows(tmp_path: Path) -> None:
    """A rolled-back batch's new row ids are free again: the store must not update the row
    that reuses one of them when the rolled-back finding comes back."""
    broken = make_finding(host="broken.example")
    broken.title = None  # type: ignore[assignment]  # NOT NULL: the batch fails
    with FindingsStore(tmp_path / "f.db") as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.record_many([(make_finding(host="a.example"), 1), (broken, 1)])
        assert store.findings() == []
        assert store.record(make_finding(host="b.example")) is True  # takes the freed id
        assert store.record(make_finding(host="a.example")) is True
        counts = {f.host: f.count for f in store.findings()}
    assert counts == {"a.example": 1, "b.example": 1}


def test_batch_with_a_key_twice_stores_what_two_records_store(tmp_path: Path) -> None:
    def finding(severity: Severity, ts: float) -> Finding:
        found = make_finding(severity=severity, ts=ts)
        found.title, found.evidence = f"title {severity.label}", {"seen": severity.label}
        return found

    pairs = [(finding(Severity.LOW, 100.0), 2), (finding(Severity.HIGH, 50.0), 3)]
    stored = []
    for way in ("one by one", "batch"):
        with FindingsStore(tmp_path / f"{way}.db") as store:
            if way == "batch":
                assert store.record_many(pairs) == [True, False]
            else:
                assert [store.record(f, count_delta=n) for f, n in pairs] == [True, False]
            stored.append(store.findings())
    assert stored[0] == stored[1]
    assert (stored[0][0].count, stored[0][0].severity, stored[0][0].first_seen) == (
        5,
        Severity.HIGH,
        50.0,
    )
