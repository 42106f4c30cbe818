"""The organisation's policy: what counts as a finding, and how severe.

A policy is a YAML file (``policies/default.yaml`` ships; ``--policy FILE`` replaces it). Every
field has a default here, documented where it is declared, so a policy file only says what
differs. Unknown keys are an error, so a typo does not silently weaken the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from auditor.model import Severity
from auditor.yaml_files import YAMLSyntaxError, load_yaml


class PolicyError(ValueError):
    """The policy file cannot be read or says something invalid."""


@dataclass
class Policy:
    # ISO 3166 alpha-2 of where the organisation's data is governed ("EU" for the whole EEA).
    home_jurisdiction: str = "US"
    # Destination countries (by GeoIP of the address) traffic may go to without a finding.
    # Empty = only the home jurisdiction.
    allowed_countries: set[str] = field(default_factory=set)
    # Operator jurisdictions (from signatures/providers.yaml) allowed without a finding.
    allowed_jurisdictions: set[str] = field(default_factory=set)
    # Provider ids (signatures/providers.yaml ``provider``) the organisation has approved.
    # Empty = every official provider is approved (the inventory still lists them).
    allowed_providers: set[str] = field(default_factory=set)
    # Lowest TLS version that is not a finding: TLS 1.2, as in NIST SP 800-52r2 and RFC 8996.
    min_tls_version: int = 0x0303
    # Smallest RSA/DSA key that is not a finding: 2048 bits (NIST SP 800-131A; Zeek weak-keys).
    min_rsa_bits: int = 2048
    # Write full prompts and keys into findings. Off: evidence is masked and shortened.
    reveal_evidence: bool = False
    # Characters of prompt text kept in evidence (after masking secrets in it).
    excerpt_chars: int = 80
    # Finding kind (e.g. "weak-tls.no-sni") -> severity, to raise or lower the defaults.
    severity_overrides: dict[str, Severity] = field(default_factory=dict)
    # Detector names to switch off entirely.
    disabled_detectors: set[str] = field(default_factory=set)
    # Hosts (exact or ".suffix") never reported: e.g. an internal model gateway.
    ignore_hosts: set[str] = field(default_factory=set)
    source: str = "built-in defaults"

    def severity_for(self, kind: str, default: Severity) -> Severity:
        return self.severity_overrides.get(kind, default)

    def is_ignored(self, host: str) -> bool:
        if not self.ignore_hosts:  # the usual case, asked for every finding
            return False
        host = host.lower()
        return any(
            host == h or (h.startswith(".") and (host.endswith(h) or host == h[1:]))
            for h in self.ignore_hosts
        )

    def country_allowed(self, country: str | None) -> bool:
        if not country:
            return True  # unknown location is reported separately, not as cross-border
        return self._place_allowed(country, self.allowed_countries)

    def jurisdiction_allowed(self, jurisdiction: str | None) -> bool:
        if not jurisdiction or jurisdiction == "unknown":
            return True
        return self._place_allowed(jurisdiction, self.allowed_jurisdictions)

    def _place_allowed(self, place: str, allowed: set[str]) -> bool:
        """``place`` (a country or jurisdiction code) is home, in ``allowed``, or in the EEA when
        home is the EU; case-insensitively. Read from the fields at each call (the policy is
        mutable), without building sets: asked for every AI destination."""
        code, home = place.upper(), self.home_jurisdiction.upper()
        return (
            code == home
            or any(entry.upper() == code for entry in allowed)
            or (home == "EU" and code in EEA_COUNTRIES)
        )

    def provider_allowed(self, provider: str) -> bool:
        return not self.allowed_providers or provider in self.allowed_providers


# EEA member states: a home jurisdiction of "EU" allows all of them (GDPR applies across the EEA).
EEA_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
        "EU",
    ]
)

_SET_FIELDS = {
    "allowed_countries",
    "allowed_jurisdictions",
    "allowed_providers",
    "disabled_detectors",
    "ignore_hosts",
}


def default_policy_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (
        here.parent / "policies" / "default.yaml",
        here / "_policies" / "default.yaml",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("policies/default.yaml not found next to the auditor package")


def policy_from_mapping(data: dict[str, Any], source: str) -> Policy:
    known = {f.name for f in fields(Policy)} - {"source"}
    unknown = set(data) - known
    if unknown:
        raise PolicyError(f"{source}: unknown policy keys: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {"source": source}
    for key, value in data.items():
        if value is None:
            continue
        if key in _SET_FIELDS:
            if not isinstance(value, list):
                raise PolicyError(f"{source}: {key} must be a list")
            kwargs[key] = {str(v) for v in value}
        elif key == "severity_overrides":
            try:
                kwargs[key] = {str(k): Severity.parse(v) for k, v in dict(value).items()}
            except ValueError as exc:
                raise PolicyError(f"{source}: severity_overrides: {exc}") from None
        elif key == "min_tls_version":
            kwargs[key] = _tls_version_code(value, source)
        elif key in ("min_rsa_bits", "excerpt_chars"):
            kwargs[key] = int(value)
        elif key == "reveal_evidence":
            kwargs[key] = bool(value)
        else:
            kwargs[key] = str(value)
    return Policy(**kwargs)


_VERSION_NAMES = {
    "ssl3": 0x0300,
    "tls1.0": 0x0301,
    "tls1.1": 0x0302,
    "tls1.2": 0x0303,
    "tls1.3": 0x0304,
}


def _tls_version_code(value: Any, source: str) -> int:
    if isinstance(value, int):
        return value
    text = str(value).lower().replace(" ", "").replace("_", ".")
    if text in _VERSION_NAMES:
        return _VERSION_NAMES[text]
    try:
        return int(text, 0)
    except ValueError:
        raise PolicyError(
            f"{source}: min_tls_version {value!r}: use one of {', '.join(_VERSION_NAMES)}"
        ) from None


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in ``path``, or the shipped default policy."""
    path = Path(path) if path else default_policy_path()
    try:
        data = load_yaml(path) or {}
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc.strerror}") from None
    except YAMLSyntaxError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy is a mapping of settings")
    return policy_from_mapping(data, str(path))
