"""The per-host roll-up: one row per destination host, the organisation's AI-egress inventory.

``HostTable`` is updated incrementally as connections and findings arrive (memory grows with
the number of hosts, not with the capture); ``records()`` gives its rows at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from auditor.model import Connection, Finding, Severity

if TYPE_CHECKING:
    from auditor.enrich.geo import GeoInfo

# Columns of the per-host table, in order.
HOST_COLUMNS = [
    "host",
    "max_severity",
    "findings",
    "kinds",
    "service",
    "category",
    "jurisdiction",
    "addresses",
    "countries",
    "asns",
    "ports",
    "connections",
    "bytes_out",
    "bytes_in",
    "tls_versions",
    "ja4",
    "first_seen",
    "last_seen",
]


@dataclass
class HostRow:
    host: str
    addresses: set[str] = field(default_factory=set)
    countries: set[str] = field(default_factory=set)
    asns: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    connections: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    tls_versions: set[str] = field(default_factory=set)
    ja4: set[str] = field(default_factory=set)
    # (client address, JA4) -> connections: which client TLS stacks talk to this host.
    clients: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_seen: float | None = None
    last_seen: float | None = None
    findings: dict[tuple[str, str, str, str], Finding] = field(default_factory=dict)
    service: str = ""  # "OpenAI (official api)", "relay: example.tld", ...
    category: str = ""  # official / relay / aggregator / unofficial / ""
    jurisdiction: str = ""

    def seen(self, first: float, last: float) -> None:
        # Comparisons rather than min()/max(): called for every connection and finding.
        if self.first_seen is None or first < self.first_seen:
            self.first_seen = first
        if self.last_seen is None or last > self.last_seen:
            self.last_seen = last

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings.values()), default=None)


class HostTable:
    def __init__(self, version_name: Callable[[int], str] = lambda code: f"0x{code:04X}") -> None:
        self.rows: dict[str, HostRow] = {}
        self._version_name = version_name  # TLS version code -> "TLS 1.2" (from signatures)

    def _row(self, host: str) -> HostRow:
        row = self.rows.get(host)
        if row is None:
            row = self.rows[host] = HostRow(host=host)
        return row

    def add_connection(self, conn: Connection, geo: GeoInfo) -> None:
        row = self._row(conn.host)
        row.addresses.add(conn.flow.dst_ip)
        row.ports.add(conn.flow.dst_port)
        row.connections += 1
        row.bytes_out += conn.bytes_out
        row.bytes_in += conn.bytes_in
        row.seen(conn.first_seen, conn.last_seen)
        if geo.country:
            row.countries.add(geo.country + (" (anycast)" if geo.anycast else ""))
        if geo.asn:
            row.asns.add(f"AS{geo.asn}" + (f" {geo.as_org}" if geo.as_org else ""))
        if conn.tls is not None:
            if conn.tls.server is not None:
                row.tls_versions.add(self._version_name(conn.tls.server.version))
            if conn.tls.client is not None and conn.tls.client.ja4:
                row.ja4.add(conn.tls.client.ja4)
                row.clients[(conn.flow.src_ip, conn.tls.client.ja4)] += 1

    def add_finding(self, finding: Finding) -> None:
        row = self._row(finding.host)
        row.findings[finding.key] = finding
        row.seen(finding.first_seen, finding.last_seen)
        if finding.dst_ip:
            row.addresses.add(finding.dst_ip)
        ev = finding.evidence
        # The inventory columns come from the detectors that know what a host is.
        if finding.detector == "ai-service":
            row.service = str(ev.get("provider_name") or ev.get("provider") or row.service)
            row.category = str(ev.get("category") or "official")
            row.jurisdiction = str(ev.get("jurisdiction") or row.jurisdiction)
        elif finding.detector == "relay-domain":
            row.service = str(ev.get("operator") or ev.get("relay_domain") or row.service)
            row.category = str(ev.get("category") or "relay")
        elif finding.detector == "unofficial-llm-endpoint" and not row.category:
            row.category = "unofficial"
            row.service = str(ev.get("api_family") or row.service)

    def update_finding(self, finding: Finding) -> None:
        """``finding`` (added before, the same object) took in a repeat: its times may have
        moved."""
        self._row(finding.host).seen(finding.first_seen, finding.last_seen)

    def records(self) -> list[dict[str, Any]]:
        """One dict per host (the columns of ``HOST_COLUMNS``), most severe first, with sets
        flattened to sorted strings."""
        ranked = []
        for row in self.rows.values():
            sev = row.max_severity
            record = {
                "host": row.host,
                "max_severity": sev.label if sev is not None else "",
                "findings": len(row.findings),  # distinct findings, not sightings
                "kinds": ", ".join(sorted({f.kind for f in row.findings.values()})),
                "service": row.service,
                "category": row.category,
                "jurisdiction": row.jurisdiction,
                "addresses": ", ".join(sorted(row.addresses)),
                "countries": ", ".join(sorted(row.countries)),
                "asns": ", ".join(sorted(row.asns)),
                "ports": ", ".join(str(p) for p in sorted(row.ports)),
                "connections": row.connections,
                "bytes_out": row.bytes_out,
                "bytes_in": row.bytes_in,
                "tls_versions": ", ".join(sorted(row.tls_versions)),
                "ja4": ", ".join(sorted(row.ja4)),
                "first_seen": _iso(row.first_seen),
                "last_seen": _iso(row.last_seen),
            }
            rank = int(sev) if sev is not None else -1
            ranked.append(((-rank, -record["findings"], row.host), record))
        ranked.sort(key=lambda item: item[0])
        return [record for _, record in ranked]


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
