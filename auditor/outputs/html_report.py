"""The self-contained HTML report: stored findings and host inventory -> one .html file.

    store (auditor.store: findings, host inventory) -> auditor.report -> **render_report** -> file

``render_report`` turns a ``ReportInput`` (findings plus the stored per-host inventory) into
one HTML page that opens offline: CSS, the sorting script and every chart (SVG or CSS bars)
are inline; nothing is fetched. A Content-Security-Policy in the page allows no network
loads at all and only the report's own script (by hash), so even a value that escaped
escaping could not load or run anything.

Every value that comes from traffic (host names, titles, evidence) is attacker-controlled and
goes through ``html.escape``; no traffic value is ever placed inside the script. Evidence is
shown as stored, which is already redacted by the detectors (``auditor.redact``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auditor.model import Finding, Severity
from auditor.store import StoredHost

# Severity colours: red to grey, readable on white and distinguishable in greyscale print.
SEVERITY_COLOURS = {
    Severity.CRITICAL: "#9f1239",
    Severity.HIGH: "#ea580c",
    Severity.MEDIUM: "#d9a406",
    Severity.LOW: "#2563eb",
    Severity.INFO: "#94a3b8",
}
SEVERITIES_HIGH_FIRST = sorted(Severity, reverse=True)

# Bucket widths the timeline may use (seconds); the smallest giving at most MAX_BUCKETS wins.
BUCKET_WIDTHS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 2 * 86400, 7 * 86400, 30 * 86400,
)
MAX_BUCKETS = 48
# Rows of the ranked sections (countries, clients); the full data is in the tables below.
TOP_ROWS = 15
# The findings list stops here so a store of a busy year still gives a page a browser opens.
MAX_FINDINGS_LISTED = 5000
# Longer evidence lists (e.g. every official host of a provider) are cut to this many items.
MAX_EVIDENCE_LIST_ITEMS = 12

# Weak-TLS finding kinds that are about the protocol, the cipher or the client's offer; every
# other weak-tls kind is a certificate problem.
_TLS_PROTOCOL_KIND = "weak-tls.protocol"
_TLS_CIPHER_KIND = "weak-tls.cipher"
_TLS_CLIENT_KINDS = ("weak-tls.client-offers-only-weak", "weak-tls.no-sni")


@dataclass
class ReportInput:
    """What the report shows: findings and inventory already filtered by the caller."""

    title: str
    findings: list[Finding]
    hosts: list[StoredHost]
    generated_at: float
    source: str = ""  # e.g. the store path, shown in the header
    since: float | None = None


@dataclass
class HostSummary:
    """One row of the report's host table: inventory and findings of one host together."""

    host: str
    severity: Severity | None = None
    findings: int = 0  # distinct findings
    sightings: int = 0  # occurrences over all findings
    kinds: set[str] = field(default_factory=set)
    service: str = ""
    category: str = ""
    jurisdiction: str = ""
    countries: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    ja4: set[str] = field(default_factory=set)
    connections: int = 0
    first_seen: float | None = None
    last_seen: float | None = None

    def seen(self, first: float | None, last: float | None) -> None:
        if first is not None:
            self.first_seen = first if self.first_seen is None else min(self.first_seen, first)
        if last is not None:
            self.last_seen = last if self.last_seen is None else max(self.last_seen, last)


# -- shaping the data --------------------------------------------------------------------------


