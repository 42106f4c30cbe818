"""Loading and querying the signature data in ``signatures/``.

Signatures are data, never code: every domain, API shape, key format and TLS weakness the
detectors use is an entry in a YAML file under ``signatures/`` that carries its public source.
``signatures/schema/*.json`` holds a JSON Schema per file; ``validate_signatures`` checks them.

Files (each a mapping with ``version`` and ``entries``):
  providers.yaml          official AI endpoints: operator, jurisdiction, API shapes
  relays.yaml             relay / reseller / aggregator domains, category, confidence
  api_shapes.yaml         how an LLM API request looks (method, path pattern, body keys, key header)
  tls_versions.yaml       protocol versions by code, with weakness and severity
  tls_cipher_suites.yaml  IANA cipher suites by code, with weakness and severity
  key_formats.yaml        API-key formats (regex) per provider
  anycast.yaml            published anycast / CDN address ranges (GeoIP country says little there)
  relay_fingerprints.yaml what relay software gives away in responses and requests (passive)
  response_shapes.yaml    what an official provider's reply always looks like (id, headers, usage)
  sensitive_data.yaml     secrets and personal data to find in prompts (regex + validator name)
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from auditor.yaml_files import YAMLSyntaxError, load_yaml

SIGNATURES_DIR_ENV = "AUDITOR_SIGNATURES"


def default_signatures_dir() -> Path:
    """``signatures/`` of the source tree, or the copy installed beside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "signatures", here / "_signatures"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("signatures/ directory not found next to the auditor package")


@functools.cache
def compiled(regex: str) -> re.Pattern[str]:
    """The compiled pattern of a signature regex (one dict lookup per use, not re's cache)."""
    return re.compile(regex)


class SignatureError(ValueError):
    """A signature file is missing, unreadable or does not match its schema."""


@dataclass(frozen=True, slots=True)
class DomainRule:
    """How an entry matches a host name: exact, suffix (the name or any subdomain), or regex."""

    domain: str
    match: str  # "exact" | "suffix" | "regex"
    regex: str | None = None

    def matches(self, host: str) -> bool:
        host = normalise_host(host)
        if self.match == "exact":
            return host == self.domain
        if self.match == "suffix":
            return host == self.domain or host.endswith("." + self.domain)
        if self.match == "regex" and self.regex:
            return compiled(self.regex).search(host) is not None
        return False


@dataclass(frozen=True, slots=True)
class ProviderEndpoint:
    """An official endpoint of an AI provider."""

    rule: DomainRule
    provider: str  # short id, e.g. "openai", "anthropic", "deepseek"
    name: str  # display name, e.g. "OpenAI"
    operator: str  # the company operating the service
    jurisdiction: str  # ISO 3166 alpha-2 of the operator's data jurisdiction, or "unknown"
    kind: str  # "api" | "web" | "cloud" | "auth"
    api_shapes: tuple[str, ...]  # API families served officially here: "openai", "anthropic", ...
    source: str
    jurisdiction_basis: str = ""
    region_scoped: bool = False  # cloud endpoints whose region the tenant chooses

    @property
    def domain(self) -> str:
        return self.rule.domain


@dataclass(frozen=True, slots=True)
class RelayDomain:
    """A known relay / reseller / aggregator domain."""

    rule: DomainRule
    category: str  # relay_reseller | relay_charity | relay_candidate | aggregator | ...
    confidence: str  # "confirmed" | "suspected"
    operator: str
    source: str
    platform: str | None = None  # relay software, when known (new-api, one-api, sub2api, ...)
    notes: str = ""

    @property
    def domain(self) -> str:
        return self.rule.domain


@dataclass(frozen=True, slots=True)
class ApiShape:
    """What a request of one LLM API looks like on the wire."""

    id: str  # e.g. "openai.chat_completions"
    family: str  # "openai" | "anthropic" | "gemini" | "ollama"
    method: str
    path_regex: str  # matched against the path without query string
    body_keys: tuple[str, ...]  # top-level JSON keys that must all be present
    credential_headers: tuple[str, ...]  # headers that carry the key (lower-case)
    credential_query: tuple[str, ...]  # query parameters that carry the key
    source: str
    streaming_key: str | None = None  # body key that asks for a stream, e.g. "stream"

    @property
    def path_pattern(self) -> re.Pattern[str]:
        # A plain property: cached_property needs a __dict__, which slots=True removes.
        return compiled(self.path_regex)


@dataclass(frozen=True, slots=True)
class TLSVersion:
    code: int
    name: str  # "TLS 1.2", "SSL 3.0"
    protocol: str  # ECS tls.version_protocol: "tls" | "ssl"
    version: str  # ECS tls.version: "1.2", "3.0"
    weak: bool
    severity: str | None  # severity of negotiating it, None when fine
    source: str


