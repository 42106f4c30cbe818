"""Observation and finding types: the vocabulary every stage of the pipeline shares.

    traffic -> source -> observations -> detectors -> findings -> per-host table -> outputs

Sources (``auditor.capture`` for pcap files, ``addons/`` for mitmproxy) build the observation
types below and nothing else; detectors (``auditor.detectors``) read them and return
``Finding``s; outputs read findings and connections. No type here knows where it came from:
``Observation.origin`` is informational (shown in evidence), never a reason to decide anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """Finding severity, ordered so that ``max()`` and ``>=`` mean what they say."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str | Severity) -> Severity:
        if isinstance(text, Severity):
            return text
        try:
            return cls[str(text).strip().upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown severity {text!r}; expected one of: {names}") from None

    @property
    def label(self) -> str:
        return SEVERITY_LABELS[self]  # indexed by value: an Enum member hashes by its name


# Severity.label by value: written for every finding and host row.
SEVERITY_LABELS = tuple(s.name.lower() for s in Severity)


@dataclass(frozen=True, slots=True)
class FlowTuple:
    """The 5-tuple of a connection, oriented client -> server."""

    transport: str  # "tcp" | "udp"
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int

    def reversed(self) -> FlowTuple:
        return FlowTuple(self.transport, self.dst_ip, self.dst_port, self.src_ip, self.src_port)


@dataclass(slots=True, kw_only=True)
class Observation:
    """Something a source saw on one flow at one time.

    ``server_name`` is the best name known for the destination (SNI, HTTP Host, or a DNS answer
    for ``flow.dst_ip`` seen earlier); the pipeline fills it from DNS when the source had none.
    """

    flow: FlowTuple
    ts: float
    server_name: str | None = None
    origin: str = ""  # e.g. "pcap:capture.pcap" or "proxy"; informational only

    @property
    def host(self) -> str:
        """The key findings are filed under: the destination's name, else its address."""
        return self.server_name or self.flow.dst_ip


# --- TLS -------------------------------------------------------------------------------------


@dataclass(slots=True)
class ClientHello:
    """A parsed TLS ClientHello. Code points are kept as IANA numbers, GREASE included."""

    record_version: int  # version in the record layer header
    legacy_version: int  # ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3)
    cipher_suites: list[int]
    extensions: list[int]  # in wire order
    supported_versions: list[int] = field(default_factory=list)
    server_name: str | None = None
    alpn: list[str] = field(default_factory=list)
    signature_algorithms: list[int] = field(default_factory=list)
    supported_groups: list[int] = field(default_factory=list)
    ec_point_formats: list[int] = field(default_factory=list)
    ja4: str = ""
    ja4_r: str = ""
    ja3: str = ""  # the JA3 string
    ja3_hash: str = ""  # md5 of the JA3 string
    over_quic: bool = False

    @property
    def max_version(self) -> int:
        """Highest version offered (supported_versions wins over legacy_version), GREASE ignored."""
        real = [v for v in self.supported_versions if (v & 0x0F0F) != 0x0A0A]
        return max(real) if real else self.legacy_version


@dataclass(slots=True)
class ServerHello:
    legacy_version: int
    cipher_suite: int
    extensions: list[int] = field(default_factory=list)
    selected_version: int | None = None  # from supported_versions (TLS 1.3)
    alpn: str | None = None

    @property
    def version(self) -> int:
        """The negotiated protocol version."""
        return self.selected_version or self.legacy_version


@dataclass(slots=True)
class Certificate:
    """One X.509 certificate as the server sent it (visible in TLS <= 1.2 handshakes)."""

    subject: str  # RFC 4514 string
    issuer: str
    subject_cn: str | None
    sans: list[str]  # DNS names and IP addresses
    not_before: float  # epoch seconds, UTC
    not_after: float
    serial: str  # hex
    key_type: str  # "RSA", "EC", "DSA", "Ed25519", ...
    key_bits: int
    signature_algorithm: str  # e.g. "sha256WithRSAEncryption"
    signature_hash: str | None  # "sha256", "sha1", "md5", None for EdDSA
    self_signed: bool
    sha256: str  # fingerprint of the DER, hex
    parse_error: str | None = None


@dataclass(slots=True, kw_only=True)
class TLSHandshake(Observation):
    """What was seen of one TLS handshake: either side may be missing."""

    client: ClientHello | None = None
    server: ServerHello | None = None
    certificates: list[Certificate] = field(default_factory=list)  # leaf first
    alert: str | None = None  # description of a fatal alert, if one was seen
    failure: str | None = None  # why the handshake did not complete (proxy: upstream error)


# --- DNS -------------------------------------------------------------------------------------


@dataclass(slots=True)
class DNSAnswer:
    name: str
    rtype: str  # "A", "AAAA", "CNAME", ...
    data: str
    ttl: int


@dataclass(slots=True, kw_only=True)
class DNSMessage(Observation):
    """A DNS query or response. ``flow`` is oriented client -> resolver."""

    query_name: str
    query_type: str
    transaction_id: int
    is_response: bool
    rcode: int | None = None
    answers: list[DNSAnswer] = field(default_factory=list)

    def resolved_addresses(self) -> list[tuple[str, str]]:
        """(address, queried name) for every A/AAAA answer, following CNAME chains by name."""
        return [(a.data, self.query_name) for a in self.answers if a.rtype in ("A", "AAAA")]


# --- HTTP ------------------------------------------------------------------------------------


@dataclass(slots=True)
class HTTPResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""  # decoded (content-encoding removed) prefix of the body
    body_truncated: bool = False
    ts: float | None = None

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


@dataclass(slots=True, kw_only=True)
class HTTPRequest(Observation):
    """An HTTP request. ``encrypted`` is False when it crossed the network in cleartext."""

    method: str
    host: str | None  # Host header (or :authority), without port
    path: str  # path and query as sent
    http_version: str  # "HTTP/1.1", "HTTP/2.0"
    headers: list[tuple[str, str]]
    body: bytes = b""  # decoded (content-encoding removed) prefix of the body
    body_truncated: bool = False  # the body was longer than what was kept
    body_error: str | None = None  # e.g. "gzip: invalid data"; body then holds the raw bytes
    encrypted: bool = False
    response: HTTPResponse | None = None

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """First value of a header, case-insensitively; None when absent."""
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


# --- LLM API calls ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class LLMCall(Observation):
    """An HTTP request recognised as a call to an LLM API (see ``auditor.llm``)."""

    api: str  # API shape id from signatures/api_shapes.yaml, e.g. "openai.chat_completions"
    family: str  # "openai" | "anthropic" | "gemini" | "ollama"
    request: HTTPRequest
    model_requested: str | None = None
    model_served: str | None = None
    stream: bool = False
    prompt_text: str = ""  # concatenated user/system text, bounded; never logged unredacted
    prompt_chars: int = 0
    credential_header: str | None = None  # header (or query parameter) carrying the API key
    credential: str | None = None  # the raw key; detectors mask it before it reaches evidence
    body_unreadable: str | None = None  # why the body could not be read as JSON, if it could not
    response_id: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


# --- Connections -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Connection(Observation):
    """The summary of one flow, emitted when it ends (or when the source finishes).

    It refers to the TLS handshake, HTTP requests and DNS messages already emitted on its own
    flow so that outputs can write one record per connection.
    """

    first_seen: float
    last_seen: float
    packets_out: int = 0  # client -> server
    packets_in: int = 0
    bytes_out: int = 0  # IP payload bytes client -> server
    bytes_in: int = 0
    tls: TLSHandshake | None = None
    http: list[HTTPRequest] = field(default_factory=list)
    dns: list[DNSMessage] = field(default_factory=list)
    app_protocol: str | None = None  # "tls", "http", "dns", "quic", or None when unknown
    client_direction_guessed: bool = False  # no SYN seen: orientation guessed from ports


# --- Findings --------------------------------------------------------------------------------


@dataclass(slots=True)
class Finding:
    """One thing a security engineer should know about one destination host.

    ``key`` identifies "the same finding" across repeats (detector, host, evidence key); the
    pipeline merges repeats by counting them and moving ``last_seen``.
    """

    detector: str  # detector name, e.g. "weak-tls"
    kind: str  # what exactly, e.g. "weak-tls.protocol"
    severity: Severity
    host: str
    title: str  # one line for a person
    evidence: dict[str, Any]  # redacted facts; safe to write to any output
    first_seen: float
    last_seen: float
    evidence_key: str = ""  # distinguishes findings of one kind on one host
    dst_ip: str | None = None
    dst_port: int | None = None
    src_ip: str | None = None
    count: int = 1

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.detector, self.kind, self.host, self.evidence_key)

    def merge(self, other: Finding) -> None:
        """Fold a repeat of this finding into it."""
        self.count += other.count
        # Comparisons rather than min()/max(): the pipeline merges every repeat.
        if other.first_seen < self.first_seen:
            self.first_seen = other.first_seen
        if other.last_seen > self.last_seen:
            self.last_seen = other.last_seen
        if other.severity > self.severity:
            self.severity = other.severity
            self.title = other.title
            self.evidence = other.evidence

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "kind": self.kind,
            "severity": self.severity.label,
            "host": self.host,
            "title": self.title,
            "evidence": self.evidence,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "count": self.count,
            "dst_ip": self.dst_ip,
            "dst_port": self.dst_port,
            "src_ip": self.src_ip,
        }


def finding_for(
    obs: Observation,
    *,
    detector: str,
    kind: str,
    severity: Severity,
    title: str,
    evidence: dict[str, Any],
    evidence_key: str = "",
) -> Finding:
    """A finding about ``obs``'s destination, timed at the observation."""
    return Finding(
        detector=detector,
        kind=kind,
        severity=severity,
        host=obs.host,
        title=title,
        evidence=evidence,
        first_seen=obs.ts,
        last_seen=obs.ts,
        evidence_key=evidence_key,
        dst_ip=obs.flow.dst_ip,
        dst_port=obs.flow.dst_port,
        src_ip=obs.flow.src_ip,
    )