def summarise_hosts(findings: Iterable[Finding], hosts: Iterable[StoredHost]) -> list[HostSummary]:
    """Inventory and findings per host, most severe and busiest first.

    The inventory is what `auditor pcap` recorded; findings add what detectors learnt (and
    stand alone for findings recorded by the proxy, which keeps no inventory): countries from
    cross-border evidence, JA4s from weak-TLS evidence, service naming from the inventory
    detectors, as ``auditor.hosts.HostTable.add_finding`` does.
    """
    rows: dict[str, HostSummary] = {}
    for stored in hosts:
        row = rows[stored.host] = HostSummary(
            host=stored.host,
            service=stored.service,
            category=stored.category,
            jurisdiction=stored.jurisdiction,
            countries=set(stored.countries),
            addresses=set(stored.addresses),
            ports=set(stored.ports),
            ja4=set(stored.ja4),
            connections=stored.connections,
        )
        row.seen(stored.first_seen, stored.last_seen)
    for finding in findings:
        row = rows.setdefault(finding.host, HostSummary(host=finding.host))
        if row.severity is None or finding.severity > row.severity:
            row.severity = finding.severity
        row.findings += 1
        row.sightings += finding.count
        row.kinds.add(finding.kind)
        row.seen(finding.first_seen, finding.last_seen)
        if finding.dst_ip:
            row.addresses.add(finding.dst_ip)
        if finding.dst_port:
            row.ports.add(int(finding.dst_port))
        evidence = finding.evidence
        if evidence.get("ja4"):
            row.ja4.add(str(evidence["ja4"]))
        country = evidence.get("country") if finding.detector == "cross-border" else None
        # The inventory may already know it, possibly marked "(anycast)".
        if country and not any(c.split(" ")[0] == country for c in row.countries):
            row.countries.add(str(country))
        if finding.detector == "ai-service":
            row.service = row.service or str(evidence.get("provider_name") or "")
            row.category = row.category or str(evidence.get("category") or "official")
            row.jurisdiction = row.jurisdiction or str(evidence.get("jurisdiction") or "")
        elif finding.detector == "relay-domain":
            row.service = row.service or str(evidence.get("operator") or "")
            row.category = row.category or str(evidence.get("category") or "relay")
        elif finding.detector == "unofficial-llm-endpoint" and not row.category:
            row.category = "unofficial"
    return sorted(
        rows.values(),
        key=lambda r: (-(int(r.severity) if r.severity is not None else -1), -r.sightings, r.host),
    )


