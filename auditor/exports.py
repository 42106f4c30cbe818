"""Signature exports: the relay and provider domains as intel/blocklists for other tools.

    signatures/ (load_signatures) -> **exports** -> Zeek Intel, Suricata rules, DNS RPZ,
                                                  hosts file, STIX 2.1 bundle

``auditor signatures export --format F --what relays|providers|all`` writes one of:

- ``zeek-intel``: an Intel framework file (``Intel::DOMAIN``). Zeek matches DOMAIN indicators
  against the exact names it sees (DNS queries, HTTP Host, TLS SNI, certificates, with
  ``policy/frameworks/intel/seen`` loaded), never against subdomains: a ``suffix`` entry is
  exported as its apex name only, and the header says how many such entries would need a
  suffix-matching script (or the Suricata export) to catch their subdomains.
- ``suricata``: three rules per domain, on ``tls.sni``, ``dns.query`` and ``http.host``. A
  ``suffix`` entry uses ``dotprefix`` + ``content:".domain"; endswith`` (matches the domain and
  every subdomain, not ``evil-domain``); an ``exact`` entry uses ``startswith; endswith``.
- ``rpz``: a Response Policy Zone answering NXDOMAIN (``CNAME .``): ``domain`` and, for suffix
  entries, ``*.domain``.
- ``hosts``: ``0.0.0.0 domain`` lines; a hosts file has no wildcards, so suffix entries block
  only the listed name.

Relays listed by IP address become ``Intel::ADDR``, an ``alert ip`` rule, an RPZ ``rpz-ip``
trigger and an ``ipv4-addr``/``ipv6-addr`` pattern; the hosts file leaves them out.
- ``stix2``: a STIX 2.1 bundle of ``indicator`` objects (``domain-name:value``, with a ``LIKE
  '%.domain'`` alternative for suffix entries) created by one ``identity``; ids are UUIDv5 of
  the domain, so re-exports update rather than duplicate.

Entries matched by regex cannot be written as a domain in these formats: they are left out and
counted in the export's header (or the STIX bundle's description).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from auditor.signatures import Signatures

EXPORT_FORMATS = ("zeek-intel", "suricata", "rpz", "hosts", "stix2")
EXPORT_SELECTIONS = ("relays", "providers", "all")

# Local-use signature ids (1000000-1999999 is the local range): each entry gets three
# consecutive sids in 1600000-1899999 from a hash of its domain, so they stay stable when
# other entries are added or removed (a hash clash moves to the next free slot).
SURICATA_SID_BASE = 1_600_000
SURICATA_SID_SLOTS = 100_000
_STIX_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ai-egress-auditor:stix")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")


@dataclass(frozen=True, slots=True)
class ExportEntry:
    domain: str
    suffix: bool  # the domain and all its subdomains
    list_name: str  # "relays" | "providers"
    label: str  # category (relays) or provider kind (providers)
    operator: str
    source: str

    @property
    def address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The entry as an IP address when it is one (some relays are listed by address)."""
        try:
            return ipaddress.ip_address(self.domain)
        except ValueError:
            return None

    @property
    def description(self) -> str:
        scope = "and subdomains" if self.suffix else "exact name"
        return f"{self.list_name[:-1]} {self.label}: {self.operator or '?'} ({scope})"


def export_entries(sigs: Signatures, what: str) -> tuple[list[ExportEntry], int]:
    """(exportable entries sorted by domain, number of regex entries left out)."""
    entries: list[ExportEntry] = []
    skipped = 0
    if what in ("relays", "all"):
        for relay in sigs.relays:
            if relay.rule.match == "regex" or not _DOMAIN.match(relay.domain):
                skipped += 1
                continue
            entries.append(
                ExportEntry(relay.domain, relay.rule.match == "suffix", "relays",
                            f"{relay.category}/{relay.confidence}", relay.operator, relay.source)
            )
    if what in ("providers", "all"):
        for provider in sigs.providers:
            if provider.rule.match == "regex" or not _DOMAIN.match(provider.domain):
                skipped += 1
                continue
            entries.append(
                ExportEntry(provider.domain, provider.rule.match == "suffix", "providers",
                            f"{provider.provider}/{provider.kind}", provider.operator,
                            provider.source)
            )
    # One entry per (domain, list): a suffix rule covers an exact one for the same domain.
    unique: dict[tuple[str, str], ExportEntry] = {}
    for entry in entries:
        key = (entry.domain, entry.list_name)
        if key not in unique or (entry.suffix and not unique[key].suffix):
            unique[key] = entry
    return sorted(unique.values(), key=lambda e: (e.domain, e.list_name)), skipped


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _header(lines: list[str], comment: str) -> str:
    return "".join(f"{comment} {line}\n" if line else f"{comment}\n" for line in lines)


