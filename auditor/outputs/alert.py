"""What every SOC output format renders: one alert about one finding.

    findings -> store/outbox -> **Alert** -> format (ecs, ocsf, cef, leef, jsonl) -> sink

An ``Alert`` is a finding plus whether this is the first alert about it (OCSF "Create") or a
later one (repeat after the alert window, or a severity raise: OCSF "Update"). The format
modules read it and nothing else; they never detect. ``network_facts`` pulls the TLS and HTTP
facts detectors commonly put in evidence, so each format can fill its own TLS/HTTP fields.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from auditor.model import Finding

PRODUCT_VENDOR = "AI Egress Auditor"
PRODUCT_NAME = "ai-egress-auditor"


@functools.cache
def product_version() -> str:
    """The installed package's version (looked up once: it scans sys.path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-egress-auditor")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True, slots=True)
class Alert:
    finding: Finding
    is_new: bool = True

    @property
    def uid(self) -> str:
        """Stable id of the finding (not of this alert): the same across repeats and restarts."""
        return finding_uid(self.finding)


def finding_uid(finding: Finding) -> str:
    """32 hex digits of SHA-256 over the finding key, so SIEMs can correlate repeats."""
    joined = "\x1f".join(finding.key)
    return hashlib.sha256(joined.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def iso8601(ts: float) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-24T05:30:00.123Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def epoch_ms(ts: float) -> int:
    return round(ts * 1000)


def is_ip_address(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class NetworkFacts:
    """TLS and HTTP facts found in a finding's evidence (None when the evidence has none)."""

    tls_protocol: str | None = None  # "tls" | "ssl"
    tls_version: str | None = None  # "1.2"
    cipher: str | None = None
    server_name: str | None = None
    ja4: str | None = None
    ja3: str | None = None
    http_method: str | None = None
    http_path: str | None = None
    http_version: str | None = None
    url: str | None = None
    user_agent: str | None = None

    @property
    def has_tls(self) -> bool:
        return any((self.tls_version, self.cipher, self.server_name, self.ja4, self.ja3))

    @property
    def has_http(self) -> bool:
        return any((self.http_method, self.http_path, self.url))


_VERSION_TEXT = re.compile(r"\b(SSL|TLS)\s*v?(\d)(?:\.(\d))?\b", re.IGNORECASE)

# Evidence keys detectors use for each fact, first present wins.
_EVIDENCE_KEYS: dict[str, tuple[str, ...]] = {
    "version": ("tls_version", "negotiated_version", "version", "max_version"),
    "cipher": ("cipher_suite", "cipher", "negotiated_cipher"),
    "server_name": ("sni", "server_name", "tls_server_name"),
    "ja4": ("ja4",),
    "ja3": ("ja3_hash", "ja3"),
    "http_method": ("http_method", "method"),
    "http_path": ("http_path", "path"),
    "http_version": ("http_version",),
    "url": ("url",),
    "user_agent": ("user_agent",),
}


def _first(evidence: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = evidence.get(name)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
            return str(value)
    return None


def network_facts(evidence: dict[str, Any]) -> NetworkFacts:
    version_text = _first(evidence, _EVIDENCE_KEYS["version"])
    protocol = version = None
    if version_text:
        match = _VERSION_TEXT.search(version_text)
        if match:
            protocol = match.group(1).lower()
            version = f"{match.group(2)}.{match.group(3) or 0}"
    return NetworkFacts(
        tls_protocol=protocol,
        tls_version=version,
        cipher=_first(evidence, _EVIDENCE_KEYS["cipher"]),
        server_name=_first(evidence, _EVIDENCE_KEYS["server_name"]),
        ja4=_first(evidence, _EVIDENCE_KEYS["ja4"]),
        ja3=_first(evidence, _EVIDENCE_KEYS["ja3"]),
        http_method=_first(evidence, _EVIDENCE_KEYS["http_method"]),
        http_path=_first(evidence, _EVIDENCE_KEYS["http_path"]),
        http_version=_first(evidence, _EVIDENCE_KEYS["http_version"]),
        url=_first(evidence, _EVIDENCE_KEYS["url"]),
        user_agent=_first(evidence, _EVIDENCE_KEYS["user_agent"]),
    )