@dataclass(frozen=True, slots=True)
class CipherSuite:
    code: int
    name: str  # IANA name, e.g. "TLS_RSA_WITH_RC4_128_SHA"
    weaknesses: tuple[str, ...]  # "null", "anon", "export", "rc4", "des", "3des", "md5", "cbc-sha1"
    severity: str | None  # severity of negotiating it, None when fine


@dataclass(frozen=True, slots=True)
class KeyFormat:
    id: str
    provider: str  # provider id as in providers.yaml ("openai"), or a label for non-AI keys
    regex: str
    keywords: tuple[str, ...]
    source: str

    @property
    def pattern(self) -> re.Pattern[str]:
        return compiled(self.regex)  # see ApiShape.path_pattern


@dataclass(frozen=True, slots=True)
class RelayFingerprint:
    """One passive sign of relay software (relay_fingerprints.yaml); fields a kind does not use
    are empty."""

    id: str
    software: tuple[str, ...]  # "one-api", "new-api", ..., or "generic"
    kind: str  # "response_header_present", "error_json", "html", ... (see the YAML header)
    weight: str  # "strong" | "medium" | "weak"
    source: str
    name: str | None = None  # header name
    name_prefix: str | None = None
    value_regex: str | None = None
    json_path: str | None = None
    equals: tuple[str, ...] = ()
    regex: str | None = None
    message_regex: str | None = None
    values: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True, slots=True)
class ResponseShape:
    """One thing an official provider's reply always has (response_shapes.yaml)."""

    id: str
    provider: str
    apis: tuple[str, ...]  # API shape ids it applies to
    model_regex: str
    check: str  # "response_id" | "response_headers" | "usage_keys"
    source: str
    regex: str | None = None
    headers: tuple[str, ...] = ()  # lower-case
    keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SensitiveDataPattern:
    """A secret or personal-data shape to find in prompts (sensitive_data.yaml)."""

    id: str
    category: str  # "secret" | "pii"
    regex: str
    validator: str  # "luhn" | "iban" | "cn_resident_id" | "us_ssn" | "none"
    severity: str
    source: str
    # Literal substrings one of which every match contains (case-insensitive): a cheap
    # pre-filter, as key_formats.yaml's keywords; empty means the regex always runs.
    keywords: tuple[str, ...] = ()

    @property
    def pattern(self) -> re.Pattern[str]:
        return compiled(self.regex)  # see ApiShape.path_pattern


@dataclass(frozen=True, slots=True)
class AnycastNetwork:
    """An address range announced from many places (anycast / CDN): its country says little."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    operator: str  # e.g. "Cloudflare"
    source: str


def normalise_host(host: str) -> str:
    """Lower-case, no trailing dot, no port, no IPv6 brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host


@dataclass(eq=False)  # identity: a loaded set is a cache key, never compared by value
class Signatures:
    providers: list[ProviderEndpoint] = field(default_factory=list)
    relays: list[RelayDomain] = field(default_factory=list)
    api_shapes: list[ApiShape] = field(default_factory=list)
    tls_versions: dict[int, TLSVersion] = field(default_factory=dict)
    cipher_suites: dict[int, CipherSuite] = field(default_factory=dict)
    key_formats: list[KeyFormat] = field(default_factory=list)
    anycast_networks: list[AnycastNetwork] = field(default_factory=list)
    relay_fingerprints: list[RelayFingerprint] = field(default_factory=list)
    response_shapes: list[ResponseShape] = field(default_factory=list)
    sensitive_data: list[SensitiveDataPattern] = field(default_factory=list)
    directory: Path | None = None

    # -- lookups used by detectors --------------------------------------------------------

    def provider_for_host(self, host: str | None) -> ProviderEndpoint | None:
        """The official endpoint this host belongs to (most specific rule wins)."""
        if not host:
            return None
        return self._provider_index.lookup(host)

    def relay_for_host(self, host: str | None) -> RelayDomain | None:
        """The relay entry this host falls under (suffix match: api.x.relay.tld -> relay.tld)."""
        if not host:
            return None
        return self._relay_index.lookup(host)

    # Built on first use: the lists may still be appended to while loading.
    @functools.cached_property
    def _provider_index(self) -> DomainIndex[ProviderEndpoint]:
        return DomainIndex(self.providers)

    @functools.cached_property
    def _relay_index(self) -> DomainIndex[RelayDomain]:
        return DomainIndex(self.relays)

    def cipher_name(self, code: int) -> str:
        suite = self.cipher_suites.get(code)
        return suite.name if suite else f"0x{code:04X}"

    def version_info(self, code: int) -> TLSVersion | None:
        return self.tls_versions.get(code)

    def version_name(self, code: int) -> str:
        info = self.tls_versions.get(code)
        return info.name if info else f"0x{code:04X}"


