"""The durable findings store: SQLite on disk, one row per finding, plus the alert outbox.

    ... detectors -> findings -> **store** (dedupe, history) -> outbox -> sinks (SIEM, webhook)

The pipeline (or the proxy) hands every finding to ``FindingsStore.record``. A finding is
identified by its stable key (detector, kind, host, evidence_key): a repeat bumps ``count`` and
``last_seen`` of the existing row instead of adding one. For every sink that is active in this
process, ``record`` also decides whether the finding deserves an alert now (first time, a higher
severity than last alerted, or the alert window since the last alert has passed, measured on the
finding's own timeline) and, if so, queues a snapshot of it in the ``outbox`` table in the same
transaction. Delivery (``auditor.sinks``) drains the outbox in the background, so recording
never waits on the network, and the outbox survives a restart.

The file is created owner-only (0600): findings name internal hosts and carry evidence.
The database runs in WAL mode so ``auditor findings`` can read while a proxy writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.model import Finding, Severity

if TYPE_CHECKING:
    import pandas as pd

    from auditor.hosts import HostRow

log = logging.getLogger(__name__)

# Default alert window: one alert per finding key and sink per hour of the finding's activity,
# so a relay used all day pages the SOC a few times, not once per request.
DEFAULT_ALERT_WINDOW_SECONDS = 3600.0

STORE_ENV = "AUDITOR_STORE"


class StoreError(Exception):
    """The store file cannot be created, opened or read; the message names the file."""


def default_store_path() -> Path:
    """``$AUDITOR_STORE``, else ``$XDG_STATE_HOME/ai-egress-auditor/findings.sqlite3``."""
    explicit = os.environ.get(STORE_ENV)
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ai-egress-auditor" / "findings.sqlite3"


# Each migration moves the schema from version N-1 to N. Append only; never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    # 1: findings, sinks, per-sink alert state, outbox
    """
    CREATE TABLE findings (
        id INTEGER PRIMARY KEY,
        detector TEXT NOT NULL,
        kind TEXT NOT NULL,
        host TEXT NOT NULL,
        evidence_key TEXT NOT NULL,
        severity INTEGER NOT NULL,
        title TEXT NOT NULL,
        evidence TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        count INTEGER NOT NULL,
        dst_ip TEXT,
        dst_port INTEGER,
        src_ip TEXT,
        recorded_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (detector, kind, host, evidence_key)
    );
    CREATE INDEX findings_last_seen ON findings (last_seen);
    CREATE INDEX findings_host ON findings (host);
    CREATE TABLE sinks (
        name TEXT PRIMARY KEY,
        last_error TEXT,
        last_error_at REAL,
        last_delivered_at REAL,
        delivered INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE alert_state (
        sink TEXT NOT NULL,
        finding_id INTEGER NOT NULL REFERENCES findings (id),
        alerted_last_seen REAL NOT NULL,
        alerted_severity INTEGER NOT NULL,
        PRIMARY KEY (sink, finding_id)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        sink TEXT NOT NULL,
        finding_id INTEGER NOT NULL REFERENCES findings (id),
        payload TEXT NOT NULL,
        is_new INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        delivered_at REAL
    );
    CREATE INDEX outbox_pending ON outbox (sink, delivered_at, id);
    """,
    # 2: the per-host inventory of the runs (auditor.hosts.HostRow), for `auditor report`:
    # what findings alone do not say (countries, ASNs, TLS versions, client JA4s, traffic).
    # Set-like columns hold sorted JSON lists; clients holds [client address, ja4, connections].
    """
    CREATE TABLE host_inventory (
        host TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        category TEXT NOT NULL,
        jurisdiction TEXT NOT NULL,
        addresses TEXT NOT NULL,
        countries TEXT NOT NULL,
        asns TEXT NOT NULL,
        ports TEXT NOT NULL,
        tls_versions TEXT NOT NULL,
        ja4 TEXT NOT NULL,
        clients TEXT NOT NULL,
        connections INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        first_seen REAL,
        last_seen REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX host_inventory_last_seen ON host_inventory (last_seen);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

_FINDING_COLUMNS = (
    "id, detector, kind, host, evidence_key, severity, title, evidence, first_seen, last_seen, "
    "count, dst_ip, dst_port, src_ip"
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One queued alert: a snapshot of the finding as it was when the alert was decided."""

    id: int
    sink: str
    finding: Finding
    is_new: bool  # first alert for this finding on this sink (OCSF: Create, else Update)
    enqueued_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class SinkStatus:
    name: str
    backlog: int  # alerts queued and not yet delivered
    delivered: int
    last_error: str | None
    last_error_at: float | None
    last_delivered_at: float | None
    oldest_pending_at: float | None


@dataclass(slots=True)
class StoredHost:
    """One destination host as the recorded runs saw it (sums and unions over the runs)."""

    host: str
    service: str = ""
    category: str = ""
    jurisdiction: str = ""
    addresses: set[str] = field(default_factory=set)
    countries: set[str] = field(default_factory=set)
    asns: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    tls_versions: set[str] = field(default_factory=set)
    ja4: set[str] = field(default_factory=set)
    clients: dict[tuple[str, str], int] = field(default_factory=dict)  # (address, ja4) -> conns
    connections: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    first_seen: float | None = None
    last_seen: float | None = None


def finding_snapshot(finding: Finding) -> dict[str, Any]:
    """``Finding.to_dict`` plus the evidence key, so the finding can be rebuilt exactly."""
    snapshot = finding.to_dict()
    snapshot["evidence_key"] = finding.evidence_key
    return snapshot


def finding_from_snapshot(data: dict[str, Any]) -> Finding:
    return Finding(
        detector=str(data["detector"]),
        kind=str(data["kind"]),
        severity=Severity.parse(data["severity"]),
        host=str(data["host"]),
        title=str(data["title"]),
        evidence=dict(data.get("evidence") or {}),
        first_seen=float(data["first_seen"]),
        last_seen=float(data["last_seen"]),
        evidence_key=str(data.get("evidence_key") or ""),
        dst_ip=data.get("dst_ip"),
        dst_port=data.get("dst_port"),
        src_ip=data.get("src_ip"),
        count=int(data.get("count") or 1),
    )


# Encoders built once: ``json.dumps`` with options builds one per call.
_encode_evidence = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode
_encode_text = json.JSONEncoder(ensure_ascii=False).encode


class _KnownRowGone(Exception):
    """A row ``FindingsStore`` remembered writing or reading is no longer in the file."""


def _row_to_finding(row: Sequence[Any]) -> Finding:
    return Finding(
        detector=row[1],
        kind=row[2],
        host=row[3],
        evidence_key=row[4],
        severity=Severity(row[5]),
        title=row[6],
        evidence=json.loads(row[7]),
        first_seen=row[8],
        last_seen=row[9],
        count=row[10],
        dst_ip=row[11],
        dst_port=row[12],
        src_ip=row[13],
    )


class FindingsStore:
    """Findings on disk, deduplicated by key, with a per-sink alert outbox.

    Safe to share between the caller's thread and the delivery thread: one connection, one lock,
    and every method holds the lock only for its own short transaction.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        alert_window: float = DEFAULT_ALERT_WINDOW_SECONDS,
        clock: Any = time.time,
    ) -> None:
        self.path = Path(path)
        self.alert_window = alert_window
        self._clock = clock
        self._lock = threading.RLock()
        self._active_sinks: list[str] = []
        # (id, severity) by finding key of the rows this object wrote or read: a repeat needs
        # no lookup. Rows only grow (count, time range, severity), and nothing in the auditor
        # deletes findings; a row deleted by hand is noticed (its update changes nothing).
        self._known_rows: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        self._db = self._open()

    # -- opening and migrations ----------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        path = self.path
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Create it 0600 ourselves: sqlite3 would honour the umask (usually 0644), and
                # SQLite gives the -wal and -shm files the database file's mode.
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
                os.chmod(path, 0o600)
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create findings store: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open findings store: {exc}") from None
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives process crashes
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"{path}: not a findings store ({exc})") from None
        except StoreError:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        current = row[0] if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {current} is newer than this auditor "
                f"understands ({SCHEMA_VERSION}); upgrade the auditor"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            # One transaction per step: a crash mid-migration leaves the previous version intact.
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                raise StoreError(
                    f"{self.path}: upgrading the store to schema version {version} failed: {exc}"
                ) from None
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> FindingsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- recording -----------------------------------------------------------------------

    def set_active_sinks(self, names: Iterable[str]) -> None:
        """The sinks ``record`` queues alerts for (those configured in this process)."""
        names = list(dict.fromkeys(names))
        with self._lock:
            for name in names:
                self._db.execute("INSERT OR IGNORE INTO sinks (name) VALUES (?)", (name,))
            self._active_sinks = names

    def record(self, finding: Finding, *, count_delta: int | None = None) -> bool:
        """Store ``finding`` (or fold it into the stored one); True when it was not stored yet.

        ``count_delta`` is how many occurrences this call adds (default ``finding.count``):
        the pipeline hands over its running, already merged finding, so its callback passes
        the difference since the last call (see ``auditor.sinks.FindingsRecorder``).
        """
        delta = finding.count if count_delta is None else count_delta
        return self.record_many([(finding, delta)])[0]

    def record_many(self, items: Sequence[tuple[Finding, int]]) -> list[bool]:
        """``record`` for several (finding, count_delta) pairs in one transaction.

        Alerts are decided once the batch is written: once per finding, on its state at the
        end of the batch (a key given twice gets one decision).
        """
        now = self._clock()
        with self._lock:
            try:
                return self._write_findings(items, now)
            except _KnownRowGone:
                # Another writer deleted a row this object had written or read: the batch was
                # rolled back and the remembered rows forgotten, so this pass looks every key up.
                return self._write_findings(items, now)

    def _write_findings(self, items: Sequence[tuple[Finding, int]], now: float) -> list[bool]:
        db = self._db
        known = self._known_rows
        created: list[bool] = []
        finding_ids: list[int] = []
        count_updates: list[tuple[int, float, float, float, int]] = []
        severity_updates: list[tuple[int, str, str, int, int]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for finding, delta in items:
                key = finding.key
                row = known.get(key)
                if row is None:
                    row = db.execute(
                        "SELECT id, severity FROM findings "
                        "WHERE detector = ? AND kind = ? AND host = ? AND evidence_key = ?",
                        key,
                    ).fetchone()
                if row is None:
                    finding_id = self._insert_finding(finding, delta, now)
                    known[key] = (finding_id, finding.severity)
                    created.append(True)
                else:
                    # A repeat: count it, widen the time range; a more severe repeat wins (its
                    # title and evidence with it). The evidence is only encoded when written.
                    finding_id, severity = row
                    count_updates.append(
                        (max(delta, 0), finding.first_seen, finding.last_seen, now, finding_id)
                    )
                    if finding.severity > severity:
                        severity = finding.severity
                        severity_updates.append(
                            (
                                int(severity),
                                finding.title,
                                _encode_evidence(finding.evidence),
                                finding_id,
                                int(severity),
                            )
                        )
                    known[key] = (finding_id, severity)
                    created.append(False)
                finding_ids.append(finding_id)
            if count_updates:
                cursor = db.executemany(
                    "UPDATE findings SET count = count + ?, first_seen = min(first_seen, ?),"
                    " last_seen = max(last_seen, ?), updated_at = ? WHERE id = ?",
                    count_updates,
                )
                if cursor.rowcount != len(count_updates):
                    raise _KnownRowGone
            if severity_updates:
                # Conditional: another writer (a proxy on the same file) may have stored a
                # higher severity since this object last read the row.
                db.executemany(
                    "UPDATE findings SET severity = ?, title = ?, evidence = ?"
                    " WHERE id = ? AND severity < ?",
                    severity_updates,
                )
            if self._active_sinks:
                for finding_id in dict.fromkeys(finding_ids):
                    self._queue_alerts(finding_id, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            # Rows inserted or raised in this transaction are gone: forget them all.
            known.clear()
            raise
        return created

    def _insert_finding(self, finding: Finding, delta: int, now: float) -> int:
        cursor = self._db.execute(
            "INSERT INTO findings (detector, kind, host, evidence_key, severity, title,"
            " evidence, first_seen, last_seen, count, dst_ip, dst_port, src_ip, recorded_at,"
            " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *finding.key,
                int(finding.severity),
                finding.title,
                _encode_evidence(finding.evidence),
                finding.first_seen,
                finding.last_seen,
                max(delta, 1),
                finding.dst_ip,
                finding.dst_port,
                finding.src_ip,
                now,
                now,
            ),
        )
        return int(cursor.lastrowid or 0)

    def _queue_alerts(self, finding_id: int, now: float) -> None:
        db = self._db
        row = db.execute(
            f"SELECT {_FINDING_COLUMNS} FROM findings WHERE id = ?", (finding_id,)
        ).fetchone()
        current = _row_to_finding(row)
        payload = json.dumps(finding_snapshot(current), ensure_ascii=False, default=str)
        for sink in self._active_sinks:
            state = db.execute(
                "SELECT alerted_last_seen, alerted_severity FROM alert_state "
                "WHERE sink = ? AND finding_id = ?",
                (sink, finding_id),
            ).fetchone()
            if state is not None:
                alerted_last_seen, alerted_severity = state
                window_passed = current.last_seen >= alerted_last_seen + self.alert_window
                if not window_passed and int(current.severity) <= alerted_severity:
                    continue
            db.execute(
                "INSERT INTO outbox (sink, finding_id, payload, is_new, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (sink, finding_id, payload, int(state is None), now),
            )
            db.execute(
                "INSERT INTO alert_state (sink, finding_id, alerted_last_seen, alerted_severity)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (sink, finding_id) DO UPDATE SET"
                " alerted_last_seen = excluded.alerted_last_seen,"
                " alerted_severity = excluded.alerted_severity",
                (sink, finding_id, current.last_seen, int(current.severity)),
            )

    # -- queries -------------------------------------------------------------------------

    def findings(
        self,
        *,
        since: float | None = None,
        min_severity: Severity | None = None,
        host: str | None = None,
        detector: str | None = None,
        limit: int | None = None,
    ) -> list[Finding]:
        """Stored findings, most severe and most recent first.

        ``since`` keeps findings last seen at or after that time; ``host`` matches the host or
        any subdomain of it; ``min_severity`` keeps that severity and above.
        """
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("last_seen >= ?")
            params.append(since)
        if min_severity is not None:
            clauses.append("severity >= ?")
            params.append(int(min_severity))
        if host:
            host = host.lower().rstrip(".")
            clauses.append("(host = ? OR host LIKE ? ESCAPE '\\')")
            escaped = host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.extend([host, "%." + escaped])
        if detector:
            clauses.append("detector = ?")
            params.append(detector)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {_FINDING_COLUMNS} FROM findings {where} "
            "ORDER BY severity DESC, last_seen DESC, id"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_row_to_finding(row) for row in rows]

    def hosts(self, **filters: Any) -> pd.DataFrame:
        """The per-host roll-up of stored findings (same filters as ``findings``).

        Columns: host, max_severity, findings (occurrences), distinct, kinds, detectors,
        addresses, first_seen, last_seen (ISO 8601 UTC); most severe, busiest host first.
        """
        import pandas as pd

        columns = [
            "host",
            "max_severity",
            "findings",
            "distinct",
            "kinds",
            "detectors",
            "addresses",
            "first_seen",
            "last_seen",
        ]
        found = self.findings(**filters)
        if not found:
            return pd.DataFrame(columns=columns)
        frame = pd.DataFrame.from_records(
            [
                {
                    "host": f.host,
                    "severity": int(f.severity),
                    "count": f.count,
                    "kind": f.kind,
                    "detector": f.detector,
                    "dst_ip": f.dst_ip or "",
                    "first_seen": f.first_seen,
                    "last_seen": f.last_seen,
                }
                for f in found
            ]
        )

        def joined(values: pd.Series) -> str:
            return ", ".join(sorted({v for v in values if v}))

        rolled = frame.groupby("host", as_index=False).agg(
            rank=("severity", "max"),
            findings=("count", "sum"),
            distinct=("kind", "size"),
            kinds=("kind", joined),
            detectors=("detector", joined),
            addresses=("dst_ip", joined),
            first_seen=("first_seen", "min"),
            last_seen=("last_seen", "max"),
        )
        rolled = rolled.sort_values(["rank", "findings", "host"], ascending=[False, False, True])
        rolled["max_severity"] = [Severity(int(r)).label for r in rolled["rank"]]
        for column in ("first_seen", "last_seen"):
            rolled[column] = [_iso(ts) for ts in rolled[column]]
        return rolled[columns].reset_index(drop=True)

    # -- host inventory (written by `auditor pcap`, read by `auditor report`) --------------

    def record_hosts(self, rows: Iterable[HostRow]) -> None:
        """Fold one run's per-host table into the inventory: counts add up, sets unite."""
        now = self._clock()
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for row in rows:
                        stored = self._stored_host(row.host) or StoredHost(host=row.host)
                        _fold_host_row(stored, row)
                        db.execute(
                            "INSERT OR REPLACE INTO host_inventory (host, service, category,"
                            " jurisdiction, addresses, countries, asns, ports, tls_versions, ja4,"
                            " clients, connections, bytes_out, bytes_in, first_seen, last_seen,"
                            " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                            (
                                stored.host,
                                stored.service,
                                stored.category,
                                stored.jurisdiction,
                                *_json_sets(stored),
                                _json_clients(stored),
                                stored.connections,
                                stored.bytes_out,
                                stored.bytes_in,
                                stored.first_seen,
                                stored.last_seen,
                                now,
                            ),
                        )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot record the host inventory: {exc}") from None

    def stored_hosts(self, *, since: float | None = None) -> list[StoredHost]:
        """The inventory, hosts last seen at or after ``since`` (all when None), by name."""
        sql = f"SELECT {_HOST_COLUMNS} FROM host_inventory"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE last_seen >= ?"
            params.append(since)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY host", params).fetchall()
        hosts = [host for host in map(_parse_stored_host, rows) if host is not None]
        if len(hosts) < len(rows):
            log.warning(
                "findings store %s: skipped %d unreadable host inventory rows",
                self.path,
                len(rows) - len(hosts),
            )
        return hosts

    def _stored_host(self, host: str) -> StoredHost | None:
        row = self._db.execute(
            f"SELECT {_HOST_COLUMNS} FROM host_inventory WHERE host = ?", (host,)
        ).fetchone()
        # An unreadable (hand-edited, damaged) row is replaced by this run's row.
        return _parse_stored_host(row) if row is not None else None

    # -- outbox (used by auditor.sinks) --------------------------------------------------

    def pending(self, sink: str, limit: int = 100) -> list[OutboxEntry]:
        """Undelivered alerts for ``sink``, oldest first.

        A row whose payload cannot be read (a damaged or hand-edited store) is skipped: it is
        closed with ``last_error`` saying why, rather than stopping delivery of everything
        queued behind it.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sink, payload, is_new, enqueued_at, attempts FROM outbox "
                "WHERE sink = ? AND delivered_at IS NULL ORDER BY id LIMIT ?",
                (sink, limit),
            ).fetchall()
        entries: list[OutboxEntry] = []
        for row in rows:
            try:
                finding = finding_from_snapshot(json.loads(row[2]))
            except (ValueError, KeyError, TypeError) as exc:
                self._skip_unreadable(row[0], f"skipped: unreadable payload ({exc})")
                continue
            entries.append(
                OutboxEntry(
                    id=row[0],
                    sink=row[1],
                    finding=finding,
                    is_new=bool(row[3]),
                    enqueued_at=row[4],
                    attempts=row[5],
                )
            )
        return entries

    def _skip_unreadable(self, entry_id: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ?, last_error = ? WHERE id = ?",
                (self._clock(), error[:500], entry_id),
            )

    def mark_delivered(self, sink: str, entry_ids: Sequence[int]) -> None:
        if not entry_ids:
            return
        now = self._clock()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                    [(now, entry_id) for entry_id in entry_ids],
                )
                db.execute(
                    "UPDATE sinks SET delivered = delivered + ?, last_delivered_at = ? "
                    "WHERE name = ?",
                    (len(entry_ids), now, sink),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def mark_failed(self, sink: str, entry_ids: Sequence[int], error: str) -> None:
        now = self._clock()
        error = " ".join(error.split())[:500]  # one line, bounded
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                    [(error, entry_id) for entry_id in entry_ids],
                )
                db.execute(
                    "INSERT INTO sinks (name, last_error, last_error_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error,"
                    " last_error_at = excluded.last_error_at",
                    (sink, error, now),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def prune_delivered(self, older_than: float) -> int:
        """Forget delivered outbox rows enqueued before ``older_than`` (alert state stays)."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND enqueued_at < ?",
                (older_than,),
            )
        return cursor.rowcount

    def sink_status(self) -> list[SinkStatus]:
        """Backlog, deliveries and last error of every sink this store has known."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.name, s.delivered, s.last_error, s.last_error_at, s.last_delivered_at,"
                " (SELECT count(*) FROM outbox o WHERE o.sink = s.name"
                "   AND o.delivered_at IS NULL),"
                " (SELECT min(enqueued_at) FROM outbox o WHERE o.sink = s.name"
                "   AND o.delivered_at IS NULL)"
                " FROM sinks s ORDER BY s.name"
            ).fetchall()
        return [
            SinkStatus(
                name=row[0],
                delivered=row[1],
                last_error=row[2],
                last_error_at=row[3],
                last_delivered_at=row[4],
                backlog=row[5],
                oldest_pending_at=row[6],
            )
            for row in rows
        ]


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_HOST_COLUMNS = (
    "host, service, category, jurisdiction, addresses, countries, asns, ports, tls_versions,"
    " ja4, clients, connections, bytes_out, bytes_in, first_seen, last_seen"
)


def _json_sets(host: StoredHost) -> tuple[str, ...]:
    return tuple(
        _encode_text(sorted(values))
        for values in (
            host.addresses,
            host.countries,
            host.asns,
            host.ports,
            host.tls_versions,
            host.ja4,
        )
    )


def _json_clients(host: StoredHost) -> str:
    return json.dumps(sorted([address, ja4, n] for (address, ja4), n in host.clients.items()))


def _row_to_stored_host(row: Sequence[Any]) -> StoredHost:
    return StoredHost(
        host=row[0],
        service=row[1],
        category=row[2],
        jurisdiction=row[3],
        addresses=set(json.loads(row[4])),
        countries=set(json.loads(row[5])),
        asns=set(json.loads(row[6])),
        ports={int(p) for p in json.loads(row[7])},
        tls_versions=set(json.loads(row[8])),
        ja4=set(json.loads(row[9])),
        clients={(str(a), str(j)): int(n) for a, j, n in json.loads(row[10])},
        connections=row[11],
        bytes_out=row[12],
        bytes_in=row[13],
        first_seen=row[14],
        last_seen=row[15],
    )


def _parse_stored_host(row: Sequence[Any]) -> StoredHost | None:
    try:
        return _row_to_stored_host(row)
    except (ValueError, TypeError):
        return None


def _fold_host_row(stored: StoredHost, row: HostRow) -> None:
    # The latest run's naming wins when it has one (signatures may have been updated).
    stored.service = row.service or stored.service
    stored.category = row.category or stored.category
    stored.jurisdiction = row.jurisdiction or stored.jurisdiction
    stored.addresses |= row.addresses
    stored.countries |= row.countries
    stored.asns |= row.asns
    stored.ports |= row.ports
    stored.tls_versions |= row.tls_versions
    stored.ja4 |= row.ja4
    for key, connections in row.clients.items():
        stored.clients[key] = stored.clients.get(key, 0) + connections
    stored.connections += row.connections
    stored.bytes_out += row.bytes_out
    stored.bytes_in += row.bytes_in
    if row.first_seen is not None:
        stored.first_seen = (
            row.first_seen if stored.first_seen is None else min(stored.first_seen, row.first_seen)
        )
    if row.last_seen is not None:
        stored.last_seen = (
            row.last_seen if stored.last_seen is None else max(stored.last_seen, row.last_seen)
        )