def _summary(what: str, entries: list[ExportEntry], skipped: int) -> list[str]:
    suffixes = sum(e.suffix for e in entries)
    return [
        f"AI Egress Auditor signatures export: {what}",
        f"{len(entries)} domains ({suffixes} with subdomains), {skipped} regex entries left out",
    ]


def to_zeek_intel(entries: list[ExportEntry], what: str, skipped: int) -> str:
    suffixes = sum(e.suffix for e in entries)
    header = _header(
        [
            *_summary(what, entries, skipped),
            "Intel::DOMAIN matches exact names only: the "
            f"{suffixes} suffix entries here match their apex, not their subdomains.",
            "Load with: redef Intel::read_files += { \"<this file>\" }; "
            "@load policy/frameworks/intel/seen",
        ],
        "#",
    )
    rows = ["#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc"]
    for entry in entries:
        desc = _one_line(f"{entry.description}; source: {entry.source}").replace("\t", " ")
        kind = "Intel::ADDR" if entry.address else "Intel::DOMAIN"
        rows.append(f"{entry.domain}\t{kind}\tai-egress-auditor:{entry.list_name}\t{desc}")
    return header + "\n".join(rows) + "\n"


def _suricata_content(entry: ExportEntry) -> str:
    if entry.suffix:
        return f'dotprefix; content:".{entry.domain}"; endswith;'
    return f'content:"{entry.domain}"; startswith; endswith;'


def suricata_sids(entries: list[ExportEntry]) -> list[int]:
    """First sid of each entry (three consecutive per entry), stable across exports."""
    taken: set[int] = set()
    sids = []
    for entry in entries:
        digest = hashlib.sha256(f"{entry.list_name}:{entry.domain}".encode()).digest()
        slot = int.from_bytes(digest[:8], "big") % SURICATA_SID_SLOTS
        while slot in taken:
            slot = (slot + 1) % SURICATA_SID_SLOTS
        taken.add(slot)
        sids.append(SURICATA_SID_BASE + 3 * slot)
    return sids


def to_suricata(entries: list[ExportEntry], what: str, skipped: int) -> str:
    lines = [_header(_summary(what, entries, skipped), "#").rstrip("\n")]
    for entry, sid in zip(entries, suricata_sids(entries), strict=True):
        message = _one_line(entry.description).replace('"', "'").replace(";", ",")
        metadata = f"metadata: list {entry.list_name}, domain {entry.domain};"
        match = _suricata_content(entry)
        if entry.address:  # listed by address: one IP rule (sids stay three per entry)
            lines.append(
                f'alert ip any any -> {entry.domain} any (msg:"AI egress {message} IP '
                f'{entry.domain}"; {metadata} sid:{sid}; rev:1;)'
            )
            continue
        # http.host is normalised to lower case by Suricata (and rejects nocase).
        lines.append(
            f'alert tls any any -> any any (msg:"AI egress {message} TLS SNI {entry.domain}"; '
            f"flow:established,to_server; tls.sni; {match} nocase; {metadata} "
            f"sid:{sid}; rev:1;)"
        )
        lines.append(
            f'alert dns any any -> any any (msg:"AI egress {message} DNS {entry.domain}"; '
            f"dns.query; {match} nocase; {metadata} sid:{sid + 1}; rev:1;)"
        )
        lines.append(
            f'alert http any any -> any any (msg:"AI egress {message} HTTP {entry.domain}"; '
            f"flow:established,to_server; http.host; {match} {metadata} "
            f"sid:{sid + 2}; rev:1;)"
        )
    return "\n".join(lines) + "\n"