def timeline_buckets(
    findings: Sequence[Finding],
) -> tuple[float, int, list[Counter[Severity]]]:
    """(start, bucket width in seconds, per-bucket counts by severity) of findings' first_seen."""
    if not findings:
        return 0.0, 60, []
    first = min(f.first_seen for f in findings)
    last = max(f.first_seen for f in findings)
    width = next((w for w in BUCKET_WIDTHS if (last - first) / w < MAX_BUCKETS), BUCKET_WIDTHS[-1])
    start = math.floor(first / width) * width
    buckets: list[Counter[Severity]] = [Counter() for _ in range(int((last - start) // width) + 1)]
    for finding in findings:
        buckets[int((finding.first_seen - start) // width)][finding.severity] += 1
    return start, width, buckets


@dataclass
class ClientFingerprint:
    """One client TLS stack (JA4) and where it went."""

    ja4: str
    connections: int = 0
    clients: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    severity: Severity | None = None  # worst finding on a host it reached


def client_fingerprints(
    hosts: Iterable[StoredHost], findings: Iterable[Finding], summaries: Sequence[HostSummary]
) -> list[ClientFingerprint]:
    """JA4s by connections (inventory), plus JA4s only findings' evidence mentions."""
    by_ja4: dict[str, ClientFingerprint] = {}
    for stored in hosts:
        for (client, ja4), connections in stored.clients.items():
            entry = by_ja4.setdefault(ja4, ClientFingerprint(ja4))
            entry.connections += connections
            entry.clients.add(client)
            entry.hosts.add(stored.host)
    for finding in findings:
        ja4 = finding.evidence.get("ja4")
        if ja4:
            entry = by_ja4.setdefault(str(ja4), ClientFingerprint(str(ja4)))
            entry.hosts.add(finding.host)
            if finding.src_ip:
                entry.clients.add(finding.src_ip)
    severity_of = {s.host: s.severity for s in summaries}
    for entry in by_ja4.values():
        worst = [severity_of[h] for h in entry.hosts if severity_of.get(h) is not None]
        entry.severity = max(worst) if worst else None  # type: ignore[type-var]
    return sorted(by_ja4.values(), key=lambda e: (-e.connections, -len(e.hosts), e.ja4))


# -- HTML pieces -------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _as_list(value: Any) -> list[str]:
    """Evidence that should be a list, tolerating a single value or nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple | set):
        return [str(v) for v in value]
    return [str(value)]


def _stamp(ts: float | None) -> str:
    """Date over time, so time columns stay narrow."""
    text = _iso(ts)
    date, _, clock = text.partition(" ")
    return f'{esc(date)}<br><span class="muted">{esc(clock)}</span>' if text else ""


def _badge(severity: Severity | None) -> str:
    if severity is None:
        return '<span class="sev sev-none">none</span>'
    return f'<span class="sev sev-{severity.label}">{severity.label}</span>'


def _joined(values: Iterable[Any], limit: int = 6) -> str:
    """Sorted values, one per line in the cell, the rest counted."""
    items = sorted(str(v) for v in values)
    shown = "<br>".join(esc(v) for v in items[:limit])
    if len(items) > limit:
        shown += f'<br><span class="muted">+{len(items) - limit} more</span>'
    return shown


def _ja4_list(fingerprints: Iterable[str], limit: int) -> str:
    """JA4s that may wrap at their underscores (a_b_c), one per line, the rest counted."""
    items = sorted(fingerprints)
    shown = "<br>".join(esc(ja4).replace("_", "_<wbr>") for ja4 in items[:limit])
    if len(items) > limit:
        shown += f'<br><span class="muted">+{len(items) - limit} more</span>'
    return shown


def _bar_row(label_html: str, value: int, maximum: int, colour: str, note_html: str = "") -> str:
    width = 100.0 * value / maximum if maximum else 0.0
    return (
        '<div class="bar-row">'
        f'<div class="bar-label">{label_html}</div>'
        f'<div class="bar-track"><div class="bar-fill" style="width:{width:.1f}%;'
        f'background:{colour}"></div></div>'
        f'<div class="bar-value">{value}</div>'
        + (f'<div class="bar-note">{note_html}</div>' if note_html else "")
        + "</div>"
    )


def _colour(severity: Severity | None) -> str:
    return SEVERITY_COLOURS[severity] if severity is not None else "#cbd5e1"


def severity_summary_html(findings: Sequence[Finding], summaries: Sequence[HostSummary]) -> str:
    distinct = Counter(f.severity for f in findings)
    sightings = Counter[Severity]()
    for finding in findings:
        sightings[finding.severity] += finding.count
    tiles = []
    for severity in SEVERITIES_HIGH_FIRST:
        tiles.append(
            f'<div class="tile" style="border-top-color:{SEVERITY_COLOURS[severity]}">'
            f'<div class="tile-count" id="count-{severity.label}">{distinct[severity]}</div>'
            f'<div class="tile-label">{severity.label}</div>'
            f'<div class="tile-note">{sightings[severity]} sightings</div></div>'
        )
    hosts_with_findings = sum(1 for s in summaries if s.findings)
    tiles.append(
        '<div class="tile tile-neutral">'
        f'<div class="tile-count">{hosts_with_findings}</div>'
        '<div class="tile-label">hosts with findings</div>'
        f'<div class="tile-note">{len(summaries)} hosts seen</div></div>'
    )
    total = sum(distinct.values())
    segments = "".join(
        f'<div class="stack-seg" style="flex-grow:{distinct[s]};background:{SEVERITY_COLOURS[s]}"'
        f' title="{s.label}: {distinct[s]}"></div>'
        for s in SEVERITIES_HIGH_FIRST
        if distinct[s]
    )
    stack = f'<div class="stack">{segments}</div>' if total else ""
    return f'<div class="tiles">{"".join(tiles)}</div>{stack}'


def timeline_svg(findings: Sequence[Finding]) -> str:
    """Findings by first-seen bucket, stacked by severity, as an inline SVG."""
    start, width, buckets = timeline_buckets(findings)
    if not buckets:
        return '<p class="muted">No findings in this period.</p>'
    chart_w, chart_h, left, bottom, top = 1000, 230, 44, 34, 10
    plot_w, plot_h = chart_w - left - 10, chart_h - bottom - top
    peak = max(sum(b.values()) for b in buckets)
    step = max(1, math.ceil(peak / 4))
    y_max = step * math.ceil(peak / step)
    slot = plot_w / len(buckets)
    bar_w = max(2.0, slot * 0.75)
    parts = [
        f'<svg class="chart" viewBox="0 0 {chart_w} {chart_h}" role="img" '
        'aria-label="Findings over time, stacked by severity">'
    ]
    for tick in range(0, y_max + 1, step):
        y = top + plot_h - plot_h * tick / y_max
        parts.append(
            f'<line x1="{left}" x2="{chart_w - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{tick}</text>'
        )
    label_every = max(1, math.ceil(len(buckets) / 8))
    for index, bucket in enumerate(buckets):
        x = left + index * slot + (slot - bar_w) / 2
        y = top + plot_h
        bucket_start = start + index * width
        for severity in sorted(Severity):  # least severe at the bottom
            n = bucket[severity]
            if not n:
                continue
            h = plot_h * n / y_max
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{SEVERITY_COLOURS[severity]}"><title>{esc(_iso(bucket_start))} UTC: '
                f"{n} {severity.label}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{left + index * slot + slot / 2:.1f}" y="{chart_h - 12}" '
                f'class="axis" text-anchor="middle">{esc(_tick_label(bucket_start, width))}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend-item"><span class="swatch" '
        f'style="background:{SEVERITY_COLOURS[s]}"></span>{s.label}</span>'
        for s in SEVERITIES_HIGH_FIRST
    )
    caption = (
        f'<p class="caption">Distinct findings by the time they were first seen; one bar per '
        f"{esc(_duration(width))} (UTC). {legend}</p>"
    )
    return "".join(parts) + caption


def _tick_label(ts: float, width: int) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    if width < 60:
        return moment.strftime("%H:%M:%S")
    if width < 86400:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{seconds} second{'s' if seconds > 1 else ''}"


def countries_html(summaries: Sequence[HostSummary]) -> str:
    """Destination hosts per country, coloured by the worst finding there."""
    hosts_by_country: dict[str, list[HostSummary]] = defaultdict(list)
    anycast: set[str] = set()
    for summary in summaries:
        codes = {c.split(" ")[0] for c in summary.countries}
        anycast |= {c.split(" ")[0] for c in summary.countries if "anycast" in c}
        for code in codes or {"unknown"}:
            hosts_by_country[code].append(summary)
    if not hosts_by_country:
        return '<p class="muted">No destinations recorded.</p>'
    ranked = sorted(
        hosts_by_country.items(), key=lambda item: (item[0] == "unknown", -len(item[1]), item[0])
    )
    maximum = max(len(h) for h in hosts_by_country.values())
    rows = []
    for code, members in ranked[:TOP_ROWS]:
        worst = max((m.severity for m in members if m.severity is not None), default=None)
        label = esc(code) + (' <span class="muted">(anycast)</span>' if code in anycast else "")
        if code == "unknown":
            label = '<span class="muted">unknown</span>'
        names = ", ".join(esc(m.host) for m in sorted(members, key=lambda m: m.host)[:4])
        if len(members) > 4:
            names += f", +{len(members) - 4}"
        rows.append(_bar_row(label, len(members), maximum, _colour(worst), names))
    return (
        '<div class="bars">' + "".join(rows) + "</div>"
        '<p class="caption">Hosts per destination country (registered country of the address; '
        "anycast: only where the nearest edge answered; unknown: private, reserved or not in "
        "the GeoIP data). Bar colour: worst finding there.</p>"
    )


def services_html(findings: Sequence[Finding]) -> str:
    """Providers, relays and unofficial endpoints, from the detectors that name them."""
    services: dict[str, dict[str, Any]] = {}
    for finding in findings:
        evidence = finding.evidence
        if finding.detector == "ai-service":
            name = evidence.get("provider_name") or evidence.get("provider") or finding.host
            category = evidence.get("category") or "official"
            detail = evidence.get("jurisdiction") or ""
        elif finding.detector == "relay-domain":
            name = evidence.get("operator") or evidence.get("relay_domain") or finding.host
            category = evidence.get("category") or "relay"
            detail = evidence.get("confidence") or ""
        elif finding.detector == "unofficial-llm-endpoint":
            name = f"{evidence.get('family') or 'LLM'} API at an unofficial host"
            category = "unofficial"
            detail = ""
        else:
            continue
        entry = services.setdefault(
            finding.host,
            {"name": name, "category": category, "detail": detail, "sightings": 0,
             "severity": finding.severity},
        )
        entry["sightings"] += finding.count
        entry["severity"] = max(entry["severity"], finding.severity)
    if not services:
        return '<p class="muted">No AI providers or relays seen.</p>'
    ranked = sorted(
        services.items(), key=lambda item: (-int(item[1]["severity"]), -item[1]["sightings"])
    )
    rows = []
    for host, entry in ranked:
        category = str(entry["category"])
        kind_class = "official" if category == "official" else "relay"
        rows.append(
            "<tr>"
            f'<td>{_badge(entry["severity"])}</td>'
            f'<td><div class="strong">{esc(entry["name"])}</div>'
            f'<div class="mono muted">{esc(host)}</div></td>'
            f'<td><span class="pill pill-{kind_class}">{esc(category)}</span>'
            f'{" " + esc(entry["detail"]) if entry["detail"] else ""}</td>'
            f'<td class="num">{entry["sightings"]}</td>'
            "</tr>"
        )
    return (
        '<table class="compact"><thead><tr><th>worst</th><th>service</th>'
        "<th>category</th><th>sightings</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        '<p class="caption">From the ai-service, relay-domain and unofficial-llm-endpoint '
        "findings. Jurisdiction shown for official providers, confidence for relays.</p>"
    )


def weak_tls_html(findings: Sequence[Finding], hosts: Sequence[StoredHost]) -> str:
    """TLS versions in use, then weak protocols, ciphers, certificates and client hellos."""
    weak_versions = {
        str(f.evidence.get("version"))
        for f in findings
        if f.kind == _TLS_PROTOCOL_KIND and f.evidence.get("version")
    }
    version_hosts: dict[str, set[str]] = defaultdict(set)
    for stored in hosts:
        for version in stored.tls_versions:
            version_hosts[version].add(stored.host)
    parts = []
    if version_hosts:
        maximum = max(len(v) for v in version_hosts.values())
        rows = [
            _bar_row(
                esc(version),
                len(members),
                maximum,
                SEVERITY_COLOURS[Severity.HIGH] if version in weak_versions else "#0f766e",
                "below policy minimum" if version in weak_versions else "",
            )
            for version, members in sorted(version_hosts.items(), reverse=True)
        ]
        parts.append(
            '<h3>Negotiated TLS versions <span class="muted">(hosts)</span></h3>'
            f'<div class="bars">{"".join(rows)}</div>'
        )
    groups: dict[str, list[tuple[Severity, str, str]]] = defaultdict(list)
    for finding in findings:
        if finding.detector != "weak-tls":
            continue
        evidence = finding.evidence
        if finding.kind == _TLS_PROTOCOL_KIND:
            group, what = "Protocol", str(evidence.get("version") or finding.title)
        elif finding.kind == _TLS_CIPHER_KIND:
            weaknesses = ", ".join(_as_list(evidence.get("weaknesses")))
            what = str(evidence.get("cipher") or finding.title)
            what += f" ({weaknesses})" if weaknesses else ""
            group = "Cipher suites"
        elif finding.kind in _TLS_CLIENT_KINDS:
            group, what = "Client hellos", finding.kind.removeprefix("weak-tls.")
        else:
            problem = finding.kind.removeprefix("weak-tls.")
            subject = evidence.get("subject") or ""
            group, what = "Certificates", f"{problem}" + (f": {subject}" if subject else "")
        groups[group].append((finding.severity, what, finding.host))
    if not groups and not parts:
        return '<p class="muted">No TLS seen.</p>'
    if not groups:
        parts.append('<p class="muted">No weak TLS findings.</p>')
    for group in ("Protocol", "Cipher suites", "Certificates", "Client hellos"):
        items = sorted(groups.get(group, []), key=lambda item: (-int(item[0]), item[1], item[2]))
        if not items:
            continue
        rows = "".join(
            f"<li>{_badge(sev)} <span class=\"mono\">{esc(what)}</span> "
            f'<span class="muted">on</span> {esc(host)}</li>'
            for sev, what, host in items
        )
        parts.append(f'<h3>{group}</h3><ul class="plain">{rows}</ul>')
    return "".join(parts)


def clients_html(fingerprints: Sequence[ClientFingerprint]) -> str:
    if not fingerprints:
        return '<p class="muted">No TLS client fingerprints recorded.</p>'
    maximum = max(max(f.connections for f in fingerprints), 1)
    rows = []
    for entry in fingerprints[:TOP_ROWS]:
        width = 100.0 * entry.connections / maximum
        rows.append(
            "<tr>"
            f'<td class="mono">{_ja4_list([entry.ja4], 1)}</td>'
            f'<td class="num"><div class="inline-bar"><div class="bar-fill" style="width:'
            f'{width:.1f}%;background:{_colour(entry.severity)}"></div></div>'
            f"{entry.connections}</td>"
            f'<td class="nowrap">{_joined(entry.clients, 3)}</td>'
            f"<td>{_joined(entry.hosts, 3)}</td>"
            f"<td>{_badge(entry.severity)}</td>"
            "</tr>"
        )
    return (
        '<table class="compact"><thead><tr><th>JA4</th><th>connections</th><th>clients</th>'
        "<th>hosts reached</th><th>worst host</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        '<p class="caption">Client TLS stacks by their JA4 fingerprint; bar colour: the worst '
        "finding on a host the fingerprint reached.</p>"
    )


def hosts_table_html(summaries: Sequence[HostSummary]) -> str:
    columns = [
        ("host", "Host", "text"),
        ("severity", "Max severity", "number"),
        ("findings", "Findings", "number"),
        ("kinds", "Kinds", "text"),
        ("service", "Service / category", "text"),
        ("jurisdiction", "Juris&shy;diction", "text"),
        ("countries", "Countries", "text"),
        ("addresses", "Ports / addresses", "text"),
        ("ja4", "JA4", "text"),
        ("first_seen", "First seen (UTC)", "number"),
        ("last_seen", "Last seen (UTC)", "number"),
    ]
    head = "".join(
        f'<th data-key="{key}" data-type="{kind}" scope="col">{label}</th>'
        for key, label, kind in columns
    )
    rows = []
    for s in summaries:
        rank = int(s.severity) if s.severity is not None else -1
        service = esc(s.service)
        if s.category:
            service += f'<br><span class="muted">{esc(s.category)}</span>'
        ports = ", ".join(str(p) for p in sorted(s.ports))
        rows.append(
            "<tr>"
            f'<td class="mono strong host">{esc(s.host)}</td>'
            f'<td data-sort="{rank}">{_badge(s.severity)}</td>'
            f'<td class="num" data-sort="{s.findings}">{s.findings}'
            f'<span class="muted"> / {s.sightings}</span></td>'
            f'<td class="small kinds">{_joined(s.kinds)}</td>'
            f"<td>{service}</td>"
            f"<td>{esc(s.jurisdiction)}</td>"
            f"<td>{_joined(s.countries)}</td>"
            f'<td class="nowrap"><span class="strong">{esc(ports)}</span><br>'
            f"{_joined(s.addresses, 3)}</td>"
            f'<td class="mono small">{_ja4_list(s.ja4, 2)}</td>'
            f'<td data-sort="{s.first_seen or 0}" class="nowrap">{_stamp(s.first_seen)}</td>'
            f'<td data-sort="{s.last_seen or 0}" class="nowrap">{_stamp(s.last_seen)}</td>'
            "</tr>"
        )
    if not rows:
        return '<p class="muted">No hosts recorded.</p>'
    return (
        '<p class="caption">Click a column header to sort (again to reverse). Findings: distinct '
        "findings / sightings.</p>"
        f'<div class="scroll"><table id="hosts" class="sortable"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


def _evidence_html(evidence: dict[str, Any]) -> str:
    items = []
    for key in sorted(evidence):
        value = evidence[key]
        if isinstance(value, list) and len(value) > MAX_EVIDENCE_LIST_ITEMS:
            extra = len(value) - MAX_EVIDENCE_LIST_ITEMS
            value = [*value[:MAX_EVIDENCE_LIST_ITEMS], f"… {extra} more"]
        if isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False, default=str)
        else:
            text = "" if value is None else str(value)
        items.append(f"<dt>{esc(key)}</dt><dd>{esc(text)}</dd>")
    return f'<dl class="evidence">{"".join(items)}</dl>'


def findings_table_html(findings: Sequence[Finding]) -> str:
    if not findings:
        return '<p class="muted">No findings in this period.</p>'
    listed = findings[:MAX_FINDINGS_LISTED]
    head = "".join(
        f'<th data-key="{key}" data-type="{kind}" scope="col">{label}</th>'
        for key, label, kind in (
            ("severity", "Severity", "number"),
            ("host", "Host", "text"),
            ("kind", "Kind", "text"),
            ("title", "Title and evidence", "text"),
            ("count", "Count", "number"),
            ("last_seen", "Last seen (UTC)", "number"),
        )
    )
    rows = []
    for f in listed:
        rows.append(
            "<tr>"
            f'<td data-sort="{int(f.severity)}">{_badge(f.severity)}</td>'
            f'<td class="mono">{esc(f.host)}</td>'
            f'<td class="mono small">{esc(f.kind)}</td>'
            f"<td><details><summary>{esc(f.title)}</summary>"
            f"{_evidence_html(f.evidence)}</details></td>"
            f'<td class="num" data-sort="{f.count}">{f.count}</td>'
            f'<td class="nowrap" data-sort="{f.last_seen}">{_stamp(f.last_seen)}</td>'
            "</tr>"
        )
    note = ""
    if len(findings) > len(listed):
        note = (
            f'<p class="caption">Showing the {len(listed)} most severe and recent of '
            f"{len(findings)} findings; narrow with --since.</p>"
        )
    return (
        '<p class="caption">Evidence is shown as stored: keys and prompts are already redacted. '
        "Click a title to see it.</p>"
        f'{note}<div class="scroll"><table id="findings" class="sortable"><thead><tr>{head}'
        f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


# -- the page ----------------------------------------------------------------------------------

STYLE = """
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --card:#fff; --bg:#f1f5f9; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:#0f172a; color:#f8fafc; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:650; letter-spacing:-.01em; }
header .meta { color:#cbd5e1; font-size:13px; }
main { max-width:1360px; margin:0 auto; padding:20px 24px 40px; }
section.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
  padding:16px 20px; margin:0 0 18px; box-shadow:0 1px 2px rgba(15,23,42,.05); }
section.card h2 { margin:0 0 10px; font-size:16px; font-weight:650; }
h3 { margin:14px 0 6px; font-size:13px; font-weight:650; color:#334155; }
.grid { display:grid; grid-template-columns:1fr 1fr; gap:18px; margin-bottom:18px; }
.grid > section.card { margin:0; }
.tiles { display:grid; grid-template-columns:repeat(6,1fr); gap:12px; }
.tile { border:1px solid var(--line); border-top:5px solid; border-radius:8px; padding:10px 14px; }
.tile-neutral { border-top-color:#0f172a; }
.tile-count { font-size:30px; font-weight:700; line-height:1.1; }
.tile-label { text-transform:uppercase; font-size:12px; letter-spacing:.06em; font-weight:600; }
.tile-note, .muted, .caption { color:var(--muted); }
.caption { font-size:12px; margin:8px 0 0; }
.stack { display:flex; height:12px; border-radius:6px; overflow:hidden; margin-top:14px; }
.stack-seg { min-width:3px; }
.chart { width:100%; height:auto; display:block; }
.chart .grid { stroke:#e2e8f0; stroke-width:1; }
.chart .axis { fill:#64748b; font-size:12px; }
.legend-item { margin-left:12px; white-space:nowrap; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; }
.bars { display:flex; flex-direction:column; gap:6px; }
.bar-row { display:grid; grid-template-columns:130px 1fr 40px; align-items:center; gap:8px; }
.bar-label { font-weight:600; overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.bar-track { background:#f1f5f9; border-radius:4px; height:14px; overflow:hidden; }
.bar-fill { height:100%; border-radius:4px; }
.bar-value { text-align:right; font-variant-numeric:tabular-nums; }
.bar-note { grid-column:2 / 4; color:var(--muted); font-size:12px; margin-top:-4px;
  overflow-wrap:anywhere; }
.inline-bar { display:inline-block; width:60px; height:8px; background:#f1f5f9;
  border-radius:4px; overflow:hidden; margin-right:6px; vertical-align:middle; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; vertical-align:top; padding:6px 8px;
  border-bottom:1px solid var(--line); }
th { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:#475569;
  background:#f8fafc; position:sticky; top:0; }
table.sortable th { cursor:pointer; user-select:none; }
table.sortable th:hover { background:#e2e8f0; }
th[aria-sort="ascending"]::after { content:" \\25B2"; font-size:9px; }
th[aria-sort="descending"]::after { content:" \\25BC"; font-size:9px; }
td { overflow-wrap:break-word; }
td.host { min-width:150px; } td.kinds { min-width:165px; }
#findings td:nth-child(2) { min-width:190px; } #findings td:nth-child(3) { min-width:170px; }
tbody tr:hover { background:#f8fafc; }
.compact td, .compact th { padding:5px 6px; }
.scroll { overflow-x:auto; }
.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
.nowrap { white-space:nowrap; }
.mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
.small { font-size:11px; }
.strong { font-weight:600; }
.sev { display:inline-block; white-space:nowrap; min-width:62px; text-align:center;
  border-radius:999px; padding:1px 8px; font-size:11px; font-weight:700;
  text-transform:uppercase; color:#fff; }
.sev-critical { background:#9f1239; } .sev-high { background:#ea580c; }
.sev-medium { background:#d9a406; color:#1c1917; } .sev-low { background:#2563eb; }
.sev-info { background:#94a3b8; color:#0f172a; } .sev-none { background:#e2e8f0; color:#475569; }
.pill { display:inline-block; border-radius:4px; padding:0 6px; font-size:12px; font-weight:600; }
.pill-official { background:#dcfce7; color:#166534; }
.pill-relay { background:#ffedd5; color:#9a3412; }
ul.plain { list-style:none; padding:0; margin:0; }
ul.plain li { padding:3px 0; border-bottom:1px dashed var(--line); overflow-wrap:anywhere; }
details summary { cursor:pointer; }
dl.evidence { display:grid; grid-template-columns:max-content 1fr; gap:2px 10px;
  margin:6px 0 2px; font-size:12px; }
dl.evidence dt { color:var(--muted); }
dl.evidence dd { margin:0; font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
  overflow-wrap:anywhere; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 0 24px; }
@media (max-width: 900px) { .grid { grid-template-columns:1fr; }
  .tiles { grid-template-columns:repeat(3,1fr); } }
@media print { body { background:#fff; } section.card { break-inside:avoid; box-shadow:none; }
  th { position:static; } }
"""

# Sorts every table.sortable by a clicked header: a cell's data-sort wins over its text, numeric
# columns (data-type="number") compare as numbers and start descending. "#sort=TABLE:KEY:DIR"
# in the URL sorts on load (used by the tests and handy for links). No traffic data in here.
SCRIPT = """
(function () {
  "use strict";
  function cellKey(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var key = cell.getAttribute("data-sort");
    return key !== null ? key : cell.textContent.trim().toLowerCase();
  }
  function sortTable(table, index, descending) {
    var header = table.tHead.rows[0].cells[index];
    var numeric = header.getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a, index), y = cellKey(b, index);
      var order = numeric ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  function onHeader(table, th, index) {
    var current = th.getAttribute("aria-sort");
    var descending = current ? current === "ascending"
                             : th.getAttribute("data-type") === "number";
    sortTable(table, index, descending);
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { onHeader(table, th, index); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onHeader(table, th, index);
        }
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
  var wanted = /^#sort=([A-Za-z0-9_-]+):([A-Za-z0-9_-]+):(asc|desc)$/.exec(location.hash);
  if (wanted) {
    var table = document.getElementById(wanted[1]);
    if (table && table.tHead) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
        if (th.getAttribute("data-key") === wanted[2]) {
          sortTable(table, index, wanted[3] === "desc");
        }
      });
    }
  }
  document.documentElement.setAttribute("data-report-ready", "1");
})();
"""


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def render_report(data: ReportInput) -> str:
    """The whole report page as one string."""
    findings = list(data.findings)
    summaries = summarise_hosts(findings, data.hosts)
    fingerprints = client_fingerprints(data.hosts, findings, summaries)
    # No network at all; only this report's own script (by hash) and inline styles.
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src '{_script_hash(SCRIPT)}'; base-uri 'none'; form-action 'none'"
    )
    period = f"since {_iso(data.since)} UTC" if data.since is not None else "everything stored"
    span = ""
    if findings:
        first = min(f.first_seen for f in findings)
        last = max(f.last_seen for f in findings)
        span = f" · activity {_iso(first)} – {_iso(last)} UTC"
    meta = (
        f"Generated {esc(_iso(data.generated_at))} UTC · {esc(period)}{esc(span)} · "
        f"{len(findings)} findings on {sum(1 for s in summaries if s.findings)} hosts"
        + (f" · store {esc(data.source)}" if data.source else "")
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">
<meta name="referrer" content="no-referrer">
<title>{esc(data.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{esc(data.title)}</h1><div class="meta">{meta}</div></header>
<main>
<section class="card" id="severity"><h2>Findings by severity</h2>
{severity_summary_html(findings, summaries)}</section>
<section class="card" id="timeline"><h2>Findings over time</h2>{timeline_svg(findings)}</section>
<div class="grid">
<section class="card" id="countries"><h2>Destinations by country</h2>
{countries_html(summaries)}</section>
<section class="card" id="services"><h2>AI providers and relays used</h2>
{services_html(findings)}</section>
<section class="card" id="weak-tls"><h2>Weak TLS seen</h2>
{weak_tls_html(findings, data.hosts)}</section>
<section class="card" id="clients"><h2>Top clients by JA4</h2>{clients_html(fingerprints)}</section>
</div>
<section class="card" id="host-table"><h2>Hosts</h2>{hosts_table_html(summaries)}</section>
<section class="card" id="findings-list"><h2>Findings</h2>{findings_table_html(findings)}</section>
</main>
<footer>AI Egress Auditor · self-contained report: opens offline, loads nothing.</footer>
<script>{SCRIPT}</script>
</body>
</html>
"""