T = TypeVar("T", ProviderEndpoint, RelayDomain)


_KIND_RANK = {"exact": 2, "regex": 1, "suffix": 0}


def _most_specific(host: str, entries: Iterable[T]) -> T | None:
    """The matching entry with the most specific rule: exact, then regex, then the longest
    suffix. Ties keep the earlier entry."""
    best: T | None = None
    best_rank = (-1, -1)
    for entry in entries:
        if entry.rule.matches(host):
            rank = (_KIND_RANK[entry.rule.match], len(entry.rule.domain))
            if rank > best_rank:
                best, best_rank = entry, rank
    return best


class DomainIndex(Generic[T]):
    """Host -> most specific entry, without scanning every rule: exact and suffix rules are
    looked up by the host and each of its parent domains; only regex rules are scanned.
    Not cached here: the detectors remember what a name is
    (``auditor.detectors.destination_names.identify``)."""

    def __init__(self, entries: Iterable[T]) -> None:
        self._by_domain: dict[str, list[T]] = {}
        self._regex: list[T] = []
        for entry in entries:
            if entry.rule.match == "regex":
                self._regex.append(entry)
            else:
                self._by_domain.setdefault(entry.rule.domain, []).append(entry)

    def lookup(self, host: str) -> T | None:
        host = normalise_host(host)
        candidates: list[T] = []
        labels = host.split(".")
        for start in range(len(labels)):
            candidates.extend(self._by_domain.get(".".join(labels[start:]), ()))
        candidates.extend(self._regex)
        # Keep the file order among candidates so ties resolve as a full scan would.
        return _most_specific(host, candidates)


# -- loading ----------------------------------------------------------------------------------

SIGNATURE_FILES = (
    "providers.yaml",
    "relays.yaml",
    "api_shapes.yaml",
    "tls_versions.yaml",
    "tls_cipher_suites.yaml",
    "key_formats.yaml",
    "anycast.yaml",
    "relay_fingerprints.yaml",
    "response_shapes.yaml",
    "sensitive_data.yaml",
)


def _read(directory: Path, name: str) -> list[dict[str, Any]]:
    path = directory / name
    try:
        document = load_yaml(path)
    except FileNotFoundError:
        raise SignatureError(f"{path}: signature file missing") from None
    except YAMLSyntaxError as exc:
        raise SignatureError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise SignatureError(f"{path}: expected a mapping with an 'entries' list")
    return document["entries"]


def validate_signatures(directory: Path | None = None) -> list[str]:
    """Every schema violation in the signature files, as 'file: entry N: problem' lines."""
    import jsonschema

    directory = directory or default_signatures_dir()
    problems: list[str] = []
    for name in SIGNATURE_FILES:
        schema_path = directory / "schema" / (Path(name).stem + ".schema.json")
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
            document = load_yaml(directory / name)
        except (OSError, ValueError) as exc:  # ValueError: YAMLSyntaxError, not UTF-8, bad JSON
            problems.append(f"{name}: {exc}")
            continue
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.path) or "(top)"
            problems.append(f"{name}: {where}: {error.message}")
        for index, entry in enumerate((document or {}).get("entries") or []):
            for key in ("regex", "path_regex", "value_regex", "message_regex", "model_regex"):
                if isinstance(entry, dict) and entry.get(key):
                    try:
                        re.compile(entry[key])
                    except re.error as exc:
                        problems.append(f"{name}: entries/{index}/{key}: bad regex: {exc}")
    return problems


def _rule(entry: dict[str, Any]) -> DomainRule:
    return DomainRule(
        domain=normalise_host(entry["domain"]), match=entry["match"], regex=entry.get("regex")
    )