def _rpz_ip_owner(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """RPZ response-IP trigger: prefix length, then the address reversed (v6 by 16-bit group)."""
    if address.version == 4:
        return "32." + ".".join(reversed(str(address).split("."))) + ".rpz-ip"
    groups = [g.lstrip("0") or "0" for g in address.exploded.split(":")]
    return "128." + ".".join(reversed(groups)) + ".rpz-ip"


def to_rpz(entries: list[ExportEntry], what: str, skipped: int, now: float) -> str:
    serial = int(now)  # seconds since the epoch: grows with every export, fits 32 bits
    lines = [
        _header(_summary(what, entries, skipped), ";").rstrip("\n"),
        "$TTL 300",
        f"@ IN SOA localhost. hostmaster.localhost. ({serial} 3600 600 86400 300)",
        "@ IN NS localhost.",
    ]
    for entry in entries:
        if entry.address:
            lines.append(f"{_rpz_ip_owner(entry.address)} CNAME .")
            continue
        lines.append(f"{entry.domain} CNAME .")
        if entry.suffix:
            lines.append(f"*.{entry.domain} CNAME .")
    return "\n".join(lines) + "\n"


def to_hosts(entries: list[ExportEntry], what: str, skipped: int) -> str:
    header = _header(
        [*_summary(what, entries, skipped),
         "hosts files have no wildcards: subdomains of suffix entries are not blocked."],
        "#",
    )
    names = sorted({e.domain for e in entries if e.address is None})  # hosts maps names only
    return header + "".join(f"0.0.0.0 {name}\n" for name in names)


def _stix_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def to_stix2(entries: list[ExportEntry], what: str, skipped: int, now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    identity_id = f"identity--{uuid.uuid5(_STIX_NAMESPACE, 'ai-egress-auditor')}"
    objects: list[dict[str, object]] = [
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": identity_id,
            "created": "2026-01-01T00:00:00.000Z",
            "modified": "2026-01-01T00:00:00.000Z",
            "name": "AI Egress Auditor",
            "identity_class": "system",
        }
    ]
    for entry in entries:
        value = _stix_string(entry.domain)
        indicator_name = f"{entry.list_name}:{entry.domain}"
        pattern = f"[domain-name:value = '{value}']"
        if entry.address:
            pattern = f"[ipv{entry.address.version}-addr:value = '{value}']"
        elif entry.suffix:
            pattern = f"[domain-name:value = '{value}' OR domain-name:value LIKE '%.{value}']"
        objects.append(
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": f"indicator--{uuid.uuid5(_STIX_NAMESPACE, indicator_name)}",
                "created_by_ref": identity_id,
                "created": stamp,
                "modified": stamp,
                "name": f"AI egress {entry.list_name[:-1]}: {entry.domain}",
                "description": _one_line(f"{entry.description}. Source: {entry.source}"),
                "indicator_types": ["anomalous-activity"],
                "pattern": pattern,
                "pattern_type": "stix",
                "valid_from": stamp,
                "labels": [entry.list_name, entry.label],
            }
        )
    bundle = {
        "type": "bundle",
        "id": f"bundle--{uuid.uuid4()}",
        "objects": objects,
    }
    return json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"


def export_signatures(sigs: Signatures, fmt: str, what: str = "relays",
                      now: float | None = None) -> str:
    """The export text. ``fmt`` in ``EXPORT_FORMATS``, ``what`` in ``EXPORT_SELECTIONS``."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if what not in EXPORT_SELECTIONS:
        raise ValueError(f"unknown selection {what!r}; use one of {', '.join(EXPORT_SELECTIONS)}")
    now = time.time() if now is None else now
    entries, skipped = export_entries(sigs, what)
    writers: dict[str, Callable[[], str]] = {
        "zeek-intel": lambda: to_zeek_intel(entries, what, skipped),
        "suricata": lambda: to_suricata(entries, what, skipped),
        "rpz": lambda: to_rpz(entries, what, skipped, now),
        "hosts": lambda: to_hosts(entries, what, skipped),
        "stix2": lambda: to_stix2(entries, what, skipped, now),
    }
    return writers[fmt]()