@functools.lru_cache(maxsize=8)
def load_signatures(directory: Path | None = None) -> Signatures:
    """Read every signature file. Raises ``SignatureError`` naming the file on any problem."""
    directory = directory or default_signatures_dir()
    # Checked first: a missing directory would read as its first file missing, a plain file
    # as a bare OSError.
    if not directory.is_dir():
        raise SignatureError(f"{directory}: no such directory")
    try:
        sigs = Signatures(directory=directory)
        for e in _read(directory, "providers.yaml"):
            sigs.providers.append(
                ProviderEndpoint(
                    rule=_rule(e),
                    provider=e["provider"],
                    name=e.get("name", e["provider"]),
                    operator=e["operator"],
                    jurisdiction=e.get("jurisdiction", "unknown"),
                    kind=e["kind"],
                    api_shapes=tuple(e.get("api_shapes", ())),
                    source=e["source"],
                    jurisdiction_basis=e.get("jurisdiction_basis", ""),
                    region_scoped=bool(e.get("region_scoped", False)),
                )
            )
        for e in _read(directory, "relays.yaml"):
            sigs.relays.append(
                RelayDomain(
                    rule=_rule(e),
                    category=e["category"],
                    confidence=e["confidence"],
                    operator=e.get("operator", ""),
                    source=e["source"],
                    platform=e.get("platform"),
                    notes=e.get("notes", ""),
                )
            )
        for e in _read(directory, "api_shapes.yaml"):
            sigs.api_shapes.append(
                ApiShape(
                    id=e["id"],
                    family=e["family"],
                    method=e["method"].upper(),
                    path_regex=e["path_regex"],
                    body_keys=tuple(e.get("body_keys", ())),
                    credential_headers=tuple(h.lower() for h in e.get("credential_headers", ())),
                    credential_query=tuple(e.get("credential_query", ())),
                    source=e["source"],
                    streaming_key=e.get("streaming_key"),
                )
            )
        for e in _read(directory, "tls_versions.yaml"):
            code = int(e["code"], 0) if isinstance(e["code"], str) else int(e["code"])
            sigs.tls_versions[code] = TLSVersion(
                code=code,
                name=e["name"],
                protocol=e["protocol"],
                version=e["version"],
                weak=bool(e["weak"]),
                severity=e.get("severity"),
                source=e["source"],
            )
        for e in _read(directory, "tls_cipher_suites.yaml"):
            code = int(e["code"], 0) if isinstance(e["code"], str) else int(e["code"])
            sigs.cipher_suites[code] = CipherSuite(
                code=code,
                name=e["name"],
                weaknesses=tuple(e.get("weaknesses", ())),
                severity=e.get("severity"),
            )
        for e in _read(directory, "key_formats.yaml"):
            sigs.key_formats.append(
                KeyFormat(
                    id=e["id"],
                    provider=e["provider"],
                    regex=e["regex"],
                    keywords=tuple(e.get("keywords", ())),
                    source=e["source"],
                )
            )
        # anycast.yaml came later: a signatures directory without it still loads
        if (directory / "anycast.yaml").is_file():
            for e in _read(directory, "anycast.yaml"):
                try:
                    network = ipaddress.ip_network(str(e["network"]), strict=False)
                except ValueError as exc:
                    raise SignatureError(f"{directory / 'anycast.yaml'}: {exc}") from None
                sigs.anycast_networks.append(
                    AnycastNetwork(network=network, operator=e["operator"], source=e["source"])
                )
        _load_passive_fingerprints(directory, sigs)
    except KeyError as exc:
        raise SignatureError(f"{directory}: an entry lacks the required field {exc}") from None
    return sigs


def _load_passive_fingerprints(directory: Path, sigs: Signatures) -> None:
    """relay_fingerprints, response_shapes and sensitive_data: optional like anycast.yaml, so
    an older signatures directory without them still loads (their detectors then find nothing)."""
    if (directory / "relay_fingerprints.yaml").is_file():
        for e in _read(directory, "relay_fingerprints.yaml"):
            sigs.relay_fingerprints.append(
                RelayFingerprint(
                    id=e["id"],
                    software=tuple(e["software"]),
                    kind=e["kind"],
                    weight=e["weight"],
                    source=e["source"],
                    name=e.get("name"),
                    name_prefix=e.get("name_prefix"),
                    value_regex=e.get("value_regex"),
                    json_path=e.get("json_path"),
                    equals=tuple(e.get("equals", ())),
                    regex=e.get("regex"),
                    message_regex=e.get("message_regex"),
                    values=tuple(e.get("values", ())),
                    notes=e.get("notes", ""),
                )
            )
    if (directory / "response_shapes.yaml").is_file():
        for e in _read(directory, "response_shapes.yaml"):
            sigs.response_shapes.append(
                ResponseShape(
                    id=e["id"],
                    provider=e["provider"],
                    apis=tuple(e["apis"]),
                    model_regex=e["model_regex"],
                    check=e["check"],
                    source=e["source"],
                    regex=e.get("regex"),
                    headers=tuple(h.lower() for h in e.get("headers", ())),
                    keys=tuple(e.get("keys", ())),
                )
            )
    if (directory / "sensitive_data.yaml").is_file():
        for e in _read(directory, "sensitive_data.yaml"):
            sigs.sensitive_data.append(
                SensitiveDataPattern(
                    id=e["id"],
                    category=e["category"],
                    regex=e["regex"],
                    validator=e["validator"],
                    severity=e["severity"],
                    source=e["source"],
                    keywords=tuple(e.get("keywords", ())),
                )
            )
